package match

import (
	"cmp"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/gpumarket/gpumarket/internal/market"
)

var (
	testModels = []struct {
		name string
		mib  int64
	}{{"NVIDIA GeForce RTX 4090", 24564}, {"NVIDIA A100-SXM4-80GB", 81920}, {"NVIDIA H100 80GB HBM3", 81559}, {"NVIDIA L40S", 46068}}
	testRegions = []string{"eu-west", "eu-east", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south", "me-central", "oc-east"}
)

// randMachine makes machine i with random hardware, use and facts.
func randMachine(r *rand.Rand, i, gpus int) (market.Machine, Facts) {
	mod := testModels[r.Intn(len(testModels))]
	m := market.Machine{
		ID: market.MachineID(fmt.Sprintf("m-%07d", i)), Online: r.Intn(20) != 0, Listed: r.Intn(20) != 0,
		PricePerGPUHour: market.Money(100_000 + r.Int63n(2_000_000)),
		Hardware: market.Hardware{
			CPUCores: 8 << r.Intn(4), RAMMiB: int64(64_000 << r.Intn(3)), DiskGiB: int64(500 << r.Intn(3)),
			Region: testRegions[r.Intn(len(testRegions))], DataCenter: fmt.Sprintf("dc%d", r.Intn(5)),
			CUDAVersion: []string{"12.2", "12.4", "12.8", ""}[r.Intn(4)], DriverVersion: []string{"535.104.05", "550.54.15", "570.86.10"}[r.Intn(3)],
			Runner: []string{"docker", "process"}[r.Intn(2)],
		},
	}
	if gpus == 0 {
		gpus = 1 + r.Intn(10)
	}
	for g := range gpus {
		m.GPUs = append(m.GPUs, market.GPU{Index: g, Model: mod.name, VRAMMiB: mod.mib})
	}
	for g := range gpus {
		if r.Intn(3) == 0 {
			m.UsedGPUs = append(m.UsedGPUs, g)
		}
	}
	for g := range m.GPUs {
		m.GPUs[g].PCIeGen, m.GPUs[g].PCIeWidth = 3+r.Intn(3), 8<<r.Intn(2)
	}
	m.Spot.ReservePerGPUDay = market.Money(r.Int63n(1_000_000))
	fs := Facts{ReliabilityPPM: 800_000 + r.Int63n(200_001), Verified: r.Intn(4) != 0, PerfScoreMilli: r.Int63n(200_000),
		BondPerGPU: market.Money(r.Int63n(20_000_000))}
	return m, fs
}

func randQuery(r *rand.Rand) string {
	pick := func(ss ...string) string { return ss[r.Intn(len(ss))] }
	var parts []string
	for range r.Intn(5) {
		parts = append(parts, pick(
			"gpu_name="+pick("RTX_4090", "A100_SXM4_80GB", "h100-80gb-hbm3", "L40S", "V100"),
			"gpu_name in ["+pick("rtx4090", "l40s")+","+pick("A100-SXM4-80GB", "v100")+"]",
			"gpu_name!=L40S",
			fmt.Sprintf("num_gpus%s%d", pick(">=", ">", "=", "<", "<=", "!="), r.Intn(11)),
			fmt.Sprintf("num_gpus in [%d,%d]", r.Intn(10), 9+r.Intn(3)),
			fmt.Sprintf("gpu_ram>=%dGB", 20+r.Intn(70)),
			fmt.Sprintf("total_gpu_ram%s%d", pick(">=", "<"), r.Intn(400)),
			fmt.Sprintf("price_per_gpu_hour%s%d.%d", pick("<", "<=", ">"), r.Intn(2), r.Intn(10)),
			fmt.Sprintf("total_price_per_hour<%d", r.Intn(10)),
			fmt.Sprintf("reliability>=0.%d", 80+r.Intn(20)),
			"verified="+pick("true", "false"),
			"region "+pick("in", "notin")+" ["+pick("eu", "us", "ap-south")+","+pick("sa", "oc-east", "xx")+"]",
			"region="+pick("eu", "us-west", "nowhere"),
			"datacenter!=dc1", "runner="+pick("docker", "process"),
			"cuda_version>="+pick("12", "12.4", "12.8"),
			fmt.Sprintf("perf_score>%d", r.Intn(200)),
			fmt.Sprintf("spot_reserve<0.%d", r.Intn(10)),
			fmt.Sprintf("pcie_bandwidth>=%d", 8+r.Intn(60)),
			fmt.Sprintf("bond_per_gpu>=%d", r.Intn(20)),
			fmt.Sprintf("cpu_cores>=%d ram>=%dG disk<%dGiB", 8<<r.Intn(4), 64<<r.Intn(3), 500<<r.Intn(4)),
		))
	}
	return strings.Join(parts, " ")
}

// bruteScore restates the ranking formula independently of the index.
func bruteScore(rk Ranking, m market.Machine, f Facts, region string) float64 {
	price := float64(m.PricePerGPUHour)
	sc := rk.PriceWeight / (1 + price/float64(max(rk.PriceRef, 1)))
	sc += rk.ReliabilityWeight * float64(f.ReliabilityPPM) / 1e6
	if perf := float64(f.PerfScoreMilli) / 1000; perf > 0 {
		sc += rk.PerfWeight * perf / (perf + max(rk.PerfRef, 1e-9))
	}
	if region != "" && rk.LatencyWeight != 0 {
		sc += rk.LatencyWeight * (1 / (1 + float64(rk.Latency.Lookup(region, m.Region))/float64(max(rk.LatencyRef, 1))))
	}
	if bond := float64(f.BondPerGPU); bond > 0 {
		sc += rk.BondWeight * bond / (bond + float64(max(rk.BondRef, 1)))
	}
	return sc
}

// bruteSearch is the reference: a plain scan with Query.Match and a full sort.
func bruteSearch(ms map[market.MachineID]market.Machine, facts map[market.MachineID]Facts, rk Ranking, q Query, s Sort, limit int) []market.MachineID {
	type res struct {
		m     market.Machine
		key   int64
		score float64
	}
	var rs []res
	for _, m := range ms {
		if Available(m) && q.Match(m, facts[m.ID]) {
			rs = append(rs, res{m, rowOf(m, facts[m.ID]).num[s.Field], bruteScore(rk, m, facts[m.ID], s.Region)})
		}
	}
	slices.SortFunc(rs, func(a, b res) int {
		if s.ByField && a.key != b.key {
			if s.Desc {
				return -cmp.Compare(a.key, b.key)
			}
			return cmp.Compare(a.key, b.key)
		}
		return cmp.Or(-cmp.Compare(a.score, b.score), cmp.Compare(a.m.PricePerGPUHour, b.m.PricePerGPUHour), cmp.Compare(a.m.ID, b.m.ID))
	})
	var ids []market.MachineID
	for i, r := range rs {
		if limit > 0 && i == limit {
			break
		}
		ids = append(ids, r.m.ID)
	}
	return ids
}

func offerIDs(os []market.Offer) []market.MachineID {
	var ids []market.MachineID
	for _, o := range os {
		ids = append(ids, o.Machine)
	}
	return ids
}

func testRanking() Ranking {
	rk := DefaultRanking()
	rk.Latency.Pairs = map[[2]string]time.Duration{{"eu", "us"}: 90 * time.Millisecond, {"eu-west", "eu-east"}: 30 * time.Millisecond}
	return rk
}

// TestIndexMatchesBruteForce checks the index against a plain scan on
// random machines, queries, sorts and updates.
func TestIndexMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	ix := NewIndex()
	rk := testRanking()
	ix.SetRanking(rk)
	ms := map[market.MachineID]market.Machine{}
	facts := map[market.MachineID]Facts{}
	sorts := []string{"", "price", "-reliability", "num_gpus", "-total_price_per_hour", "cuda_version"}
	for round := range 40 {
		for range 60 {
			i := r.Intn(400)
			switch r.Intn(6) {
			case 0:
				id := market.MachineID(fmt.Sprintf("m-%07d", i))
				ix.Remove(id)
				delete(ms, id)
				delete(facts, id)
			case 1:
				m, f := randMachine(r, i, 0)
				ix.SetFacts(m.ID, f)
				facts[m.ID] = f
			default:
				m, f := randMachine(r, i, 0)
				ix.Upsert(m)
				ms[m.ID] = m
				if _, ok := facts[m.ID]; !ok || r.Intn(2) == 0 {
					ix.SetFacts(m.ID, f)
					facts[m.ID] = f
				}
			}
		}
		for range 25 {
			qs := randQuery(r)
			q, err := Parse(qs)
			if err != nil {
				t.Fatalf("Parse(%q): %v", qs, err)
			}
			s, err := ParseSort(sorts[r.Intn(len(sorts))])
			if err != nil {
				t.Fatal(err)
			}
			s.Region = []string{"", "eu-west", "us-east"}[r.Intn(3)]
			limit := []int{0, 1, 10}[r.Intn(3)]
			want := bruteSearch(ms, facts, rk, q, s, limit)
			for _, noPrune := range []bool{false, true} {
				ix.noPrune = noPrune
				got := offerIDs(ix.Search(q, s, limit))
				if diff := gocmp.Diff(want, got); diff != "" {
					t.Fatalf("round %d, query %q, sort %+v, limit %d, noPrune %v: index vs scan (-want +got):\n%s", round, qs, s, limit, noPrune, diff)
				}
			}
			ix.noPrune = false
			x := ix.Explain(q, s, 3)
			if x.Matched != len(bruteSearch(ms, facts, rk, q, s, 0)) {
				t.Fatalf("query %q: Explain matched %d, search %d", qs, x.Matched, len(want))
			}
		}
	}
}

