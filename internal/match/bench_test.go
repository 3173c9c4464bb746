package match

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/gpumarket/gpumarket/internal/market"
)

const benchQuery = "gpu_name=RTX_4090 num_gpus>=2 gpu_ram>=24 price_per_gpu_hour<0.8 reliability>0.95 region in [eu,us] verified=true"

type benchData struct {
	ix    *Index
	ms    []market.Machine
	facts []Facts
}

var benchCache = map[int]*benchData{}

func benchSet(n int) *benchData {
	if d, ok := benchCache[n]; ok {
		return d
	}
	clear(benchCache) // hold one size at a time
	r := rand.New(rand.NewSource(int64(n)))
	d := &benchData{ix: NewIndex(), ms: make([]market.Machine, n), facts: make([]Facts, n)}
	for i := range n {
		m, f := randMachine(r, i, 1+r.Intn(8))
		d.ix.SetFacts(m.ID, f)
		d.ix.Upsert(m)
		d.ms[i], d.facts[i] = m, f
	}
	benchCache[n] = d
	return d
}

// BenchmarkSearch is one filtered, ranked top-10 query: with the index,
// with its group pruning off (a columnar scan of every row), and as a plain
// scan of []market.Machine with Query.Match.
func BenchmarkSearch(b *testing.B) {
	q, err := Parse(benchQuery)
	if err != nil {
		b.Fatal(err)
	}
	s := Sort{Region: "eu-west"}
	for _, n := range []int{100_000, 1_000_000} {
		d := benchSet(n)
		for _, mode := range []string{"index", "noindex", "scan"} {
			b.Run(fmt.Sprintf("%s/%dk", mode, n/1000), func(b *testing.B) {
				d.ix.noPrune = mode == "noindex"
				defer func() { d.ix.noPrune = false }()
				var got int
				for b.Loop() {
					if mode == "scan" {
						top := topK{s: &s, k: 10}
						for i, m := range d.ms {
							if Available(m) && q.Match(m, d.facts[i]) {
								e := &entry{m: m}
								top.add(cand{score: bruteScore(d.ix.rank, m, d.facts[i], s.Region), price: int64(m.PricePerGPUHour), e: e})
							}
						}
						got = len(top.sorted())
						continue
					}
					got = len(d.ix.Search(q, s, 10))
				}
				if got != 10 {
					b.Fatalf("got %d offers, want 10", got)
				}
			})
		}
	}
}

// BenchmarkPlacementBurst places 1,000 one-GPU requests on 10,000 machines
// of 8 GPUs (4 models, 10 regions): filter, rank, reserve, update.
func BenchmarkPlacementBurst(b *testing.B) {
	q, err := Parse("gpu_name=A100_SXM4_80GB gpu_ram>=40GB region in [eu,us] price_per_gpu_hour<=1.5 reliability>=0.9")
	if err != nil {
		b.Fatal(err)
	}
	reserve := func(market.Machine, []int) error { return nil }
	placed := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := rand.New(rand.NewSource(int64(i)))
		ix := NewIndex()
		for j := range 10_000 {
			m, f := randMachine(r, j, 8)
			m.Online, m.Listed, m.UsedGPUs = true, true, nil
			ix.SetFacts(m.ID, f)
			ix.Upsert(m)
		}
		b.StartTimer()
		for range 1000 {
			if _, _, err := ix.Place(q, Sort{Region: "eu-west"}, 1, reserve); err != nil {
				b.Fatal(err)
			}
			placed++
		}
	}
	b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/s")
}
