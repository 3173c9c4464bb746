package coord

import (
	"context"
	"errors"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// PassAs runs the leader's background work as if this coordinator held the
// leader lease with generation gen, without taking or renewing it: what a
// leader paused past its lease does when it wakes up.
func (s *Service) PassAs(ctx context.Context, gen int64) error {
	ctx = fenced(ctx, gen)
	return errors.Join(s.detectLost(ctx), s.clearSpot(ctx), s.bill(ctx))
}

// IsNotLeader reports whether err is a write refused by the leader fence.
func IsNotLeader(err error) bool { return errors.Is(err, errNotLeader) }

// FollowOnce reads the events since the last read once, as FollowChanges
// does every period, and returns how many machines' entries it refreshed.
func (s *Service) FollowOnce(ctx context.Context) (int64, error) {
	before := s.follow.refreshed.Load()
	err := s.followOnce(ctx)
	return s.follow.refreshed.Load() - before, err
}

// FlushSeen writes this coordinator's heartbeat claims and vouch now.
func (s *Service) FlushSeen(ctx context.Context) error { return s.flushSeen(ctx) }

// LoseMachine is lost-host detection's step for one machine it listed as
// silent since deadline.
func (s *Service) LoseMachine(ctx context.Context, id market.MachineID, deadline time.Time) error {
	return s.loseMachines(ctx, []market.MachineID{id}, deadline)
}

// BatchQueued is how many creates and reports wait for the next batch.
func (s *Service) BatchQueued() int {
	s.batches.mu.Lock()
	defer s.batches.mu.Unlock()
	return len(s.batches.queue)
}

// RefreshFactsPass recomputes the offer-index facts of every machine once,
// as the facts loop's first pass does, and returns how many it covered.
func (s *Service) RefreshFactsPass(ctx context.Context) (int, error) { return s.factsPass(ctx, 0) }

// OfferFacts returns the facts the offer index holds of machine id.
func (s *Service) OfferFacts(id market.MachineID) match.Facts { return s.index.Facts(id) }

// CheckSpendAlerts runs the leader tick's spend-alert pass.
func (s *Service) CheckSpendAlerts(ctx context.Context) error { return s.checkSpendAlerts(ctx) }
