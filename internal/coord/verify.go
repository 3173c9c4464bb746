package coord

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// Machine verification. A host's machine proves what it claims in three
// ways: its GPU reports must be possible for their models (checked at
// registration against verify's model table), each GPU UUID may belong to
// one machine only (a second claim is refused and both machines are
// flagged for review), and its GPUs answer compute challenges: a check
// puts a nonce-bound task for each GPU into the agent's desired state; the
// agent commits to the results (Merkle roots) before a deadline set from
// the model's throughput envelope, then proves the tiles the coordinator
// picks, which the coordinator recomputes.
//
// With RequireVerification, a new machine (or one whose GPUs changed) is
// held off the market (Machine.Unverified) until a check of all its GPUs
// passes, every registration starts a check, and checks repeat at random
// times on idle GPUs. A failed check holds any machine off the market
// until a later one passes; the check's evidence is kept and shown.
//
// Challenge times are real time (RealClock), like the other deadlines
// agents keep; the events and CreatedAt use the service clock.

// DefaultCheckEvery is the mean time between periodic checks of a machine.
const DefaultCheckEvery = 6 * time.Hour

// historyLimit bounds the state events (online, listed) one reliability
// computation reads.
const historyLimit = 5000

// proofAllowance is how long after its commitment an agent may take to
// send the proofs: they need a few tiles recomputed and one round trip.
func (v *verifier) proofAllowance() time.Duration { return 2*v.table.Grace() + 10*time.Second }

// verifier is the verification state a Service keeps in memory.
type verifier struct {
	cfg   *Config
	table *verify.Table

	mu     sync.Mutex
	due    map[market.MachineID]time.Time // next periodic check, clock time
	scanAt time.Time                      // clock time of the last periodic-check scan
}

// scanEvery is how often, in clock time, the leader looks for machines due
// a periodic check: a sixtieth of the mean period, at most a minute, so a
// tick does not read every listed machine.
func (v *verifier) scanEvery() time.Duration { return min(time.Minute, v.cfg.CheckEvery/60) }

func newVerifier(cfg *Config) *verifier {
	v := &verifier{cfg: cfg, table: cfg.Models, due: map[market.MachineID]time.Time{}}
	if v.table == nil {
		t, err := verify.DefaultTable()
		if err != nil {
			// The embedded table is checked by verify's tests; an empty
			// one makes every check fail with "unknown model" rather
			// than let anything through.
			cfg.Logger.Error("model table", "err", err)
			t = &verify.Table{}
		}
		v.table = t
	}
	if cfg.RealClock == nil {
		cfg.RealClock = SystemClock{}
	}
	if cfg.CheckEvery == 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	return v
}

func (s *Service) realNow() time.Time { return s.cfg.RealClock.Now().UTC() }

// checkSpecs refuses a registration whose GPU reports are impossible for
// their models.
func (s *Service) checkSpecs(hw market.Hardware) error {
	var why []string
	for _, g := range hw.GPUs {
		why = append(why, s.verify.table.CheckSpec(g)...)
	}
	if len(why) > 0 {
		return market.Errorf("register machine", market.Invalid, "the GPU report is impossible: %s", strings.Join(why, "; "))
	}
	return nil
}

