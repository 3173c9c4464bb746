package coord

import (
	"context"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// The offer index's facts about a machine (reliability, verified flag,
// measured performance, bond per GPU) come from its events, its checks and
// its bond account, which change without its row changing. Every
// coordinator keeps them (keepFacts: each serves searches): once at start,
// as fast as the store answers, since until then the index knows none;
// then every machine once every factsEvery, the pass spread over half of
// that. A registration, a check's verdict or a change of bond refreshes
// its machine at once (refreshMachineFacts).
//
// A pass reads factsChunk machines at a time, outside any transaction
// (Store.Read where the adapter has one: facts are advisory, and the
// reads need not see one instant), in five statements: the machines' rows,
// their bond balances, their state events, their outcome counts and their
// newest checks (it used to read each machine's events and checks apart:
// two or three statements per machine).
// It used to refresh 200 machines per background tick (every 5 s), one
// serializable transaction of seven statements each: 40 machines a
// second, so 100,000 machines took 42 minutes, during which a restarted
// coordinator ranked and filtered offers on facts it did not have.

const (
	// factsEvery is how often, in real time, every machine's facts are
	// recomputed.
	factsEvery = 5 * time.Minute
	// factsChunk is how many machines one read of a pass covers: on
	// SQLite a read holds the one connection (a few milliseconds for 32),
	// and larger chunks were not measurably faster on either database.
	factsChunk = 32
	// factsRetry is how soon a pass that failed is tried again.
	factsRetry = 10 * time.Second
	// factsChecks is how many of each machine's newest checks a refresh
	// reads: the verified flag is the newest finished one's verdict, the
	// perf score the newest passed one's rates.
	factsChecks = 10
)

// keepFacts recomputes the facts of every machine, at once and then every
// factsEvery, until ctx ends.
func (s *Service) keepFacts(ctx context.Context) {
	spread := time.Duration(0) // the first pass: the index has no facts yet
	for {
		start := time.Now()
		wait := factsRetry
		if _, err := s.factsPass(ctx, spread); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("refresh machine facts", "err", err)
		} else {
			spread, wait = factsEvery/2, factsEvery-time.Since(start)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// factsPass recomputes the facts of every machine, a chunk at a time, the
// chunks spread evenly over spread (0: one after the other), and returns
// how many machines it covered. The machines are those of the offer index
// (every machine: RebuildIndex loads them at start, following keeps them),
// so a pass lists no rows: at 100,000 machines that was a few hundred
// megabytes read and dropped every factsEvery. A chunk that fails is
// logged and left to the next pass, so that one the store cannot read
// does not hold back the others; the pass fails only when ctx ends.
func (s *Service) factsPass(ctx context.Context, spread time.Duration) (int, error) {
	var ids []market.MachineID // every machine: RebuildIndex loaded them, following keeps them
	s.index.Each(func(m *market.Machine) { ids = append(ids, m.ID) })
	slices.Sort(ids)
	chunks := slices.Collect(slices.Chunk(ids, factsChunk))
	start, done := time.Now(), 0
	for k, chunk := range chunks {
		if wait := time.Until(start.Add(spread * time.Duration(k) / time.Duration(len(chunks)))); wait > 0 {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(wait):
			}
		}
		if err := s.refreshFactsOf(ctx, chunk); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			s.log.Warn("refresh machine facts", "machines", len(chunk), "first", chunk[0], "err", err)
			continue
		}
		done += len(chunk)
	}
	return done, nil
}

// refreshMachineFacts recomputes one machine's facts in the offer index.
func (s *Service) refreshMachineFacts(ctx context.Context, id market.MachineID) {
	if err := s.refreshFactsOf(ctx, []market.MachineID{id}); err != nil {
		s.log.Warn("refresh machine facts", "machine", id, "err", err)
	}
}

// refreshFactsOf recomputes the facts of the machines ids in the offer
// index (those the store has), in five statements however many they are
// (up to the store's list size): their rows, their bond balances, their
// state events, their outcome counts and their newest checks.
func (s *Service) refreshFactsOf(ctx context.Context, ids []market.MachineID) error {
	facts := make(map[market.MachineID]match.Facts, len(ids))
	err := s.read(ctx, func(tx Tx) error {
		clear(facts)
		ms, err := tx.Machines(ctx, MachineFilter{IDs: ids})
		if err != nil || len(ms) == 0 {
			return err
		}
		now := s.now()
		found := make([]market.MachineID, len(ms))
		bonds := make([]market.LedgerAccount, len(ms))
		spans := make([]OutcomeSpan, len(ms))
		for i, m := range ms {
			found[i], bonds[i], spans[i] = m.ID, market.MachineBond(m.Owner, m.ID), outcomeSpan(m, now)
		}
		balances, err := tx.BalancesOf(ctx, market.DefaultAsset, bonds)
		if err != nil {
			return err
		}
		evs, err := tx.Events(ctx, EventFilter{Machines: found, StatesOnly: true, LimitEach: historyLimit})
		if err != nil {
			return err
		}
		counts, err := tx.OutcomeCounts(ctx, spans)
		if err != nil {
			return err
		}
		cs, err := tx.Checks(ctx, CheckFilter{Machines: found, LimitEach: factsChecks})
		if err != nil {
			return err
		}
		states, outcomes, checks := groupBy(evs, func(e market.Event) market.MachineID { return e.Machine }),
			groupBy(counts, func(c EventCount) market.MachineID { return c.Machine }),
			groupBy(cs, func(c market.Check) market.MachineID { return c.Machine })
		for i, m := range ms {
			rel := reliabilityOf(m, states[m.ID], outcomes[m.ID], now)
			facts[m.ID] = match.Facts{ReliabilityPPM: int64(rel.Score * 1e6), Verified: lastVerdict(checks[m.ID]) && !m.Unverified,
				PerfScoreMilli: int64(perfScore(checks[m.ID]) * 1000), BondPerGPU: bondPerGPU(balances[bonds[i]], m)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id, f := range facts {
		s.index.SetFacts(id, f)
	}
	return nil
}

// groupBy groups vs by key, keeping their order within each group.
func groupBy[V any, K comparable](vs []V, key func(V) K) map[K][]V {
	out := map[K][]V{}
	for _, v := range vs {
		k := key(v)
		out[k] = append(out[k], v)
	}
	return out
}
