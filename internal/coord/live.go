package coord

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// DefaultHeartbeatFlush is how often a coordinator writes the heartbeats it
// holds in memory, by default.
const DefaultHeartbeatFlush = 2 * time.Second

// Heartbeats without a commit each. A report that changes nothing durable
// (no instance moved, no logs, the machine already online) only updates
// liveSet, in memory. Every HeartbeatFlush (and at the start of each Tick)
// each coordinator writes, in one transaction:
//
//   - claims: the machines it has fresh heartbeats of and the store does not
//     yet know it holds (machines.beat_node = this node). A machine that
//     keeps beating to the same coordinator is claimed once, not written
//     per heartbeat; while other coordinators run, each claim is re-read
//     (not re-written) every half claimSilence, so that a machine that
//     moved to another coordinator and back is claimed again
//     (recheckEvery);
//   - releases: claimed machines silent for claimSilence, with their last
//     heartbeat, which lost-host detection then judges;
//   - one row vouching for all its claims (node_beats);
//   - the signals of replicas reported here (queue, health, GPU
//     utilisation) that changed or are due again (signals.go).
//
// Lost-host detection takes a machine as seen at the later of its stored
// LastSeenAt and the last vouch of the node claiming it, and allows
// HeartbeatFlush of extra silence for heartbeats not yet flushed. When a
// coordinator dies its vouches stop, and its machines are judged by its
// last one. So the steady cost of 100,000 machines beating is one small
// write per coordinator per flush, not 10,000 row writes a second.

// liveSet is what a coordinator knows of the machines it saw online: their
// owners (to authorise a heartbeat without reading the store), the last
// heartbeat, and whether the store knows this coordinator holds it.
type liveSet struct {
	mu        sync.Mutex
	machines  map[market.MachineID]*liveMachine
	unclaimed map[market.MachineID]struct{} // beating here, not claimed yet
}

type liveMachine struct {
	owner   market.AccountID
	seen    time.Time
	claimed bool      // the store names this coordinator as its beat node
	checked time.Time // when the claim was last written or confirmed
}

func newLiveSet() *liveSet {
	return &liveSet{machines: map[market.MachineID]*liveMachine{}, unclaimed: map[market.MachineID]struct{}{}}
}

// beat records a heartbeat of id from owner at now, if id is known online
// and owner owns it; it reports whether it did.
func (l *liveSet) beat(id market.MachineID, owner market.AccountID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.machines[id]
	if !ok || m.owner != owner {
		return false
	}
	if now.After(m.seen) {
		m.seen = now
	}
	if !m.claimed {
		l.unclaimed[id] = struct{}{}
	}
	return true
}

// owns reports whether id is known here, online and owned by owner.
func (l *liveSet) owns(id market.MachineID, owner market.AccountID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.machines[id]
	return ok && m.owner == owner
}

// online records that id is online in the store, owned by owner, seen at
// now; the next flush claims it.
func (l *liveSet) online(id market.MachineID, owner market.AccountID, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.machines[id]
	if !ok {
		m = &liveMachine{owner: owner}
		l.machines[id] = m
	}
	if now.After(m.seen) {
		m.seen = now
	}
	if !m.claimed {
		l.unclaimed[id] = struct{}{}
	}
}

// forget drops id: it went offline, and its next report must go through
// the store to bring it back.
func (l *liveSet) forget(ids ...market.MachineID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		delete(l.machines, id)
		delete(l.unclaimed, id)
	}
}

// lastSeen returns the latest heartbeat of id held in memory.
func (l *liveSet) lastSeen(id market.MachineID) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.machines[id]
	if !ok {
		return time.Time{}, false
	}
	return m.seen, true
}

// flushBatch is what one flush writes: machines to claim (or whose claim
// to confirm) and machines to release, each with its last heartbeat.
type flushBatch struct {
	claim, release map[market.MachineID]time.Time
	drop           []market.MachineID // released long ago: forgotten, nothing written
}