// guardUUIDs refuses a registration that claims a GPU UUID another machine
// holds. Both machines are flagged for review in a transaction of their
// own, so the flags stay although the registration is refused.
func (s *Service) guardUUIDs(ctx context.Context, caller market.Account, hw market.Hardware) error {
	uuids := make([]string, 0, len(hw.GPUs))
	for _, g := range hw.GPUs {
		uuids = append(uuids, g.UUID)
	}
	if len(uuids) == 0 {
		return nil
	}
	var refused error
	var flagged []market.MachineID
	now := s.now()
	err := s.store.Tx(ctx, func(tx Tx) error {
		refused, flagged = nil, nil
		claims, err := tx.GPUClaims(ctx, uuids)
		if err != nil {
			return err
		}
		self, err := tx.MachineByFingerprint(ctx, caller.ID, hw.Fingerprint)
		if err != nil && !market.IsKind(err, market.NotFound) {
			return err
		}
		others := map[market.MachineID][]string{}
		for u, id := range claims {
			if id != self.ID {
				others[id] = append(others[id], u)
			}
		}
		if len(others) == 0 {
			return nil
		}
		var all []string
		for _, id := range slices.Sorted(func(yield func(market.MachineID) bool) {
			for id := range others {
				if !yield(id) {
					return
				}
			}
		}) {
			us := others[id]
			slices.Sort(us)
			all = append(all, us...)
			o, err := tx.Machine(ctx, id)
			if err != nil {
				return err
			}
			o.Review = fmt.Sprintf("GPU %s was also reported by a machine of account %s (%s)", strings.Join(us, ", "), caller.ID, hw.Hostname)
			if err := tx.UpdateMachine(ctx, o); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.flagged", Account: o.Owner, Machine: o.ID, Message: o.Review}); err != nil {
				return err
			}
			flagged = append(flagged, o.ID)
		}
		slices.Sort(all)
		if self.ID != "" {
			self.Review = fmt.Sprintf("reported GPU %s, which another machine holds", strings.Join(all, ", "))
			if err := tx.UpdateMachine(ctx, self); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.flagged", Account: self.Owner, Machine: self.ID, Message: self.Review}); err != nil {
				return err
			}
			flagged = append(flagged, self.ID)
		} else if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.refused", Account: caller.ID,
			Message: fmt.Sprintf("registration of %s refused: GPU %s belongs to another machine", hw.Hostname, strings.Join(all, ", "))}); err != nil {
			return err
		}
		refused = market.Errorf("register machine", market.Conflict,
			"GPU %s is registered on another machine; a GPU can belong to one machine only, so both machines are flagged for review (if you moved the card, stop the agent on its old machine and ask an operator to release it)",
			strings.Join(all, ", "))
		return nil
	})
	if err != nil {
		return err
	}
	s.reindex(ctx, flagged...)
	return refused
}

// holdIfChanged holds a re-registered machine off the market when its
// GPUs are not the ones it had: the new ones must be verified.
func (s *Service) holdIfChanged(m *market.Machine, old market.Hardware) {
	if !s.cfg.RequireVerification {
		return
	}
	uuids := func(gs []market.GPU) []string {
		var out []string
		for _, g := range gs {
			out = append(out, g.UUID+"\x00"+g.Model)
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(uuids(m.GPUs), uuids(old.GPUs)) {
		m.Unverified = true
	}
}

// afterRegister claims the machine's GPU UUIDs and, when verification is
// required, starts a check (the agent restarted or the hardware changed):
// of every GPU of a machine held off the market, of the idle ones of a
// verified machine. A restarted agent adopts its running instances, and
// their GPUs stay their renters': a challenge would take them away for
// seconds, and, sharing the GPU with the renter's work, might be judged
// too slow. With every GPU rented there is no check until one is idle
// (the periodic checks).
func (s *Service) afterRegister(ctx context.Context, tx Tx, m *market.Machine) error {
	uuids := make([]string, 0, len(m.GPUs))
	for _, g := range m.GPUs {
		uuids = append(uuids, g.UUID)
	}
	if err := tx.ClaimGPUs(ctx, m.ID, uuids); err != nil {
		return err
	}
	if !s.cfg.RequireVerification || len(m.GPUs) == 0 {
		return nil
	}
	gpus, err := checkable(ctx, tx, m)
	if err != nil || len(gpus) == 0 {
		return err
	}
	_, err = s.startCheck(ctx, tx, m, gpus, market.CheckOnRegister)
	return err
}

// checkable returns the GPUs of m a check may take: all of a machine held
// off the market, else the idle ones.
func checkable(ctx context.Context, tx Tx, m *market.Machine) ([]market.GPU, error) {
	if m.Unverified {
		return m.GPUs, nil
	}
	used, err := tx.ActiveGPUs(ctx, []market.MachineID{m.ID})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(slices.Clone(m.GPUs), func(g market.GPU) bool { return slices.Contains(used[m.ID], g.Index) }), nil
}

// startCheck supersedes the machine's pending checks and starts a new one
// of gpus. A GPU that cannot be challenged (unknown model, a fake GPU on a
// coordinator that accepts none) fails the check at once.
func (s *Service) startCheck(ctx context.Context, tx Tx, m *market.Machine, gpus []market.GPU, cause string) (market.Check, error) {
	now, real := s.now(), s.realNow()
	pending, err := tx.Checks(ctx, CheckFilter{Machine: m.ID, State: market.CheckPending})
	if err != nil {
		return market.Check{}, err
	}
	for _, p := range pending {
		p.State, p.Failure, p.FinishedAt = market.CheckFailed, "superseded by a newer check before it was answered", ptr(real)
		if err := tx.UpdateCheck(ctx, p); err != nil {
			return market.Check{}, err
		}
	}
	c := market.Check{
		ID: market.CheckID(market.NewID(market.CheckPrefix)), Machine: m.ID, Owner: m.Owner, Cause: cause,
		State: market.CheckPending, CreatedAt: now, Nonce: market.RandomToken(16), Secret: market.RandomToken(16),
		GPUs: []market.CheckGPU{},
	}
	var problems []string
	for _, g := range gpus {
		cg, err := s.verify.table.Plan(g, s.cfg.AllowFakeGPUs)
		if err != nil {
			cg.Failure = err.Error()
			problems = append(problems, err.Error())
		}
		c.GPUs = append(c.GPUs, cg)
	}
	if err := tx.InsertCheck(ctx, c); err != nil {
		return market.Check{}, err
	}
	idx := make([]string, len(gpus))
	for i, g := range gpus {
		idx[i] = fmt.Sprint(g.Index)
	}
	if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.check", Account: m.Owner, Machine: m.ID,
		Message: fmt.Sprintf("check %s of GPUs %s started (%s)", c.ID, strings.Join(idx, ","), cause)}); err != nil {
		return market.Check{}, err
	}
	if len(problems) > 0 {
		if err := s.finishCheck(ctx, tx, m, &c, strings.Join(problems, "; ")); err != nil {
			return market.Check{}, err
		}
	}
	return c, nil
}