func TestIndexSearchOrderAndUpdates(t *testing.T) {
	ix := NewIndex()
	a := machine("m-a", 2, "NVIDIA GeForce RTX 4090", 500_000)
	b := machine("m-b", 4, "NVIDIA GeForce RTX 4090", 500_000)
	c := machine("m-c", 8, "NVIDIA H100 80GB HBM3", 2_000_000)
	for _, m := range []market.Machine{a, b, c} {
		ix.Upsert(m)
	}
	all := Query{}
	if diff := gocmp.Diff([]market.MachineID{"m-a", "m-b", "m-c"}, offerIDs(ix.Search(all, Sort{}, 0))); diff != "" {
		t.Errorf("by score, ties by price then ID (-want +got):\n%s", diff)
	}
	s, _ := ParseSort("-num_gpus")
	if diff := gocmp.Diff([]market.MachineID{"m-c", "m-b"}, offerIDs(ix.Search(all, s, 2))); diff != "" {
		t.Errorf("by -num_gpus (-want +got):\n%s", diff)
	}
	ix.SetFacts("m-b", Facts{ReliabilityPPM: 990_000})
	if got := offerIDs(ix.Search(all, Sort{}, 1)); !slices.Equal(got, []market.MachineID{"m-b"}) {
		t.Errorf("reliability should lift m-b to the top, got %v", got)
	}
	b.UsedGPUs = []int{0, 1, 2, 3}
	ix.Upsert(b) // fully rented
	a.Online = false
	ix.Upsert(a)
	ix.Remove("m-c")
	if got := offerIDs(ix.Search(all, Sort{}, 0)); got != nil {
		t.Errorf("offline, full and removed machines must not show up, got %v", got)
	}
	b.UsedGPUs = nil
	ix.Upsert(b)
	if got := offerIDs(ix.Search(all, Sort{}, 0)); !slices.Equal(got, []market.MachineID{"m-b"}) {
		t.Errorf("freed machine should be back with its facts, got %v", got)
	}
	if ix.Len() != 2 {
		t.Errorf("Len = %d, want 2", ix.Len())
	}
}

