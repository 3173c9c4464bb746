package coord

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// The offer index is the coordinator's in-memory view of what can be
// rented. It is rebuilt from the store at start (RebuildIndex) and kept in
// step by reindex, which every change to a machine or to the set of
// instances holding its GPUs calls after it commits. Placement reserves
// through the store, so a stale index entry can cost a retry, never a GPU
// given twice.

// Default and largest number of offers a search returns.
const (
	defaultOfferLimit = 50
	maxOfferLimit     = 1000
)

// RebuildIndex loads every machine from the store into the offer index.
func (s *Service) RebuildIndex(ctx context.Context) error {
	if err := s.markFollowed(ctx); err != nil {
		return fmt.Errorf("read the newest event: %w", err)
	}
	var ms []market.Machine
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		ms, err = tx.Machines(ctx, MachineFilter{})
		return err
	})
	if err != nil {
		return fmt.Errorf("load machines into the offer index: %w", err)
	}
	if err := s.fillAll(ctx, ms); err != nil {
		return err
	}
	if err := s.onDemandView(ctx, ms, nil); err != nil {
		return err
	}
	for _, m := range ms {
		s.index.Upsert(m)
	}
	return nil
}

// onDemandView sets each machine's UsedGPUs to the GPUs held by on-demand
// instances only: an on-demand rental preempts spot work, so GPUs that spot
// instances hold are on offer to on-demand renters. With machine set, only
// that machine's instances are read.
func (s *Service) onDemandView(ctx context.Context, ms []market.Machine, machine *market.MachineID) error {
	var insts []market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		insts, err = activeInstances(ctx, tx, machine)
		return err
	})
	if err != nil {
		return err
	}
	applyOnDemand(ms, insts)
	return nil
}

// activeInstances reads the active instances of one machine, or of all.
func activeInstances(ctx context.Context, tx Tx, machine *market.MachineID) ([]market.Instance, error) {
	f := InstanceFilter{ActiveOnly: true}
	if machine != nil {
		f.Machine = *machine
	}
	insts, err := tx.Instances(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("read the instances of the offer index: %w", err)
	}
	return insts, nil
}

// applyOnDemand sets each machine's used GPUs to those of its on-demand
// instances: a rental preempts spot work, so spot GPUs count as free.
func applyOnDemand(ms []market.Machine, insts []market.Instance) {
	held := map[market.MachineID][]int{}
	for _, i := range insts {
		if i.Kind != market.Spot {
			held[i.Machine] = append(held[i.Machine], i.GPUs...)
		}
	}
	for k := range ms {
		ms[k].UsedGPUs = slices.Sorted(slices.Values(held[ms[k].ID]))
		if ms[k].UsedGPUs == nil {
			ms[k].UsedGPUs = []int{}
		}
	}
}

// reindex refreshes the index entries of machines from the store, in read
// transactions of up to reindexBatch machines. A failure is logged: the
// entries stay stale until the next change, and placement re-checks in
// the store anyway.
func (s *Service) reindex(ctx context.Context, ids ...market.MachineID) {
	// The change is committed: the index follows it even when the caller
	// (an HTTP request whose client left) is cancelled.
	ctx = context.WithoutCancel(ctx)
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), reindexBatch)]
		ids = ids[len(chunk):]
		unlock := s.lockEntries(chunk)
		var ms []market.Machine
		var used map[market.MachineID][]int
		var vouched map[market.MachineID]time.Time
		var insts []market.Instance
		var newest []market.Event
		err := s.store.Tx(ctx, func(tx Tx) error {
			var err error
			if newest, err = tx.Events(ctx, EventFilter{Limit: 1}); err != nil {
				return fmt.Errorf("read the newest event: %w", err)
			}
			if ms, err = tx.Machines(ctx, MachineFilter{IDs: chunk}); err != nil {
				return fmt.Errorf("read the machines of the offer index: %w", err)
			}
			if insts, err = tx.Instances(ctx, InstanceFilter{Machines: chunk, ActiveOnly: true}); err != nil {
				return fmt.Errorf("read the instances of the offer index: %w", err)
			}
			used, vouched, err = fillReads(ctx, tx, chunk)
			return err
		})
		if err != nil {
			unlock()
			s.log.Warn("refresh offer index", "machines", len(chunk), "first", chunk[0], "err", err)
			continue
		}
		s.applyFill(ms, used, vouched)
		applyOnDemand(ms, insts)
		for _, m := range ms {
			s.index.Upsert(m)
		}
		if len(newest) > 0 {
			s.follow.cover(chunk, newest[0].Seq)
		}
		unlock()
	}
}