// finishCheck records a check's result (failure "" passes) and its effect
// on the machine: a failure holds it off the market; a pass of every GPU
// releases a hold. It writes c and, when changed, m.
func (s *Service) finishCheck(ctx context.Context, tx Tx, m *market.Machine, c *market.Check, failure string) error {
	now := s.now()
	c.FinishedAt = ptr(s.realNow())
	if failure == "" {
		c.State = market.CheckPassed
	} else {
		c.State, c.Failure = market.CheckFailed, failure
	}
	if err := tx.UpdateCheck(ctx, *c); err != nil {
		return err
	}
	ev := market.Event{At: now, Account: m.Owner, Machine: m.ID}
	if failure != "" {
		ev.Type = "machine.verify_failed"
		ev.Message = fmt.Sprintf("check %s failed: %s. The machine is off the market until a check passes (gpumarket machine verify %s)", c.ID, failure, m.ID)
		m.Unverified = true
		if err := s.slashForCheck(ctx, tx, *m, *c); err != nil {
			return err
		}
	} else {
		ev.Type = "machine.verified"
		ev.Message = fmt.Sprintf("check %s passed", c.ID)
		if m.Unverified && coversAll(*m, *c) {
			m.Unverified = false
			ev.Message += "; the machine is on the market while listed"
		}
	}
	if err := tx.UpdateMachine(ctx, *m); err != nil {
		return err
	}
	return tx.AppendEvent(ctx, ev)
}

// coversAll reports whether check c challenged every GPU of m as it is now.
func coversAll(m market.Machine, c market.Check) bool {
	for _, g := range m.GPUs {
		if !slices.ContainsFunc(c.GPUs, func(cg market.CheckGPU) bool { return cg.UUID == g.UUID && cg.Passed }) {
			return false
		}
	}
	return true
}