func TestLatencyRanking(t *testing.T) {
	rk := testRanking()
	for _, tc := range []struct {
		a, b string
		want time.Duration
	}{
		{"eu-west-1", "us-east", 90 * time.Millisecond},
		{"us", "EU", 90 * time.Millisecond},
		{"eu-east", "eu-west-2", 30 * time.Millisecond},
		{"ap", "ap", 0},
		{"ap", "sa", 150 * time.Millisecond},
		{"us-west", "us-east", 0},
	} {
		if got := rk.Latency.Lookup(tc.a, tc.b); got != tc.want {
			t.Errorf("Lookup(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	ix := NewIndex()
	ix.SetRanking(rk)
	eu := machine("m-eu", 1, "L40S", 1_000_000)
	eu.Region = "eu-west"
	us := machine("m-us", 1, "L40S", 1_000_000)
	us.Region = "us-east"
	ix.Upsert(eu)
	ix.Upsert(us)
	for region, want := range map[string]market.MachineID{"eu-east": "m-eu", "us-west": "m-us", "": "m-eu"} {
		if got := ix.Search(Query{}, Sort{Region: region}, 1); got[0].Machine != want {
			t.Errorf("renter in %q: best is %s, want %s", region, got[0].Machine, want)
		}
	}
}

func TestExplain(t *testing.T) {
	ix := NewIndex()
	for i, p := range []market.Money{500_000, 900_000, 1_500_000} {
		m := machine(fmt.Sprintf("m-%d", i), 2, "NVIDIA GeForce RTX 4090", p)
		m.Region = "eu-west"
		ix.Upsert(m)
		ix.SetFacts(m.ID, Facts{ReliabilityPPM: int64(900_000 + 40_000*i)})
	}
	off := machine("m-off", 2, "NVIDIA GeForce RTX 4090", 100_000)
	off.Online = false
	ix.Upsert(off)
	q, err := Parse("gpu_name=RTX_4090 region=eu price<1 reliability>0.95")
	if err != nil {
		t.Fatal(err)
	}
	x := ix.Explain(q, Sort{}, 2)
	want := Explanation{
		Machines: 4, Available: 3, EmptiedBy: 3,
		Steps: []Step{
			{"gpu_name=RTX_4090", 0, 0}, {"region=eu", 0, 0}, {"price<1", 1, 1}, {"reliability>0.95", 2, 2},
		},
		Near: []NearMiss{
			{Offer(machine("m-0", 2, "NVIDIA GeForce RTX 4090", 500_000)), []string{"reliability>0.95"}},
			{Offer(machine("m-1", 2, "NVIDIA GeForce RTX 4090", 900_000)), []string{"reliability>0.95"}},
		},
	}
	for i := range want.Near {
		want.Near[i].Offer.Region = "eu-west"
	}
	if diff := gocmp.Diff(want, x); diff != "" {
		t.Errorf("Explain (-want +got):\n%s", diff)
	}
	for _, s := range []string{"removed 2, 0 left (fails 2 on its own)", "no offers left after 'reliability>0.95'", "m-0  2 x NVIDIA GeForce RTX 4090 at 0.50/GPU-hour"} {
		if !strings.Contains(x.String(), s) {
			t.Errorf("Explain text lacks %q:\n%s", s, x)
		}
	}
	q, _ = Parse("gpu_name=RTX_4090")
	if x := ix.Explain(q, Sort{}, 2); x.Matched != 3 || x.EmptiedBy != -1 || x.Near != nil {
		t.Errorf("Explain of a match = %+v", x)
	}
}

func TestPlace(t *testing.T) {
	ix := NewIndex()
	a := machine("m-a", 2, "NVIDIA A100-SXM4-80GB", 500_000)
	b := machine("m-b", 2, "NVIDIA A100-SXM4-80GB", 600_000)
	ix.Upsert(a)
	ix.Upsert(b)
	q, _ := Parse("gpu_name=A100_SXM4_80GB")
	var calls []string
	reserve := func(m market.Machine, gpus []int) error {
		calls = append(calls, fmt.Sprint(m.ID, gpus))
		if m.ID == "m-a" && len(calls) == 1 {
			return market.Errorf("reserve", market.Conflict, "taken")
		}
		return nil
	}
	m, gpus, err := ix.Place(q, Sort{}, 2, reserve)
	if err != nil || m.ID != "m-b" || !slices.Equal(gpus, []int{0, 1}) {
		t.Fatalf("Place = %s %v %v, want m-b [0 1] after m-a was taken", m.ID, gpus, err)
	}
	if !slices.Equal(m.UsedGPUs, []int{0, 1}) {
		t.Errorf("placed machine UsedGPUs = %v", m.UsedGPUs)
	}
	m, gpus, err = ix.Place(q, Sort{}, 1, reserve)
	if err != nil || m.ID != "m-a" || !slices.Equal(gpus, []int{0}) {
		t.Fatalf("second Place = %s %v %v, want m-a [0]", m.ID, gpus, err)
	}
	if _, _, err := ix.Place(q, Sort{}, 2, reserve); !market.IsKind(err, market.Unavailable) {
		t.Errorf("Place with no room: err = %v, want unavailable", err)
	}
	if _, _, err := ix.Place(q, Sort{}, 1, func(market.Machine, []int) error { return market.Errorf("r", market.Conflict, "taken") }); !market.IsKind(err, market.Conflict) {
		t.Errorf("Place when every offer is taken: err = %v, want conflict", err)
	}
}
