package coord

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Leader election. Every coordinator sharing a store serves the API; the
// holder of the lease row LeaderLease runs the background loops (Tick). The
// lease is taken and renewed in a transaction, expires LeaseTTL after its
// last renewal, and carries a generation that grows by one each time it
// changes holder. Every transaction of the loops first checks, inside the
// same transaction, that this coordinator still holds the lease with the
// generation it had when the pass began (fencedStore), so a leader paused
// past its lease (a GC pause, a stopped VM) cannot commit once another has
// taken over: on Postgres the check and the writes are one SERIALIZABLE
// transaction, on SQLite one transaction under the single write lock.

// LeaderLease names the lease whose holder runs the background loops.
const LeaderLease = "leader"

// DefaultLeaseTTL is how long the leader lease lasts without renewal.
const DefaultLeaseTTL = 15 * time.Second

// errNotLeader is the cause of a loop transaction refused because this
// coordinator no longer holds the lease it began the pass with.
var errNotLeader = errors.New("this coordinator no longer holds the leader lease")

// Leadership says who runs the background loops, as this coordinator last
// saw the lease.
type Leadership struct {
	Node       string    `json:"node"`       // this coordinator
	Leader     string    `json:"leader"`     // the lease's holder; "" when none yet
	IsLeader   bool      `json:"is_leader"`  // this coordinator holds the lease
	Generation int64     `json:"generation"` // the lease's fencing generation
	ExpiresAt  time.Time `json:"expires_at"` // in the coordinator's clock
}

// leader is what a Service knows of the lease.
type leader struct {
	mu    sync.Mutex
	lease Lease // as last read or written
	gen   int64 // the generation this coordinator holds; 0 when not leader
}

// defaultNode names this process: host name and a random suffix, unique
// among coordinators even on one machine.
func defaultNode() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "coordinator"
	}
	return host + "-" + market.NewID("")
}

// leaseTTL is the lease's length in clock time.
func (s *Service) leaseTTL() time.Duration { return s.cfg.LeaseTTL * time.Duration(s.cfg.Speedup) }

// campaign takes the leader lease if it is free or expired, renews it if
// this coordinator holds it, and returns the generation held (0: another
// coordinator leads).
func (s *Service) campaign(ctx context.Context) (int64, error) {
	now := s.now()
	node := s.cfg.Node
	var got Lease
	err := s.store.Tx(ctx, func(tx Tx) error {
		l, err := tx.Lease(ctx, LeaderLease)
		switch {
		case market.IsKind(err, market.NotFound):
			l = Lease{Name: LeaderLease}
		case err != nil:
			return err
		}
		switch {
		case l.Holder == node:
			// Ours: renew, even past its expiry, since nobody took it.
			l.ExpiresAt = now.Add(s.leaseTTL())
		case l.Holder == "" || !now.Before(l.ExpiresAt):
			l = Lease{Name: LeaderLease, Holder: node, Generation: l.Generation + 1, AcquiredAt: now, ExpiresAt: now.Add(s.leaseTTL())}
		default:
			got = l
			return nil
		}
		got = l
		return tx.PutLease(ctx, l)
	})
	s.lead.mu.Lock()
	defer s.lead.mu.Unlock()
	was := s.lead.gen
	if err != nil {
		// Unsure whether the renewal committed: lead only while the lease
		// last known to be ours lasts. The fence decides anyway.
		if s.lead.gen != 0 && !now.Before(s.lead.lease.ExpiresAt) {
			s.lead.gen = 0
			s.log.Warn("leader lease expired while it could not be renewed", "node", node, "generation", was)
		}
		return s.lead.gen, fmt.Errorf("campaign for the leader lease: %w", err)
	}
	s.lead.lease = got
	s.lead.gen = 0
	if got.Holder == node {
		s.lead.gen = got.Generation
	}
	switch {
	case s.lead.gen != 0 && was != s.lead.gen:
		s.log.Info("became leader", "node", node, "generation", got.Generation)
	case s.lead.gen == 0 && was != 0:
		s.log.Warn("lost leadership", "node", node, "leader", got.Holder, "generation", got.Generation)
	}
	return s.lead.gen, nil
}

