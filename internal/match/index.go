package match

import (
	"math"
	"slices"
	"sync"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Index is an in-memory offer index. Available machines (see Available)
// are partitioned into groups by GPU model, region and free-GPU count
// (1..8, then 9 and more); each group stores its rows column by column. A
// search decides the model, region and free-GPU filters once per group,
// skips the groups they exclude and scans the others' columns in order,
// keeping the best results in a bounded heap.
//
// It is safe for concurrent use.
type Index struct {
	mu      sync.RWMutex
	entries map[market.MachineID]*entry
	facts   map[market.MachineID]Facts
	// prints finds a machine by its owner and hardware fingerprint.
	prints map[printKey]market.MachineID
	groups map[groupKey]*group
	list   []*group // groups in creation order; empty ones stay
	// dictionary encoding of the text fields: normalised value <-> code
	codes [numFields]map[string]int64
	vals  [numFields][]string
	rank  Ranking
	// noPrune turns the group-level decisions off, so a search scans every
	// available row: the "indexes off" baseline of the benchmarks.
	noPrune bool
}

const maxBucket = 9 // free-GPU groups: 1..8 exactly, 9 = nine or more

type groupKey struct{ model, region, free int64 }

type group struct {
	key  groupKey
	ents []*entry
	cols [numFields][]int64
}

type entry struct {
	m    market.Machine
	g    *group // nil when not available
	slot int
}

// NewIndex returns an empty index ranking with DefaultRanking.
func NewIndex() *Index {
	ix := &Index{
		entries: map[market.MachineID]*entry{},
		facts:   map[market.MachineID]Facts{},
		prints:  map[printKey]market.MachineID{},
		groups:  map[groupKey]*group{},
		rank:    DefaultRanking(),
	}
	for _, f := range fieldTable {
		if f.Type == TypeText {
			ix.codes[f.ID] = map[string]int64{}
		}
	}
	return ix
}

// SetRanking replaces the ranking configuration.
func (ix *Index) SetRanking(r Ranking) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.rank = r
}

// Len returns the number of machines in the index, available or not.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.entries)
}

// Upsert adds or replaces machine m, whose UsedGPUs must be filled in. The
// index keeps its own copy.
func (ix *Index) Upsert(m market.Machine) {
	m.GPUs = slices.Clone(m.GPUs)
	m.UsedGPUs = slices.Clone(m.UsedGPUs)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.put(m)
}

// SetFacts records the facts market.Machine does not carry for machine id
// (reliability, verification, measurements). They survive Upsert and may
// be set before the machine is added.
func (ix *Index) SetFacts(id market.MachineID, f Facts) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.facts[id] = f
	if e, ok := ix.entries[id]; ok {
		ix.put(e.m)
	}
}

// Facts returns the facts recorded for machine id (zero when none).
func (ix *Index) Facts(id market.MachineID) Facts {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.facts[id]
}

// Remove drops machine id and its facts.
func (ix *Index) Remove(id market.MachineID) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e, ok := ix.entries[id]; ok {
		ix.unlink(e)
		delete(ix.entries, id)
		if k := (printKey{e.m.Owner, e.m.Fingerprint}); ix.prints[k] == id {
			delete(ix.prints, k)
		}
	}
	delete(ix.facts, id)
}

// Each calls f with every machine in the index, available or not, in no
// particular order, under the index's read lock: f must be quick, must not
// call the index, and must not change the machine's slices.
func (ix *Index) Each(f func(m *market.Machine)) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, e := range ix.entries {
		f(&e.m)
	}
}

type printKey struct {
	owner market.AccountID
	print string
}

// ByFingerprint returns the index's copy of owner's machine whose hardware
// has fingerprint fp (what an agent registering again sends).
func (ix *Index) ByFingerprint(owner market.AccountID, fp string) (market.Machine, bool) {
	ix.mu.RLock()
	id, ok := ix.prints[printKey{owner, fp}]
	ix.mu.RUnlock()
	if !ok {
		return market.Machine{}, false
	}
	return ix.Machine(id)
}

// Machine returns the index's copy of machine id.
func (ix *Index) Machine(id market.MachineID) (market.Machine, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e, ok := ix.entries[id]
	if !ok {
		return market.Machine{}, false
	}
	m := e.m
	m.GPUs, m.UsedGPUs = slices.Clone(m.GPUs), slices.Clone(m.UsedGPUs)
	return m, true
}

