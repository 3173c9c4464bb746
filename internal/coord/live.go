package coord

import (
	"context"
	"fmt"
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
// liveSet, in memory; every HeartbeatFlush, and at the start of each Tick,
// each coordinator writes what it gathered in one transaction
// (TouchMachines). Lost-host detection reads the stored LastSeenAt and
// allows HeartbeatFlush of extra silence, for heartbeats still held by
// another replica.

// liveSet is what a coordinator knows of the machines it saw online: their
// owners (to authorise a heartbeat without reading the store) and the last
// heartbeat, and which heartbeats are not yet written.
type liveSet struct {
	mu       sync.Mutex
	machines map[market.MachineID]*liveMachine
	dirty    map[market.MachineID]time.Time // heartbeats to flush
}

type liveMachine struct {
	owner market.AccountID
	seen  time.Time
}

func newLiveSet() *liveSet {
	return &liveSet{machines: map[market.MachineID]*liveMachine{}, dirty: map[market.MachineID]time.Time{}}
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
		l.dirty[id] = now
	}
	return true
}

// online records that id is online in the store, owned by owner, seen at
// now; stored says whether the store already holds now as its LastSeenAt.
func (l *liveSet) online(id market.MachineID, owner market.AccountID, now time.Time, stored bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.machines[id]
	if !ok {
		m = &liveMachine{owner: owner}
		l.machines[id] = m
	}
	if now.After(m.seen) {
		m.seen = now
		if !stored {
			l.dirty[id] = now
		}
	}
}

// forget drops id: it went offline, and its next report must go through
// the store to bring it back.
func (l *liveSet) forget(ids ...market.MachineID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		delete(l.machines, id)
		delete(l.dirty, id)
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

// take returns the heartbeats not yet written and starts a new batch.
func (l *liveSet) take() map[market.MachineID]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.dirty) == 0 {
		return nil
	}
	d := l.dirty
	l.dirty = make(map[market.MachineID]time.Time, len(d))
	return d
}

// giveBack returns a batch that could not be written, keeping newer
// heartbeats that arrived meanwhile.
func (l *liveSet) giveBack(batch map[market.MachineID]time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, t := range batch {
		if _, ok := l.machines[id]; !ok {
			continue
		}
		if cur, ok := l.dirty[id]; !ok || t.After(cur) {
			l.dirty[id] = t
		}
	}
}

// flushSeen writes the heartbeats held in memory in one transaction. The
// machines it finds offline (another coordinator's leader took them
// offline) are forgotten, so that their next report brings them back
// online through the store.
func (s *Service) flushSeen(ctx context.Context) error {
	batch := s.live.take()
	if len(batch) == 0 {
		return nil
	}
	var missed []market.MachineID
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		missed, err = tx.TouchMachines(ctx, batch)
		return err
	})
	if err != nil {
		s.live.giveBack(batch)
		return fmt.Errorf("write %d heartbeats: %w", len(batch), err)
	}
	s.live.forget(missed...)
	s.beats.flushes.Add(1)
	s.beats.flushed.Add(int64(len(batch)))
	return nil
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
	flushed  atomic.Int64 // heartbeats written by flushes
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