// Leadership returns who leads as this coordinator last saw the lease.
func (s *Service) Leadership() Leadership {
	s.lead.mu.Lock()
	defer s.lead.mu.Unlock()
	return Leadership{Node: s.cfg.Node, Leader: s.lead.lease.Holder, IsLeader: s.lead.gen != 0,
		Generation: s.lead.lease.Generation, ExpiresAt: s.lead.lease.ExpiresAt}
}

// fenceKey marks a context whose transactions run for the leader: its value
// is the lease generation they must still hold.
type fenceKey struct{}

// fenced returns ctx marked so that every transaction begun with it first
// checks the leader lease is still this coordinator's, with generation gen.
func fenced(ctx context.Context, gen int64) context.Context {
	return context.WithValue(ctx, fenceKey{}, gen)
}

// fencedStore is the Store a Service uses: transactions begun with a fenced
// context check the lease first, in the same transaction, so that they
// commit only while the lease is held. Other transactions pass through.
type fencedStore struct {
	Store
	s *Service
}

func (f fencedStore) Tx(ctx context.Context, fn func(tx Tx) error) error {
	gen, ok := ctx.Value(fenceKey{}).(int64)
	if !ok {
		return f.Store.Tx(ctx, fn)
	}
	return f.Store.Tx(ctx, func(tx Tx) error {
		if err := f.s.checkFence(ctx, tx, gen); err != nil {
			return err
		}
		return fn(tx)
	})
}

// read runs fn, which only reads and needs no agreement between its
// reads, outside a transaction where the store can (Reader), else in one.
// Reads need no fence.
func (s *Service) read(ctx context.Context, fn func(tx Tx) error) error {
	if r, ok := s.cfg.Store.(Reader); ok {
		return r.Read(ctx, fn)
	}
	return s.cfg.Store.Tx(ctx, fn)
}

// checkFence returns an Unavailable error wrapping errNotLeader unless the
// lease is held by this coordinator with generation gen and not expired.
func (s *Service) checkFence(ctx context.Context, tx Tx, gen int64) error {
	l, err := tx.Lease(ctx, LeaderLease)
	if err != nil && !market.IsKind(err, market.NotFound) {
		return err
	}
	if err != nil || l.Holder != s.cfg.Node || l.Generation != gen || !s.now().Before(l.ExpiresAt) {
		return &market.Error{Op: "leader fence", Kind: market.Unavailable,
			Err: fmt.Errorf("%w (held generation %d; the lease is %s's, generation %d, until %s)",
				errNotLeader, gen, l.Holder, l.Generation, l.ExpiresAt.Format(time.RFC3339Nano))}
	}
	return nil
}

// beginPass prepares a pass of the background work: it flushes the heartbeats
// this coordinator holds in memory (every replica does), takes or renews
// the leader lease, and when this coordinator leads returns ctx fenced with
// the generation held and true.
func (s *Service) beginPass(ctx context.Context) (context.Context, bool, error) {
	flushErr := s.flushSeen(ctx)
	gen, err := s.campaign(ctx)
	if err := errors.Join(flushErr, err); err != nil || gen == 0 {
		return ctx, false, err
	}
	return fenced(ctx, gen), true, nil
}

// keep renews the lease (or tries to take it) every third of its TTL and
// flushes heartbeats every HeartbeatFlush, in real time, until ctx ends.
// It runs beside the ticks so that a long pass does not let the lease
// lapse, and so that followers take over within the TTL.
func (s *Service) keep(ctx context.Context) {
	renew := time.NewTicker(max(s.cfg.LeaseTTL/3, 10*time.Millisecond))
	defer renew.Stop()
	flush := time.NewTicker(max(s.cfg.HeartbeatFlush, 10*time.Millisecond))
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			if _, err := s.campaign(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("leader lease", "err", err)
			}
		case <-flush.C:
			if err := s.flushSeen(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("flush heartbeats", "err", err)
			}
		}
	}
}
