package match

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Ranking configures the offer score, the default sort. Higher is better:
//
//	score = PriceWeight       * 1/(1 + price_per_gpu_hour/PriceRef)
//	      + ReliabilityWeight * reliability                  (0..1)
//	      + PerfWeight        * perf/(perf + PerfRef)
//	      + LatencyWeight     * 1/(1 + latency/LatencyRef)   (latency from the renter's region)
//	      + BondWeight        * bond/(bond + BondRef)        (the host's bond per GPU)
//
// Each term lies in [0,1], so the weights say how much each matters. The
// latency term is left out when the renter's region is not known. Ties go
// to the lower price, then the lower machine ID, so results are
// deterministic.
type Ranking struct {
	PriceWeight, ReliabilityWeight, PerfWeight, LatencyWeight float64
	PriceRef                                                  market.Money  // price whose term is 0.5
	PerfRef                                                   float64       // perf_score whose term is 0.5
	LatencyRef                                                time.Duration // latency whose term is 0.5
	Latency                                                   LatencyTable

	// BondWeight * bond/(bond + BondRef) is added for hosts that bonded
	// tokens on their GPUs (0 without a bond), so a bond ranks higher.
	BondWeight float64
	BondRef    market.Money // bond per GPU whose term is 0.5
}

// DefaultRanking weighs price 0.5, reliability 0.25, performance 0.15 and
// latency 0.10, with references 1 token/GPU-hour, 10 points (perf_score:
// trillions of multiply-adds per second per GPU, measured by checks) and
// 50 ms.
func DefaultRanking() Ranking {
	return Ranking{
		PriceWeight: 0.5, ReliabilityWeight: 0.25, PerfWeight: 0.15, LatencyWeight: 0.10,
		PriceRef: market.Micro, PerfRef: 10, LatencyRef: 50 * time.Millisecond,
		Latency: LatencyTable{Default: 150 * time.Millisecond},
		// A bond of 10 tokens per GPU is worth 0.05, a tenth of the price term's range.
		BondWeight: 0.1, BondRef: 10 * market.Micro,
	}
}

// LatencyTable is the operator's region-to-region latency estimate.
// Lookups are symmetric and case-insensitive and fall back from a
// sub-region to its parent ("eu-west-1" to "eu-west" to "eu"). Regions
// with no entry have latency 0 when they share a parent (us-east and
// us-west) and Default otherwise.
type LatencyTable struct {
	Pairs   map[[2]string]time.Duration
	Default time.Duration
}

// Lookup returns the latency between regions a and b.
func (t LatencyTable) Lookup(a, b string) time.Duration {
	a, b = normText(a), normText(b)
	for x := a; x != ""; x = parentRegion(x) {
		for y := b; y != ""; y = parentRegion(y) {
			if d, ok := t.Pairs[[2]string{x, y}]; ok {
				return d
			}
			if d, ok := t.Pairs[[2]string{y, x}]; ok {
				return d
			}
			if x == y {
				return 0
			}
		}
	}
	return t.Default
}

func parentRegion(r string) string {
	if i := strings.LastIndexByte(r, '-'); i > 0 {
		return r[:i]
	}
	return ""
}

// Sort orders search results. The zero Sort ranks by score.
type Sort struct {
	ByField bool    // sort by Field instead of by score
	Field   FieldID // a number, money or version field
	Desc    bool    // largest first (fields only; score is always best first)
	Region  string  // renter's region, for the latency term of the score
}

// ParseSort parses "score", "price" or a numeric field name, with a
// leading "-" for largest first: "-reliability".
func ParseSort(s string) (Sort, error) {
	name, desc := strings.CutPrefix(strings.TrimSpace(s), "-")
	if name == "" || name == "score" {
		return Sort{}, nil
	}
	id, ok := lookupField(name)
	if !ok || fieldTable[id].Type == TypeText {
		hint := ""
		if s := suggest(name); s != "" && fieldTable[mustField(s)].Type != TypeText {
			hint = "; did you mean '" + s + "'?"
		}
		return Sort{}, market.Errorf("parse sort", market.Invalid, "cannot sort by '%s'%s; use score, price or a numeric field, with - for largest first", name, hint)
	}
	return Sort{ByField: true, Field: id, Desc: desc}, nil
}

func mustField(name string) FieldID { id, _ := lookupField(name); return id }

// cand is a matching machine while results are ranked.
type cand struct {
	miss  int // failed filters (Explain's near misses); 0 in searches
	key   int64
	score float64
	price int64
	e     *entry
}

// better reports whether a ranks before b.
func (s *Sort) better(a, b *cand) bool {
	if a.miss != b.miss {
		return a.miss < b.miss
	}
	if s.ByField && a.key != b.key {
		return (a.key < b.key) != s.Desc
	}
	return cmp.Or(-cmp.Compare(a.score, b.score), cmp.Compare(a.price, b.price), cmp.Compare(a.e.m.ID, b.e.m.ID)) < 0
}

// topK keeps the k best candidates in a heap whose root is the worst.
type topK struct {
	s *Sort
	k int // <= 0: keep all
	h []cand
}

func (t *topK) add(c cand) {
	if t.k <= 0 || len(t.h) < t.k {
		t.h = append(t.h, c)
		if t.k > 0 {
			for i := len(t.h) - 1; i > 0; {
				p := (i - 1) / 2
				if !t.s.better(&t.h[p], &t.h[i]) {
					break
				}
				t.h[p], t.h[i] = t.h[i], t.h[p]
				i = p
			}
		}
		return
	}
	if !t.s.better(&c, &t.h[0]) {
		return
	}
	t.h[0] = c
	for i := 0; ; {
		w, l, r := i, 2*i+1, 2*i+2
		if l < len(t.h) && t.s.better(&t.h[w], &t.h[l]) {
			w = l
		}
		if r < len(t.h) && t.s.better(&t.h[w], &t.h[r]) {
			w = r
		}
		if w == i {
			break
		}
		t.h[i], t.h[w] = t.h[w], t.h[i]
		i = w
	}
}

// sorted returns the kept candidates, best first.
func (t *topK) sorted() []cand {
	out := t.h
	sortCands(out, t.s)
	return out
}

func sortCands(cs []cand, s *Sort) {
	// insertion sort for the usual top-10, otherwise the standard sort
	if len(cs) <= 32 {
		for i := 1; i < len(cs); i++ {
			for j := i; j > 0 && s.better(&cs[j], &cs[j-1]); j-- {
				cs[j], cs[j-1] = cs[j-1], cs[j]
			}
		}
		return
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if s.better(&a, &b) {
			return -1
		}
		if s.better(&b, &a) {
			return 1
		}
		return 0
	})
}