// challengeIn returns the machine's pending challenge for its desired
// state, issuing it (starting its clock) on the first fetch. Issuing writes:
// without write (tx only reads, Store.Read) it returns errUnissued instead.
func (s *Service) challengeIn(ctx context.Context, tx Tx, id market.MachineID, write bool) (*market.Challenge, error) {
	gen := s.noChecks.reading(id)
	cs, err := tx.Checks(ctx, CheckFilter{Machine: id, State: market.CheckPending, Limit: 1})
	if err != nil || len(cs) == 0 {
		if err == nil {
			s.noChecks.store(id, gen, struct{}{}, 0)
		}
		return nil, err
	}
	c := cs[0]
	if c.IssuedAt == nil && !write {
		return nil, errUnissued
	}
	if c.IssuedAt == nil {
		real := s.realNow()
		var allowed time.Duration
		for _, g := range c.GPUs {
			allowed = max(allowed, s.verify.table.Allowed(g))
		}
		c.IssuedAt, c.Deadline = ptr(real), ptr(real.Add(allowed))
		if err := tx.UpdateCheck(ctx, c); err != nil {
			return nil, err
		}
	}
	if c.CommittedAt != nil {
		return nil, nil // the agent has it; it is proving
	}
	ch := &market.Challenge{Check: c.ID, Protocol: verify.Protocol, Nonce: c.Nonce, Deadline: *c.Deadline}
	for _, g := range c.GPUs {
		ch.GPUs = append(ch.GPUs, market.ChallengeTask{Index: g.Index, UUID: g.UUID, TileSize: g.TileSize, Tiles: g.Tiles})
	}
	return ch, nil
}

// Service.noChecks remembers the machines that a read found without a
// pending check, so that the desired state, answered on every change of a
// machine's instances, need not read its checks each time. A check
// started here forgets the machine once committed (checkStarted); one
// started through another replica, when the follower reads its
// machine.check event.

// checkStarted follows a committed transaction that started a check of
// machine id: the desired state reads it again, and the agent's long poll
// wakes up to fetch it.
func (s *Service) checkStarted(id market.MachineID) {
	s.noChecks.forget(id)
	s.hub.notify(machineTopic(id))
}

// errUnissued: the machine's challenge is to be issued, which takes a
// transaction that may write (challengeIn).
var errUnissued = errors.New("the challenge is not issued yet")

// pendingCheck loads a check of machine m that still waits for its agent.
func pendingCheck(ctx context.Context, tx Tx, m market.MachineID, id market.CheckID, op string) (market.Check, error) {
	c, err := tx.Check(ctx, id)
	switch {
	case market.IsKind(err, market.NotFound) || (err == nil && c.Machine != m):
		return c, market.Errorf(op, market.NotFound, "check %s not found on machine %s", id, m)
	case err != nil:
		return c, err
	case c.State != market.CheckPending:
		msg := fmt.Sprintf("check %s is over (%s)", id, c.State)
		if c.Failure != "" {
			msg += ": " + c.Failure
		}
		return c, market.Errorf(op, market.Conflict, "%s", msg)
	case c.IssuedAt == nil:
		return c, market.Errorf(op, market.Conflict, "check %s has not been issued yet; fetch the desired state first", id)
	}
	return c, nil
}

