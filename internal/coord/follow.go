package coord

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// Replicas on one database each keep their own offer index. A replica
// sees its own changes at once (reindex after commit); FollowChanges makes
// it see the others' by reading the events table, which every change to a
// machine or to the instances holding its GPUs appends to in the same
// transaction, and refreshing the machines named there. The delay is at
// most the poll period plus one read.

// DefaultFollowEvery is how often a replica reads new events.
const DefaultFollowEvery = 500 * time.Millisecond

type follower struct {
	mu      sync.Mutex
	seq     int64
	started bool

	// covered holds, per machine, the newest event seen by the read that
	// last refreshed its index entry: that read saw every change named by
	// events up to it, so that the follower skips them (most events are
	// this replica's own changes, refreshed at once).
	coveredMu sync.Mutex
	covered   map[market.MachineID]int64

	// refreshed counts the machines it refreshed.
	refreshed atomic.Int64

	// own holds instances created here whose GPUs were added to the
	// index (indexCreated): their instance.created events need no
	// refresh. Their events are numbered before they are noted, so the
	// read after that sees them: a note is kept until the second read
	// after it (ownPrev holds those of the read before), and only once
	// the follower reads.
	ownMu   sync.Mutex
	own     map[market.InstanceID]bool
	ownPrev map[market.InstanceID]bool
}

// noteOwn notes that the creation of id is in the index.
func (f *follower) noteOwn(id market.InstanceID) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	if f.own != nil {
		f.own[id] = true
	}
}

// takeOwn reports whether the creation of id was noted.
func (f *follower) takeOwn(id market.InstanceID) bool {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	return f.own[id] || f.ownPrev[id]
}

// turnOwn forgets the notes older than the last read, after a read.
func (f *follower) turnOwn() {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	f.own, f.ownPrev = map[market.InstanceID]bool{}, f.own
}

// indexNeutral holds the event types whose change leaves a machine's offer
// index entry as it was: an instance starting or running holds the GPUs
// it held when created. Every agent's acknowledgement appends one.
var indexNeutral = map[string]bool{"instance.starting": true, "instance.running": true}

// cover notes that the entries of ids were refreshed from a read that saw
// the events up to seq.
func (f *follower) cover(ids []market.MachineID, seq int64) {
	f.coveredMu.Lock()
	defer f.coveredMu.Unlock()
	if f.covered == nil {
		f.covered = map[market.MachineID]int64{}
	}
	for _, id := range ids {
		f.covered[id] = max(f.covered[id], seq)
	}
}

// isCovered reports whether the index entry of id was refreshed from a
// read that saw event seq.
func (f *follower) isCovered(id market.MachineID, seq int64) bool {
	f.coveredMu.Lock()
	defer f.coveredMu.Unlock()
	return f.covered[id] >= seq
}

// FollowChanges refreshes the offer index from other replicas' changes
// every period until ctx ends.
func (s *Service) FollowChanges(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultFollowEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.followOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("follow changes of other replicas", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// followOnce reindexes the machines named by events newer than the last
// one seen. RebuildIndex sets where to start; without it, the first call
// only notes where the events end.
func (s *Service) followOnce(ctx context.Context) error {
	f := &s.follow
	f.mu.Lock()
	defer f.mu.Unlock()
	var evs []market.Event
	err := s.read(ctx, func(tx Tx) error {
		var err error
		if !f.started {
			evs, err = tx.Events(ctx, EventFilter{Limit: 1})
		} else {
			evs, err = tx.Events(ctx, EventFilter{AfterSeq: f.seq})
		}
		return err
	})
	if err != nil {
		return err
	}
	changed := map[market.MachineID]bool{}
	facts := map[market.MachineID]bool{} // registered, or whose verdict or bond changed
	for _, ev := range evs {
		f.seq = max(f.seq, ev.Seq)
		if f.started && ev.Machine != "" {
			own := ev.Type == "instance.created" && f.takeOwn(ev.Instance)
			if !own && !indexNeutral[ev.Type] {
				s.forgetMachine(ev.Machine) // another replica's change, or one forgotten already
				if !f.isCovered(ev.Machine, ev.Seq) {
					changed[ev.Machine] = true
				}
			}
			// A registration gives a machine its first facts: those that
			// have facts here (registered here) have them already.
			if factsEvents[ev.Type] && (ev.Type != "machine.registered" || s.index.Facts(ev.Machine) == match.Facts{}) {
				facts[ev.Machine] = true
			}
			if ev.Type == "machine.check" {
				// A check started through another replica: the agent's
				// desired state here reads it, and its long poll wakes.
				s.checkStarted(ev.Machine)
			}
			if ev.Type == "machine.offline" {
				// Another leader took it offline: if this coordinator
				// still holds its claim, the next flush finds out and
				// forgets it, so that its next report goes through the
				// store and brings it back online.
				s.live.recheck(ev.Machine)
			}
		}
	}
	f.started = true
	f.turnOwn()
	f.refreshed.Add(int64(len(changed)))
	s.reindex(ctx, slices.Collect(maps.Keys(changed))...) // in batches
	for chunk := range slices.Chunk(slices.Sorted(maps.Keys(facts)), factsChunk) {
		if err := s.refreshFactsOf(ctx, chunk); err != nil {
			s.log.Warn("refresh machine facts", "machines", len(chunk), "first", chunk[0], "err", err)
		}
	}
	return nil
}

// factsEvents holds the event types after which a machine's facts in the
// offer index change at once (a registration, which gives a new machine
// its first; a verdict; a bond): the replica that made the change
// refreshes them then (refreshMachineFacts), the others when they follow
// it, rather than at their next pass (facts.go).
var factsEvents = map[string]bool{"machine.registered": true, "machine.verified": true, "machine.verify_failed": true, "machine.bond": true, "machine.slashed": true}

// markFollowed notes the newest event before the index is built from the
// store, so that changes committed meanwhile are refreshed, not missed.
func (s *Service) markFollowed(ctx context.Context) error {
	f := &s.follow
	f.mu.Lock()
	defer f.mu.Unlock()
	return s.store.Tx(ctx, func(tx Tx) error {
		evs, err := tx.Events(ctx, EventFilter{Limit: 1})
		if err == nil && len(evs) > 0 {
			f.seq = evs[0].Seq
		}
		f.started = err == nil
		return err
	})
}