// indexCreated adds the GPUs of on-demand instances just created to their
// machines' offer index entries, without reading them again: a create
// changes nothing else there. A machine in changed (whose row, or whose
// other instances, the creates' transaction also changed), or not in the
// index, is returned instead, to refresh from the store (reindex). It
// reads nothing from the store itself. The follower skips the
// instance.created events of those added (follower.own).
//
// Under the entry's lock the addition is right whatever refresh ran
// meanwhile: one that read before the commit wrote before the lock was
// taken, and the GPUs are added to what it wrote; one that read after the
// commit already has them.
func (s *Service) indexCreated(insts []market.Instance, changed map[market.MachineID]bool) (refresh []market.MachineID) {
	var ids []market.MachineID
	for _, i := range insts {
		ids = append(ids, i.Machine)
	}
	unlock := s.lockEntries(ids)
	for _, i := range insts {
		m, ok := s.index.Machine(i.Machine)
		if !ok || changed[i.Machine] || i.Kind == market.Spot {
			refresh = append(refresh, i.Machine)
			continue
		}
		m.UsedGPUs = slices.Compact(slices.Sorted(slices.Values(append(m.UsedGPUs, i.GPUs...))))
		s.index.Upsert(m)
		s.follow.noteOwn(i.ID)
	}
	unlock()
	return refresh
}

// entryLocks serialise the refreshes of each machine's index entry, from
// the read to the write, by stripes of machine IDs. Without them a
// refresh that read a machine just before a change committed (another
// replica's change followed, a report) could write its stale copy over
// the one that the change's own refresh, reading after the commit, wrote
// a moment before: a machine just listed would not be offered.
type entryLocks [64]sync.Mutex

// lockEntries locks the stripes of ids, in order, and returns the unlock.
func (s *Service) lockEntries(ids []market.MachineID) func() {
	var held [len(entryLocks{})]bool
	for _, id := range ids {
		h := fnv.New32a()
		h.Write([]byte(id))
		held[h.Sum32()%uint32(len(held))] = true
	}
	for k, ok := range held {
		if ok {
			s.entries[k].Lock()
		}
	}
	return func() {
		for k, ok := range held {
			if ok {
				s.entries[k].Unlock()
			}
		}
	}
}

// reindexBatch is how many machines one transaction of reindex reads.
const reindexBatch = 256

// offerQuery turns a search request into a parsed query and sort: the
// shorthand filters are appended to the query text.
func offerQuery(f market.OfferFilter) (match.Query, match.Sort, error) {
	parts := []string{f.Query}
	if f.GPUName != "" {
		parts = append(parts, fmt.Sprintf("gpu_name=%q", f.GPUName))
	}
	if f.MinGPUs > 0 {
		parts = append(parts, fmt.Sprintf("num_gpus>=%d", f.MinGPUs))
	}
	if f.MaxPrice > 0 {
		parts = append(parts, "price_per_gpu_hour<="+f.MaxPrice.String())
	}
	if f.MinGPURAMGB > 0 {
		parts = append(parts, fmt.Sprintf("gpu_ram>=%d", f.MinGPURAMGB))
	}
	q, err := match.Parse(strings.TrimSpace(strings.Join(parts, " ")))
	if err != nil {
		return match.Query{}, match.Sort{}, err
	}
	sort, err := match.ParseSort(f.Sort)
	if err != nil {
		return match.Query{}, match.Sort{}, err
	}
	sort.Region = f.Region
	return q, sort, nil
}

// Offers searches the rentable machines, best first.
func (s *Service) Offers(ctx context.Context, f market.OfferFilter) ([]market.Offer, error) {
	q, sort, err := offerQuery(f)
	if err != nil {
		return nil, err
	}
	limit := f.Limit
	switch {
	case limit < 0:
		return nil, market.Errorf("search offers", market.Invalid, "limit must not be negative, got %d", limit)
	case limit == 0:
		limit = defaultOfferLimit
	case limit > maxOfferLimit:
		limit = maxOfferLimit
	}
	return orEmpty(s.index.Search(q, sort, limit)), nil
}

// ExplainOffers says, for each filter of a search, how many machines it
// removed, and for an empty result which filter emptied it and the offers
// that nearly matched.
func (s *Service) ExplainOffers(ctx context.Context, f market.OfferFilter) (match.Explanation, error) {
	q, sort, err := offerQuery(f)
	if err != nil {
		return match.Explanation{}, err
	}
	return s.index.Explain(q, sort, 5), nil
}

// createAuto places an instance on the best-ranked offer matching
// req.Auto, trying the next one when another renter took it meanwhile.
func (s *Service) createAuto(ctx context.Context, caller market.Account, req market.CreateInstanceRequest) (market.Instance, error) {
	// Only machines that can run it: containers need the docker runner,
	// a bare command the process runner.
	runner := "process"
	if req.Image != "" || req.Template != "" || len(req.Ports) > 0 || len(req.SSHKeys) > 0 || req.Limits != (market.Limits{}) {
		runner = "docker"
	}
	q, sort, err := offerQuery(market.OfferFilter{Query: req.Auto + " runner=" + runner, Region: req.Region})
	if err != nil {
		return market.Instance{}, err
	}
	var inst market.Instance
	_, _, err = s.index.Place(q, sort, req.GPUs, func(m market.Machine, _ []int) error {
		r := req
		r.Machine, r.Auto = m.ID, ""
		var err error
		inst, err = s.CreateInstance(ctx, caller, r)
		if market.IsKind(err, market.Unavailable) {
			// Gone offline since the index saw it: try the next offer.
			return market.Errorf("place instance", market.Conflict, "%w", err)
		}
		return err
	})
	if err != nil {
		return market.Instance{}, err
	}
	return inst, nil
}
