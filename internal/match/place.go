package match

import (
	"fmt"
	"slices"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Reserve takes gpus of machine m atomically in the store of record. It
// returns an error of kind Conflict when another renter took them first.
type Reserve func(m market.Machine, gpus []int) error

// placeTries is how many of the best offers Place tries per search.
const placeTries = 8

// Place picks the best-ranked offer that matches q and has n free GPUs,
// chooses its GPUs with Fit and calls reserve. When reserve reports a
// Conflict it tries the next offer. On success the index marks the GPUs
// used and Place returns the machine as reserved and the GPU indices.
func (ix *Index) Place(q Query, s Sort, n int, reserve Reserve) (market.Machine, []int, error) {
	const op = "place instance"
	if n < 1 {
		return market.Machine{}, nil, market.Errorf(op, market.Invalid, "GPU count must be at least 1, got %d", n)
	}
	need := fmt.Sprintf("num_gpus>=%d", n)
	q.Filters = append(slices.Clip(q.Filters), Filter{Field: FNumGPUs, Op: OpGe, Nums: []int64{int64(n)}, Text: need})
	taken := 0
	for round := 0; round < 3; round++ {
		ix.mu.RLock()
		cs := ix.search(q, &s, placeTries)
		ms := make([]market.Machine, len(cs))
		for i, c := range cs {
			ms[i] = c.e.m // the index never mutates a stored machine's slices
		}
		ix.mu.RUnlock()
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			gpus, err := Fit(m, n)
			if err != nil {
				taken++
				continue
			}
			if err := reserve(m, gpus); market.IsKind(err, market.Conflict) {
				taken++
				continue
			} else if err != nil {
				return market.Machine{}, nil, fmt.Errorf("reserve %d GPUs on %s: %w", n, m.ID, err)
			}
			return ix.markUsed(m.ID, gpus), gpus, nil
		}
	}
	if taken > 0 {
		return market.Machine{}, nil, market.Errorf(op, market.Conflict, "the %d best offers matching '%s' were taken meanwhile; try again", taken, q)
	}
	return market.Machine{}, nil, market.Errorf(op, market.Unavailable, "no offer matches '%s'; see offer search --explain", q)
}

// markUsed adds gpus to the used GPUs of machine id as the index knows it
// now, so that concurrent placements never lose each other's updates.
func (ix *Index) markUsed(id market.MachineID, gpus []int) market.Machine {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e, ok := ix.entries[id]
	if !ok {
		return market.Machine{}
	}
	m := e.m
	used := slices.Clone(m.UsedGPUs)
	for _, g := range gpus {
		if !slices.Contains(used, g) {
			used = append(used, g)
		}
	}
	slices.Sort(used)
	m.UsedGPUs = used
	ix.put(m)
	m.GPUs = slices.Clone(m.GPUs)
	m.UsedGPUs = slices.Clone(used)
	return m
}