// CommitChallenge records the agent's commitment to a challenge: one
// Merkle root per GPU. The time since the challenge was issued gives each
// GPU's measured rate, which must lie in its model's envelope. It answers
// with the tiles to prove; a late or out-of-envelope answer fails the
// check, which is recorded before the error is returned.
func (s *Service) CommitChallenge(ctx context.Context, caller market.Account, id market.MachineID, check market.CheckID, cm market.ChallengeCommit) (market.ChallengeSamples, error) {
	const op = "commit challenge"
	real := s.realNow()
	roots := map[string]string{}
	for _, r := range cm.Roots {
		roots[r.UUID] = r.Root
	}
	var out market.ChallengeSamples
	var failure string
	err := s.store.Tx(ctx, func(tx Tx) error {
		out, failure = market.ChallengeSamples{GPUs: []market.GPUSamples{}}, ""
		m, err := ownMachine(ctx, tx, caller, id, op)
		if err != nil {
			return err
		}
		c, err := pendingCheck(ctx, tx, id, check, op)
		if err != nil {
			return err
		}
		if c.CommittedAt != nil {
			return market.Errorf(op, market.Conflict, "check %s was committed already; send the proofs", check)
		}
		elapsed := real.Sub(*c.IssuedAt)
		var problems []string
		for i := range c.GPUs {
			g := &c.GPUs[i]
			root := roots[g.UUID]
			if b, err := hex.DecodeString(root); err != nil || len(b) != 32 {
				g.Failure = fmt.Sprintf("GPU %d: no commitment (want a 32-byte hex Merkle root for %s)", g.Index, g.UUID)
				problems = append(problems, g.Failure)
				continue
			}
			g.Root, g.ElapsedMS = root, elapsed.Milliseconds()
			rate, err := s.verify.table.Judge(*g, elapsed)
			g.Rate = rate
			if err != nil {
				g.Failure = err.Error()
				problems = append(problems, g.Failure)
				continue
			}
			g.SampleTiles = verify.SampleTiles(c.Secret, g.UUID, root, g.Tiles, g.Samples)
			out.GPUs = append(out.GPUs, market.GPUSamples{UUID: g.UUID, Tiles: g.SampleTiles})
		}
		c.CommittedAt = ptr(real)
		if len(problems) > 0 {
			failure = strings.Join(problems, "; ")
			return s.finishCheck(ctx, tx, &m, &c, failure)
		}
		return tx.UpdateCheck(ctx, c)
	})
	if err != nil {
		return market.ChallengeSamples{}, err
	}
	if failure != "" {
		s.afterCheck(ctx, id)
		return market.ChallengeSamples{}, market.Errorf(op, market.Invalid, "check %s failed: %s", check, failure)
	}
	return out, nil
}

// ProveChallenge checks the agent's proofs of the tiles asked for by
// recomputing those tiles, and finishes the check.
func (s *Service) ProveChallenge(ctx context.Context, caller market.Account, id market.MachineID, check market.CheckID, pr market.ChallengeProofs) (market.Check, error) {
	const op = "prove challenge"
	var c market.Check
	err := s.store.Tx(ctx, func(tx Tx) error {
		if _, err := ownMachine(ctx, tx, caller, id, op); err != nil {
			return err
		}
		var err error
		c, err = pendingCheck(ctx, tx, id, check, op)
		if err == nil && c.CommittedAt == nil {
			err = market.Errorf(op, market.Conflict, "check %s has no commitment yet; commit the Merkle roots first", check)
		}
		return err
	})
	if err != nil {
		return market.Check{}, err
	}
	// Recompute outside the transaction: it takes CPU time, not locks.
	proofs := map[string][]market.TileProof{}
	for _, g := range pr.GPUs {
		proofs[g.UUID] = g.Proofs
	}
	var problems []string
	late := s.realNow().Sub(*c.CommittedAt)
	if late > s.verify.proofAllowance() {
		problems = append(problems, fmt.Sprintf("the proofs came %s after the commitment; at most %s is allowed", late.Round(time.Millisecond), s.verify.proofAllowance()))
	}
	for i := range c.GPUs {
		g := &c.GPUs[i]
		task := verify.Task{Nonce: c.Nonce, UUID: g.UUID, TileSize: g.TileSize, Tiles: g.Tiles}
		if err := verify.CheckProofs(task, g.Root, g.SampleTiles, proofs[g.UUID]); err != nil {
			g.Failure = fmt.Sprintf("GPU %d: %v", g.Index, err)
			problems = append(problems, g.Failure)
			continue
		}
		g.Passed = late <= s.verify.proofAllowance()
	}
	committed := *c.CommittedAt
	err = s.store.Tx(ctx, func(tx Tx) error {
		now, err := tx.Check(ctx, check)
		if err != nil {
			return err
		}
		if now.State != market.CheckPending || now.CommittedAt == nil || !now.CommittedAt.Equal(committed) {
			return market.Errorf(op, market.Conflict, "check %s changed while its proofs were checked; it is %s", check, now.State)
		}
		m, err := tx.Machine(ctx, id)
		if err != nil {
			return err
		}
		cc := c
		return s.finishCheck(ctx, tx, &m, &cc, strings.Join(problems, "; "))
	})
	if err != nil {
		return market.Check{}, err
	}
	s.afterCheck(ctx, id)
	return s.checkByID(ctx, check)
}