// take returns what the flush at now must write: unclaimed machines,
// claims marked for a recheck and (recheck > 0) claims not confirmed for
// recheck to claim, and machines silent for silence to release. It
// changes nothing; apply does, once written.
func (l *liveSet) take(now time.Time, silence, recheck time.Duration) flushBatch {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := flushBatch{claim: map[market.MachineID]time.Time{}, release: map[market.MachineID]time.Time{}}
	for id := range l.unclaimed {
		b.claim[id] = l.machines[id].seen
	}
	for id, m := range l.machines {
		switch _, unclaimed := l.unclaimed[id]; {
		case !m.claimed && !unclaimed:
			if m.forgettable(now, silence) {
				b.drop = append(b.drop, id)
			}
		case now.Sub(m.seen) >= silence && (m.claimed || unclaimed):
			// Claimed and released in one go when it was not claimed
			// yet: its last heartbeat is written, and no vouch covers it.
			b.claim[id] = m.seen
			b.release[id] = m.seen
		case m.claimed && (m.checked.IsZero() || recheck > 0 && now.Sub(m.checked) >= recheck):
			b.claim[id] = m.seen
		}
	}
	return b
}

// apply records a written batch: claims held (except the missed machines,
// offline or unknown, which are forgotten) and releases made. A released
// machine that beat again meanwhile is claimed again at the next flush. One
// that did not stays known, unclaimed, until take drops it: when its agent
// was only late (a coordinator too busy to hear it in time, a network
// blip), its next heartbeat still goes to memory and the next flush claims
// it again, with one batched write instead of a store transaction per
// machine coming back. If the machine went offline meanwhile, that flush
// finds it and forgets it, and its next report brings it back online
// through the store.
func (l *liveSet) apply(b flushBatch, missed []market.MachineID, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range missed {
		delete(l.machines, id)
		delete(l.unclaimed, id)
	}

	for id := range b.claim {
		if m, ok := l.machines[id]; ok {
			m.claimed, m.checked = true, now
			delete(l.unclaimed, id)
		}
	}
	for id, seen := range b.release {
		m, ok := l.machines[id]
		switch {
		case !ok:
		case m.seen.After(seen):
			m.claimed = false
			l.unclaimed[id] = struct{}{}
		default:
			m.claimed = false
		}
	}
}

// recheck marks the claims on ids for the next flush to confirm: another
// coordinator's leader took them offline, or may have.
func (l *liveSet) recheck(ids ...market.MachineID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if m, ok := l.machines[id]; ok && m.claimed {
			m.checked = time.Time{}
		}
	}
}

// forgettable reports whether m, released and not heard since, has been
// silent for four claim silences (three lost deadlines): it is offline by
// then, and known no more.
func (m *liveMachine) forgettable(now time.Time, silence time.Duration) bool {
	return !m.claimed && now.Sub(m.seen) >= 4*silence
}

// drop forgets the machines of ids (take chose them) that are still
// released and forgettable at now: one may have beaten since.
func (l *liveSet) drop(ids []market.MachineID, now time.Time, silence time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		m, ok := l.machines[id]
		if _, beat := l.unclaimed[id]; ok && !beat && m.forgettable(now, silence) {
			delete(l.machines, id)
		}
	}
}

// claimSilence is how long a claimed machine may be silent before its
// coordinator releases it, in clock time: the lost deadline. A release
// writes the machine's row and claiming it again at its next heartbeat
// writes it again, so releasing earlier turns heartbeats that are merely
// late (a busy agent, network or coordinator) into writes: at 100,000
// machines and a 20 s deadline, released at three quarters of it, those
// writes took most of a slowed coordinator's time and slowed it further.
// Releasing at the deadline costs no detection time: the release carries
// the true last heartbeat, already past the deadline, so the next tick
// takes the machine offline, when it would have anyway.
func (s *Service) claimSilence() time.Duration {
	return s.cfg.LostAfter * time.Duration(s.cfg.Speedup)
}

// flushSlice bounds the machines one flush transaction claims or
// releases: SQLite has one connection, and a heartbeat that needs the
// store (a machine back online) must not wait behind 100,000 rows.
const flushSlice = 2000