// put stores m (owned by the index) and files it into its group.
func (ix *Index) put(m market.Machine) {
	e, ok := ix.entries[m.ID]
	if !ok {
		e = &entry{}
		ix.entries[m.ID] = e
	} else if old := (printKey{e.m.Owner, e.m.Fingerprint}); ix.prints[old] == m.ID {
		delete(ix.prints, old)
	}
	ix.prints[printKey{m.Owner, m.Fingerprint}] = m.ID
	ix.unlink(e)
	e.m = m
	if !Available(m) {
		return
	}
	r := rowOf(m, ix.facts[m.ID])
	for f, t := range fieldTable {
		if t.Type == TypeText {
			r.num[f] = ix.code(FieldID(f), r.str[f])
		}
	}
	k := groupKey{model: r.num[FGPUName], region: r.num[FRegion], free: min(r.num[FNumGPUs], maxBucket)}
	g := ix.groups[k]
	if g == nil {
		g = &group{key: k}
		ix.groups[k] = g
		ix.list = append(ix.list, g)
	}
	e.g, e.slot = g, len(g.ents)
	g.ents = append(g.ents, e)
	for f := range g.cols {
		g.cols[f] = append(g.cols[f], r.num[f])
	}
}

// unlink takes e out of its group by moving the group's last row into its
// slot.
func (ix *Index) unlink(e *entry) {
	g := e.g
	if g == nil {
		return
	}
	last := len(g.ents) - 1
	moved := g.ents[last]
	g.ents[e.slot] = moved
	moved.slot = e.slot
	g.ents[last] = nil
	g.ents = g.ents[:last]
	for f := range g.cols {
		g.cols[f][e.slot] = g.cols[f][last]
		g.cols[f] = g.cols[f][:last]
	}
	e.g = nil
}

func (ix *Index) code(f FieldID, v string) int64 {
	c, ok := ix.codes[f][v]
	if !ok {
		c = int64(len(ix.vals[f]))
		ix.codes[f][v] = c
		ix.vals[f] = append(ix.vals[f], v)
	}
	return c
}

// clause is a filter compiled against the index: a value passes when it
// lies in [lo, hi] (or in set, when isSet), negated by neg.
type clause struct {
	col    FieldID
	lo, hi int64
	set    []int64
	isSet  bool
	neg    bool
}

func (c *clause) pass(v int64) bool {
	var in bool
	if c.isSet {
		in = slices.Contains(c.set, v)
	} else {
		in = v >= c.lo && v <= c.hi
	}
	return in != c.neg
}

func (ix *Index) compile(q Query) []clause {
	cs := make([]clause, len(q.Filters))
	for i := range q.Filters {
		f := &q.Filters[i]
		c := clause{col: f.Field, neg: f.Op == OpNe || f.Op == OpNotIn}
		if fieldTable[f.Field].Type == TypeText {
			c.isSet = true
			c.set = []int64{}
			for code, v := range ix.vals[f.Field] {
				for _, p := range f.Strs {
					if textMatch(f.Field, p, v) {
						c.set = append(c.set, int64(code))
						break
					}
				}
			}
			cs[i] = c
			continue
		}
		v := f.Nums[0]
		c.lo, c.hi = math.MinInt64, math.MaxInt64
		switch f.Op {
		case OpEq, OpNe:
			c.lo, c.hi = v, v
		case OpLt:
			if v == math.MinInt64 {
				c.lo, c.hi = 1, 0
			} else {
				c.hi = v - 1
			}
		case OpLe:
			c.hi = v
		case OpGt:
			if v == math.MaxInt64 {
				c.lo, c.hi = 1, 0
			} else {
				c.lo = v + 1
			}
		case OpGe:
			c.lo = v
		case OpIn, OpNotIn:
			c.isSet, c.set = true, f.Nums
		}
		cs[i] = c
	}
	return cs
}

// groupValue returns the value of column f shared by every row of g, if
// the group key fixes it.
func (g *group) groupValue(f FieldID) (int64, bool) {
	switch f {
	case FGPUName:
		return g.key.model, true
	case FRegion:
		return g.key.region, true
	case FNumGPUs:
		return g.key.free, g.key.free < maxBucket
	}
	return 0, false
}

// scorer computes the ranking score of rows for one search.
type scorer struct {
	r       Ranking
	latency []float64 // latency term by region code
	useLat  bool
}