func (s *Service) checkByID(ctx context.Context, id market.CheckID) (market.Check, error) {
	var c market.Check
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		c, err = tx.Check(ctx, id)
		return err
	})
	return c, err
}

// afterCheck refreshes what a finished check changes outside the store:
// the offer index (a hold set or lifted) and the machine's facts.
func (s *Service) afterCheck(ctx context.Context, id market.MachineID) {
	s.reindex(ctx, id)
	s.refreshMachineFacts(ctx, id)
	s.verify.mu.Lock()
	delete(s.verify.due, id)
	s.verify.mu.Unlock()
}

// RequestCheck starts a check of a machine now (machine verify), or
// returns the one pending. It challenges the idle GPUs, or all of them
// when the machine is held off the market.
func (s *Service) RequestCheck(ctx context.Context, caller market.Account, id market.MachineID) (market.Check, error) {
	const op = "verify machine"
	var c market.Check
	err := s.store.Tx(ctx, func(tx Tx) error {
		m, err := ownMachine(ctx, tx, caller, id, op)
		if err != nil {
			return err
		}
		if !m.Online {
			return market.Errorf(op, market.Unavailable, "machine %s is offline; start its agent (gpumarket agent) and try again", id)
		}
		if len(m.GPUs) == 0 {
			return market.Errorf(op, market.Invalid, "machine %s reported no GPUs; there is nothing to verify", id)
		}
		pending, err := tx.Checks(ctx, CheckFilter{Machine: id, State: market.CheckPending, Limit: 1})
		if err != nil {
			return err
		}
		if len(pending) > 0 {
			c = pending[0]
			return nil
		}
		gpus, err := checkable(ctx, tx, &m)
		if err != nil {
			return err
		}
		if len(gpus) == 0 {
			return market.Errorf(op, market.Conflict, "every GPU of machine %s is rented; checks run on idle GPUs, so try again when one is free", id)
		}
		c, err = s.startCheck(ctx, tx, &m, gpus, market.CheckRequested)
		return err
	})
	if err != nil {
		return market.Check{}, err
	}
	s.checkStarted(id)
	if c.State != market.CheckPending {
		s.afterCheck(ctx, id)
	}
	return c, nil
}

// MachineVerification returns a machine's checks, newest first, and its
// reliability with the formula's terms. Whoever may see the machine may
// see them: the evidence and the score are public.
func (s *Service) MachineVerification(ctx context.Context, caller market.Account, id market.MachineID) (market.MachineVerification, error) {
	m, err := s.Machine(ctx, caller, id)
	if err != nil {
		return market.MachineVerification{}, err
	}
	var checks []market.Check
	var rel market.Reliability
	var bond market.Bond
	err = s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if checks, err = tx.Checks(ctx, CheckFilter{Machine: id, Limit: 100}); err != nil {
			return err
		}
		if bond, err = bondOf(ctx, tx, m); err != nil {
			return err
		}
		rel, err = s.reliability(ctx, tx, m)
		return err
	})
	if err != nil {
		return market.MachineVerification{}, err
	}
	if checks == nil {
		checks = []market.Check{}
	}
	return market.MachineVerification{Machine: id, Verified: lastVerdict(checks), Unverified: m.Unverified, Review: m.Review, Checks: checks,
		Reliability: rel, PerfScore: perfScore(checks), Bond: bond}, nil
}

// perfScore is a machine's perf_score from its checks, newest first: the
// mean rate of the GPUs that its newest passed check measured (from the
// challenge's issue to the agent's commitment, so a lower bound), in
// trillions of multiply-adds per second; 0 without such a check.
func perfScore(checks []market.Check) float64 {
	for _, c := range checks {
		if c.State != market.CheckPassed {
			continue
		}
		var sum float64
		n := 0
		for _, g := range c.GPUs {
			if g.Passed && g.Rate > 0 {
				sum, n = sum+g.Rate, n+1
			}
		}
		if n > 0 {
			return sum / float64(n) / 1e12
		}
	}
	return 0
}

// lastVerdict reports whether the newest finished check passed.
func lastVerdict(checks []market.Check) bool {
	for _, c := range checks {
		if c.State != market.CheckPending {
			return c.State == market.CheckPassed
		}
	}
	return false
}