// slices splits a batch into parts of at most n machines each. A machine
// claimed and released in one go stays in one part: the pair is one change.
func (b flushBatch) slices(n int) []flushBatch {
	ids := make([]market.MachineID, 0, len(b.claim)+len(b.release))
	for id := range b.claim {
		ids = append(ids, id)
	}
	for id := range b.release {
		if _, ok := b.claim[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []flushBatch
	for len(ids) > 0 {
		k := min(n, len(ids))
		part := flushBatch{claim: map[market.MachineID]time.Time{}, release: map[market.MachineID]time.Time{}}
		for _, id := range ids[:k] {
			if t, ok := b.claim[id]; ok {
				part.claim[id] = t
			}
			if t, ok := b.release[id]; ok {
				part.release[id] = t
			}
		}
		out = append(out, part)
		ids = ids[k:]
	}
	return out
}

// flushSeen writes claims and releases in transactions of at most
// flushSlice machines, then, with the replica signals, this coordinator's
// vouch (see liveSet). The vouch comes last: until it is written the
// previous one stands, which covers no machine released meanwhile (its
// claim is gone) and only machines that beat to this coordinator. The
// machines it finds offline (another coordinator's leader took them
// offline) are forgotten, so that their next report brings them back
// online through the store.
func (s *Service) flushSeen(ctx context.Context) error {
	now := s.now()
	silence := s.claimSilence()
	b := s.live.take(now, silence, s.recheckEvery(ctx, now, silence))
	s.live.drop(b.drop, now, silence)
	for _, part := range b.slices(flushSlice) {
		var missed []market.MachineID
		err := s.store.Tx(ctx, func(tx Tx) error {
			missed = nil
			if len(part.claim) > 0 {
				var err error
				if missed, err = tx.ClaimMachines(ctx, s.cfg.Node, part.claim); err != nil {
					return err
				}
			}
			if len(part.release) > 0 {
				return tx.ReleaseMachines(ctx, s.cfg.Node, part.release)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("write heartbeat claims (%d claims, %d releases): %w", len(part.claim), len(part.release), err)
		}
		s.live.apply(part, missed, now)
		s.beats.flushed.Add(int64(len(part.claim) + len(part.release)))
	}
	sigs := s.signals.take(now, s.metrics) // signals.go
	prune := s.signals.prune(now)
	err := s.store.Tx(ctx, func(tx Tx) error {
		if len(sigs) > 0 {
			if err := tx.PutReplicaSignals(ctx, sigs); err != nil {
				return err
			}
		}
		if prune {
			if err := tx.PruneReplicaSignals(ctx, now.Add(-failureWindow)); err != nil {
				return err
			}
		}
		return tx.BeatNode(ctx, s.cfg.Node, now)
	})
	if err != nil {
		return fmt.Errorf("write heartbeat vouch (%d replica signals): %w", len(sigs), err)
	}
	s.signals.written(sigs, now)
	if prune {
		s.signals.pruned(now)
	}
	s.beats.flushes.Add(1)
	return nil
}

// recheckEvery is how often the flush re-reads this coordinator's claims:
// every half claim silence while another coordinator runs (it may have
// taken a machine over, or its leader taken one offline), and otherwise
// never (0), which at 100,000 machines saves reading 13,000 claims a
// second. A claim found taken over or offline is then corrected within a
// half claim silence; one taken offline by another leader, as soon as this
// coordinator follows that leader's machine.offline event (follow.go).
// When the store cannot tell, it rechecks.
func (s *Service) recheckEvery(ctx context.Context, now time.Time, silence time.Duration) time.Duration {
	var others bool
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		others, err = tx.OtherNodes(ctx, s.cfg.Node, now.Add(-silence))
		return err
	})
	if err == nil && !others {
		return 0
	}
	return silence / 2
}

// heartbeatSlack is the extra silence lost-host detection allows, in clock
// time: a heartbeat may wait that long in another replica's memory.
func (s *Service) heartbeatSlack() time.Duration {
	return s.cfg.HeartbeatFlush * time.Duration(s.cfg.Speedup)
}

// overlaySeen sets the LastSeenAt of machines to the heartbeats this
// coordinator holds in memory, when later than the stored ones.
func (s *Service) overlaySeen(ms []market.Machine) {
	for i := range ms {
		if t, ok := s.live.lastSeen(ms[i].ID); ok && t.After(ms[i].LastSeenAt) && ms[i].Online {
			ms[i].LastSeenAt = t
		}
	}
}

// beatCounts counts heartbeats for the metrics.
type beatCounts struct {
	inMemory atomic.Int64 // reports that only touched memory
	flushed  atomic.Int64 // claims made, confirmed or released by flushes
	flushes  atomic.Int64 // flush transactions
}

// HeartbeatCounts are totals since start: reports answered from memory,
// heartbeats written in batches and the batches' transactions.
type HeartbeatCounts struct {
	InMemory, Flushed, Flushes int64
}

// HeartbeatCounts returns the heartbeat totals since start.
func (s *Service) HeartbeatCounts() HeartbeatCounts {
	return HeartbeatCounts{InMemory: s.beats.inMemory.Load(), Flushed: s.beats.flushed.Load(), Flushes: s.beats.flushes.Load()}
}