func (ix *Index) scorer(region string) scorer {
	s := scorer{r: ix.rank}
	if region != "" && ix.rank.LatencyWeight != 0 {
		s.useLat = true
		s.latency = make([]float64, len(ix.vals[FRegion]))
		ref := float64(max(ix.rank.LatencyRef, 1))
		for code, v := range ix.vals[FRegion] {
			s.latency[code] = 1 / (1 + float64(ix.rank.Latency.Lookup(region, v))/ref)
		}
	}
	return s
}

func (s *scorer) score(g *group, i int) float64 {
	r := &s.r
	price := float64(g.cols[FPricePerGPUHour][i])
	sc := r.PriceWeight / (1 + price/float64(max(r.PriceRef, 1)))
	sc += r.ReliabilityWeight * float64(g.cols[FReliability][i]) / 1e6
	if perf := float64(g.cols[FPerfScore][i]) / 1000; perf > 0 {
		sc += r.PerfWeight * perf / (perf + max(r.PerfRef, 1e-9))
	}
	if s.useLat {
		sc += r.LatencyWeight * s.latency[g.cols[FRegion][i]]
	}
	if bond := float64(g.cols[FBond][i]); bond > 0 {
		sc += r.BondWeight * bond / (bond + float64(max(r.BondRef, 1)))
	}
	return sc
}

// Search returns the best limit offers of available machines that match
// q, in the order of s (limit <= 0: all of them).
func (ix *Index) Search(q Query, s Sort, limit int) []market.Offer {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	cs := ix.search(q, &s, limit)
	out := make([]market.Offer, len(cs))
	for i, c := range cs {
		out[i] = Offer(c.e.m)
	}
	return out
}

// rangeCheck is a range clause ready for the scan loop: v passes when
// uint64(v-lo) <= span, negated by neg (one comparison, no overflow).
type rangeCheck struct {
	col  FieldID
	lo   int64
	span uint64
	neg  bool
}

func (r *rangeCheck) pass(v int64) bool { return (uint64(v-r.lo) <= r.span) != r.neg }

func (ix *Index) search(q Query, s *Sort, limit int) []cand {
	cs := ix.compile(q)
	for i := 0; i < len(cs); i++ {
		if c := &cs[i]; !c.isSet && c.lo > c.hi { // empty range
			if !c.neg {
				return nil
			}
			cs = slices.Delete(cs, i, i+1) // always true
			i--
		}
	}
	sc := ix.scorer(s.Region)
	top := topK{s: s, k: limit}
	ranges := make([]rangeCheck, 0, len(cs))
	sets := make([]*clause, 0, len(cs))
	var sel []int32
groups:
	for _, g := range ix.list {
		n := len(g.ents)
		if n == 0 {
			continue
		}
		ranges, sets = ranges[:0], sets[:0]
		for i := range cs {
			c := &cs[i]
			if v, fixed := g.groupValue(c.col); fixed && !ix.noPrune {
				if !c.pass(v) {
					continue groups
				}
				continue
			}
			if c.isSet {
				sets = append(sets, c)
			} else {
				ranges = append(ranges, rangeCheck{col: c.col, lo: c.lo, span: uint64(c.hi - c.lo), neg: c.neg})
			}
		}
		// Filter a selection vector column by column: the first range
		// clause reads its column in order, the rest only the survivors.
		sel = sel[:0]
		if len(ranges) > 0 {
			r := ranges[0]
			for i, v := range g.cols[r.col][:n] {
				if r.pass(v) {
					sel = append(sel, int32(i))
				}
			}
			ranges = ranges[1:]
		} else {
			for i := range n {
				sel = append(sel, int32(i))
			}
		}
		for ri := range ranges {
			r := &ranges[ri]
			col := g.cols[r.col]
			k := 0
			for _, i := range sel {
				if r.pass(col[i]) {
					sel[k] = i
					k++
				}
			}
			sel = sel[:k]
		}
		for _, c := range sets {
			col := g.cols[c.col]
			k := 0
			for _, i := range sel {
				if c.pass(col[i]) {
					sel[k] = i
					k++
				}
			}
			sel = sel[:k]
		}
		var keyCol []int64
		if s.ByField {
			keyCol = g.cols[s.Field]
		}
		for _, i := range sel {
			c := cand{score: sc.score(g, int(i)), price: g.cols[FPricePerGPUHour][i], e: g.ents[i]}
			if keyCol != nil {
				c.key = keyCol[i]
			}
			top.add(c)
		}
	}
	return top.sorted()
}