// reliability computes a machine's score from its events, in two reads
// whatever its history: the events that say whether it was online and
// listed (EventFilter.StatesOnly, a handful per machine; its newest
// historyLimit), and its outcomes in the window (instance ends and check
// verdicts), which the store counts by type and message (OutcomeCounts).
// It used to read the machine's newest historyLimit events of every type,
// so that a machine busy with short rentals, thousands of events a day,
// had most of its window's outcomes left out of its counts. The facts
// pass reads the same for many machines at once (refreshFactsOf).
func (s *Service) reliability(ctx context.Context, tx Tx, m market.Machine) (market.Reliability, error) {
	now := s.now()
	states, err := tx.Events(ctx, EventFilter{Machine: m.ID, StatesOnly: true, Limit: historyLimit})
	if err != nil {
		return market.Reliability{}, err
	}
	counts, err := tx.OutcomeCounts(ctx, []OutcomeSpan{outcomeSpan(m, now)})
	if err != nil {
		return market.Reliability{}, err
	}
	return reliabilityOf(m, states, counts, now), nil
}

// outcomeSpan is the span of m's reliability window ending at now: the
// last verify.Window, from its registration if that is later.
func outcomeSpan(m market.Machine, now time.Time) OutcomeSpan {
	start := now.Add(-verify.Window) // as verify.Reliability says it
	if m.CreatedAt.After(start) {
		start = m.CreatedAt
	}
	return OutcomeSpan{Machine: m.ID, From: start, To: now}
}

// reliabilityOf computes m's score at now from its state events and its
// outcome counts over outcomeSpan.
func reliabilityOf(m market.Machine, states []market.Event, counts []EventCount, now time.Time) market.Reliability {
	h := make([]verify.HistoryEvent, 0, len(states)+len(counts))
	for _, e := range states {
		if he, ok := historyEvent(e.Type, e.Message); ok {
			he.At = e.At
			h = append(h, he)
		}
	}
	for _, c := range counts {
		if he, ok := historyEvent(c.Type, c.Message); ok {
			he.At, he.Count = now, c.N // in the window: when does not matter
			h = append(h, he)
		}
	}
	return verify.Reliability(m.CreatedAt, h, now, verify.Window)
}

// historyEvent says what reliability counts of an event of type typ with
// message msg (all but its time), and whether it counts it at all.
func historyEvent(typ, msg string) (verify.HistoryEvent, bool) {
	var he verify.HistoryEvent
	switch typ {
	case "machine.registered", "machine.online":
		he.Kind = verify.Online
	case "machine.offline":
		he.Kind = verify.Offline
	case "machine.listed":
		he.Kind = verify.Listed
	case "machine.unlisted":
		he.Kind = verify.Unlisted
	case "instance.failed", "instance.stopped", "instance.preempted":
		he.Kind, he.Fault = verify.Ended, verify.ClassifyEnd(typ, msg)
	case "machine.verified":
		he.Kind = verify.CheckPassed
	case "machine.verify_failed":
		he.Kind = verify.CheckFailed
	default:
		return he, false
	}
	return he, true
}

// tickVerify is the leader's verification pass: it fails checks whose
// agent did not answer in time and, when verification is required, starts
// checks at random times on idle GPUs of listed machines.
func (s *Service) tickVerify(ctx context.Context) error {
	if err := s.expireChecks(ctx); err != nil {
		return fmt.Errorf("expire checks: %w", err)
	}
	if !s.cfg.RequireVerification || s.cfg.CheckEvery < 0 {
		return nil
	}
	return s.scheduleChecks(ctx)
}

