package match

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Explanation says why a search returned what it did.
type Explanation struct {
	Machines  int    `json:"machines"`  // in the index
	Available int    `json:"available"` // online, listed, with a free GPU: what filters start from
	Steps     []Step `json:"steps"`     // one per filter, in query order
	Matched   int    `json:"matched"`
	// EmptiedBy is the index in Steps of the filter that removed the last
	// candidates when nothing matched, or -1.
	EmptiedBy int        `json:"emptied_by"`
	Near      []NearMiss `json:"near,omitempty"` // for an empty result: fewest failed filters first
}

// Step is what one filter did.
type Step struct {
	Filter  string `json:"filter"`
	Removed int    `json:"removed"` // of the machines the filters before it left
	Fails   int    `json:"fails"`   // of all available machines, on its own
}

// NearMiss is an offer that almost matched.
type NearMiss struct {
	Offer  market.Offer `json:"offer"`
	Failed []string     `json:"failed"` // the filters it fails
}

// Explain evaluates q filter by filter over every available machine. For
// an empty result it names the filter that emptied it and returns up to
// near offers with the fewest failed filters, in the order of s.
func (ix *Index) Explain(q Query, s Sort, near int) Explanation {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	cs := ix.compile(q)
	sc := ix.scorer(s.Region)
	x := Explanation{Machines: len(ix.entries), Steps: make([]Step, len(cs)), EmptiedBy: -1}
	for i, f := range q.Filters {
		x.Steps[i].Filter = f.Text
	}
	top := topK{s: &s, k: near}
	for _, g := range ix.list {
		for i := range g.ents {
			x.Available++
			var failed uint64
			for j := range cs {
				if !cs[j].pass(g.cols[cs[j].col][i]) {
					failed |= 1 << j
					x.Steps[j].Fails++
				}
			}
			if failed == 0 {
				x.Matched++
				continue
			}
			x.Steps[bits.TrailingZeros64(failed)].Removed++
			if near > 0 {
				c := cand{miss: bits.OnesCount64(failed), score: sc.score(g, i), price: g.cols[FPricePerGPUHour][i], e: g.ents[i]}
				if s.ByField {
					c.key = g.cols[s.Field][i]
				}
				top.add(c)
			}
		}
	}
	if x.Matched > 0 || x.Available == 0 {
		return x
	}
	left := x.Available
	for i, st := range x.Steps {
		left -= st.Removed
		if left == 0 {
			x.EmptiedBy = i
			break
		}
	}
	for _, c := range top.sorted() {
		nm := NearMiss{Offer: Offer(c.e.m)}
		r := rowOf(c.e.m, ix.facts[c.e.m.ID])
		for j := range q.Filters {
			if !q.Filters[j].pass(&r) {
				nm.Failed = append(nm.Failed, q.Filters[j].Text)
			}
		}
		x.Near = append(x.Near, nm)
	}
	return x
}

// String formats the explanation for people (offer search --explain).
func (x Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s, %d available", x.Machines, plural(x.Machines, "machine", "machines"), x.Available)
	if x.Available < x.Machines {
		b.WriteString(" (the rest are offline, unlisted or fully rented)")
	}
	b.WriteString("\n")
	left := x.Available
	for _, st := range x.Steps {
		left -= st.Removed
		fmt.Fprintf(&b, "  %-40s removed %d, %d left (fails %d on its own)\n", st.Filter, st.Removed, left, st.Fails)
	}
	fmt.Fprintf(&b, "%d offers match\n", x.Matched)
	if x.EmptiedBy >= 0 {
		fmt.Fprintf(&b, "no offers left after '%s'\n", x.Steps[x.EmptiedBy].Filter)
	}
	if len(x.Near) > 0 {
		b.WriteString("nearest offers:\n")
		for _, n := range x.Near {
			region := n.Offer.Region
			if region == "" {
				region = "no region"
			}
			fmt.Fprintf(&b, "  %s  %d x %s at %s/GPU-hour, %s; fails %s\n", n.Offer.Machine, n.Offer.FreeGPUs, n.Offer.GPUModel, n.Offer.PricePerGPUHour, region, strings.Join(n.Failed, " "))
		}
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