func (s *Service) expireChecks(ctx context.Context) error {
	var pending []market.Check
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		pending, err = tx.Checks(ctx, CheckFilter{State: market.CheckPending})
		return err
	})
	if err != nil {
		return err
	}
	real := s.realNow()
	for _, c := range pending {
		var failure string
		switch {
		case c.CommittedAt != nil && real.Sub(*c.CommittedAt) > s.verify.proofAllowance():
			failure = fmt.Sprintf("the agent committed but sent no proofs within %s", s.verify.proofAllowance())
		case c.CommittedAt == nil && c.Deadline != nil && real.After(*c.Deadline):
			failure = fmt.Sprintf("the agent did not commit before the deadline (%s after the challenge was issued)", c.Deadline.Sub(*c.IssuedAt).Round(time.Millisecond))
		default:
			continue
		}
		var finished bool
		err := s.store.Tx(ctx, func(tx Tx) error {
			finished = false
			now, err := tx.Check(ctx, c.ID)
			if err != nil || now.State != market.CheckPending {
				return err
			}
			m, err := tx.Machine(ctx, c.Machine)
			if err != nil {
				return err
			}
			for i := range now.GPUs {
				if now.GPUs[i].Failure == "" {
					now.GPUs[i].Failure = failure
				}
			}
			finished = true
			return s.finishCheck(ctx, tx, &m, &now, failure)
		})
		if err != nil {
			return err
		}
		if finished {
			s.afterCheck(ctx, c.Machine)
		}
	}
	return nil
}

// scheduleChecks starts a periodic check on each listed, online, verified
// machine whose next check time has come. That time is its last check's
// plus CheckEvery scaled by a factor in [0.5, 1.5) drawn from the check's
// ID, so hosts cannot predict it and every coordinator computes the same.
func (s *Service) scheduleChecks(ctx context.Context) error {
	now := s.now()
	s.verify.mu.Lock()
	skip := !s.verify.scanAt.IsZero() && now.Sub(s.verify.scanAt) < s.verify.scanEvery()
	if !skip {
		s.verify.scanAt = now
	}
	s.verify.mu.Unlock()
	if skip {
		return nil
	}
	t := true
	var ms []market.Machine
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		ms, err = tx.Machines(ctx, MachineFilter{Listed: &t, Online: &t})
		return err
	})
	if err != nil {
		return err
	}
	if err := s.fillAll(ctx, ms); err != nil {
		return err
	}
	for _, m := range ms {
		free := m.FreeGPUs()
		if m.Unverified || len(free) == 0 || !m.Online {
			continue
		}
		s.verify.mu.Lock()
		due, ok := s.verify.due[m.ID]
		s.verify.mu.Unlock()
		if !ok {
			var last []market.Check
			err := s.store.Tx(ctx, func(tx Tx) error {
				var err error
				last, err = tx.Checks(ctx, CheckFilter{Machine: m.ID, Limit: 1})
				return err
			})
			if err != nil {
				return err
			}
			base, seed := m.CreatedAt, string(m.ID)
			if len(last) > 0 {
				if last[0].State == market.CheckPending {
					continue
				}
				base, seed = last[0].CreatedAt, string(last[0].ID)
			}
			due = base.Add(jitter(s.cfg.CheckEvery, seed))
			s.verify.mu.Lock()
			s.verify.due[m.ID] = due
			s.verify.mu.Unlock()
		}
		if now.Before(due) {
			continue
		}
		var gpus []market.GPU
		for _, g := range m.GPUs {
			if slices.Contains(free, g.Index) {
				gpus = append(gpus, g)
			}
		}
		var started market.Check
		err := s.store.Tx(ctx, func(tx Tx) error {
			cur, err := tx.Machine(ctx, m.ID)
			if err != nil {
				return err
			}
			started, err = s.startCheck(ctx, tx, &cur, gpus, market.CheckPeriodic)
			return err
		})
		if err != nil {
			return fmt.Errorf("start a check of %s: %w", m.ID, err)
		}
		s.verify.mu.Lock()
		delete(s.verify.due, m.ID)
		s.verify.mu.Unlock()
		s.checkStarted(m.ID)
		if started.State != market.CheckPending {
			s.afterCheck(ctx, m.ID)
		}
	}
	return nil
}

// jitter scales every by a factor in [0.5, 1.5) drawn from seed.
func jitter(every time.Duration, seed string) time.Duration {
	h := sha256.Sum256([]byte(seed))
	f := 0.5 + float64(binary.BigEndian.Uint64(h[:8])>>11)/float64(1<<53)
	return time.Duration(float64(every) * f)
}
