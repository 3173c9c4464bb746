package coord_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// vEnv is a coordinator that requires verification, with a fake billing
// clock and a fake real clock for challenge timing.
type vEnv struct {
	t     *testing.T
	ctx   context.Context
	store coord.Store
	svc   *coord.Service
	clock *fakeClock
	real  *fakeClock
	admin market.Account
	host  market.Account
	other market.Account
}

func newVEnv(t *testing.T, mod func(*coord.Config)) *vEnv {
	t.Helper()
	return newVEnvOn(t, testStore(t), mod)
}

// newVEnvOn is newVEnv on store (which it closes at the end).
func newVEnvOn(t *testing.T, store coord.Store, mod func(*coord.Config)) *vEnv {
	t.Helper()
	ctx := t.Context()
	e := &vEnv{t: t, ctx: ctx, clock: &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}, real: &fakeClock{t: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}}
	cfg := coord.Config{Store: store, Clock: e.clock, RealClock: e.real, Passwords: plainPasswords{}, RequireVerification: true, AllowFakeGPUs: true}
	if mod != nil {
		mod(&cfg)
	}
	e.store = store
	e.svc = coord.New(cfg)
	e.admin = must(e.svc.CreateAccount(ctx, "admin@example.com", "password1", []market.Role{market.RoleAdmin}))
	e.host = must(e.svc.Signup(ctx, market.SignupRequest{Email: "host@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}}))
	e.other = must(e.svc.Signup(ctx, market.SignupRequest{Email: "other@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}}))
	return e
}

func fakeHW(t *testing.T, fp, spec string) market.Hardware {
	t.Helper()
	gpus, err := fake.Parse(spec, fp)
	if err != nil {
		t.Fatal(err)
	}
	return market.Hardware{Fingerprint: fp, Hostname: "box-" + fp, Runner: "process", CPUCores: 8, RAMMiB: 32768, GPUs: gpus}
}

// register registers hw for the host and lists it at 0.50 per GPU-hour.
func (e *vEnv) register(host market.Account, hw market.Hardware) market.Machine {
	e.t.Helper()
	m, err := e.svc.RegisterMachine(e.ctx, host, hw)
	if err != nil {
		e.t.Fatalf("register: %v", err)
	}
	price := market.Money(500_000)
	must(e.svc.UpdateMachine(e.ctx, host, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	return must(e.svc.SetListed(e.ctx, host, m.ID, true))
}

func (e *vEnv) challenge(host market.Account, id market.MachineID) *market.Challenge {
	e.t.Helper()
	ds := must(e.svc.Desired(e.ctx, host, id, -1, 0))
	return ds.Challenge
}

// solved is an agent's work on a challenge: a solution per GPU.
type solved struct {
	ch   market.Challenge
	sols map[string]*verify.Solution
}

func (e *vEnv) solve(ch *market.Challenge) solved {
	e.t.Helper()
	if ch == nil {
		e.t.Fatal("no challenge in the desired state")
	}
	s := solved{ch: *ch, sols: map[string]*verify.Solution{}}
	for _, g := range ch.GPUs {
		sol, err := verify.CPUSolver{}.Solve(e.ctx, verify.TaskOf(ch.Nonce, g))
		if err != nil {
			e.t.Fatal(err)
		}
		s.sols[g.UUID] = sol
	}
	return s
}

func (s solved) commit() market.ChallengeCommit {
	var cm market.ChallengeCommit
	for _, g := range s.ch.GPUs {
		cm.Roots = append(cm.Roots, market.GPURoot{UUID: g.UUID, Root: s.sols[g.UUID].Root()})
	}
	return cm
}

func (e *vEnv) proofs(s solved, samples market.ChallengeSamples) market.ChallengeProofs {
	e.t.Helper()
	var pr market.ChallengeProofs
	for _, g := range samples.GPUs {
		gp := market.GPUProofs{UUID: g.UUID}
		for _, tile := range g.Tiles {
			gp.Proofs = append(gp.Proofs, must(s.sols[g.UUID].Prove(tile)))
		}
		pr.GPUs = append(pr.GPUs, gp)
	}
	return pr
}

// answer plays an honest agent: fetch, solve (20 ms of real time pass),
// commit, prove.
func (e *vEnv) answer(host market.Account, id market.MachineID) (market.Check, error) {
	e.t.Helper()
	s := e.solve(e.challenge(host, id))
	samples, err := e.commit(host, id, s.ch.Check, s.commit())
	if err != nil {
		return market.Check{}, err
	}
	return e.svc.ProveChallenge(e.ctx, host, id, s.ch.Check, e.proofs(s, samples))
}

// commit sends a commitment 20 ms of real time after now, about what the
// CPU path takes for a fake GPU.
func (e *vEnv) commit(host market.Account, id market.MachineID, check market.CheckID, cm market.ChallengeCommit) (market.ChallengeSamples, error) {
	e.real.Advance(20 * time.Millisecond)
	return e.svc.CommitChallenge(e.ctx, host, id, check, cm)
}

func (e *vEnv) machine(id market.MachineID) market.Machine {
	return must(e.svc.Machine(e.ctx, e.admin, id))
}

func (e *vEnv) offers() []market.MachineID {
	var ids []market.MachineID
	for _, o := range must(e.svc.Offers(e.ctx, market.OfferFilter{})) {
		ids = append(ids, o.Machine)
	}
	return ids
}

func (e *vEnv) events(id market.MachineID, typ string) []market.Event {
	var out []market.Event
	err := e.store.Tx(e.ctx, func(tx coord.Tx) error {
		var err error
		out, err = tx.Events(e.ctx, coord.EventFilter{Machine: id, Type: typ})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func wantErr(t *testing.T, err error, kind market.Kind, substr string) {
	t.Helper()
	if err == nil || market.KindOf(err) != kind || !strings.Contains(err.Error(), substr) {
		t.Fatalf("got %v, want a %v error containing %q", err, kind, substr)
	}
}

// On Postgres too, whose desired state is read outside a transaction:
// issuing the check (its deadline) is a write, which needs one.
func TestHonestMachineIsListedAfterItsCheck(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testHonestMachineIsListedAfterItsCheck(t, newVEnv(t, nil)) })
	t.Run("postgres", func(t *testing.T) {
		store, err := postgres.Open(t.Context(), pgtest.FreshDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		testHonestMachineIsListedAfterItsCheck(t, newVEnvOn(t, store, nil))
	})
}

func testHonestMachineIsListedAfterItsCheck(t *testing.T, e *vEnv) {
	m := e.register(e.host, fakeHW(t, "fp-1", "2xRTX 4090"))
	if m.Status != market.MachineUnverified || !m.Unverified {
		t.Fatalf("a new machine should wait for its check, got status %s", m.Status)
	}
	if got := e.offers(); len(got) != 0 {
		t.Fatalf("an unverified machine is on offer: %v", got)
	}
	c, err := e.answer(e.host, m.ID)
	if err != nil {
		t.Fatalf("honest answer refused: %v", err)
	}
	if c.State != market.CheckPassed || len(c.GPUs) != 2 || !c.GPUs[0].Passed || c.GPUs[0].Rate <= 0 || len(c.GPUs[1].SampleTiles) == 0 {
		t.Fatalf("check = %+v", c)
	}
	if got := e.machine(m.ID); got.Status != market.MachineListed || got.Unverified {
		t.Fatalf("after passing the machine is %s", got.Status)
	}
	if got := e.offers(); len(got) != 1 || got[0] != m.ID {
		t.Fatalf("offers = %v, want the machine", got)
	}
	if len(e.events(m.ID, "machine.verified")) != 1 || len(e.events(m.ID, "machine.check")) != 1 {
		t.Error("missing machine.check or machine.verified event")
	}
	// The challenge leaves the desired state once answered.
	if ch := e.challenge(e.host, m.ID); ch != nil {
		t.Errorf("challenge still pending: %+v", ch)
	}
	v := must(e.svc.MachineVerification(e.ctx, e.host, m.ID))
	if !v.Verified || len(v.Checks) != 1 || v.Reliability.Formula == "" {
		t.Errorf("verification view = %+v", v)
	}
	// A restarted agent gets a new check but stays on the market.
	must(e.svc.RegisterMachine(e.ctx, e.host, fakeHW(t, "fp-1", "2xRTX 4090")))
	if ch := e.challenge(e.host, m.ID); ch == nil || ch.Check == c.ID {
		t.Fatalf("no new check after a restart: %+v", ch)
	}
	if got := e.machine(m.ID); got.Status != market.MachineListed {
		t.Errorf("a restart took the machine off the market: %s", got.Status)
	}
	// A hardware change holds it until its new GPUs pass.
	must(e.svc.RegisterMachine(e.ctx, e.host, fakeHW(t, "fp-1", "3xRTX 4090")))
	if got := e.machine(m.ID); got.Status != market.MachineUnverified {
		t.Errorf("after a GPU change the machine is %s, want unverified", got.Status)
	}
	if _, err := e.answer(e.host, m.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.machine(m.ID); got.Status != market.MachineListed {
		t.Errorf("after the new GPUs passed the machine is %s", got.Status)
	}
}

func TestWithoutRequirementMachinesListAtOnce(t *testing.T) {
	e := newVEnv(t, func(c *coord.Config) { c.RequireVerification = false })
	m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
	if m.Status != market.MachineListed || e.challenge(e.host, m.ID) != nil {
		t.Fatalf("status %s; want listed with no check", m.Status)
	}
	// machine verify still works, and a failure delists.
	c := must(e.svc.RequestCheck(e.ctx, e.host, m.ID))
	if c.State != market.CheckPending || c.Cause != market.CheckRequested {
		t.Fatalf("check = %+v", c)
	}
	s := e.solve(e.challenge(e.host, m.ID))
	samples := must(e.commit(e.host, m.ID, s.ch.Check, s.commit()))
	pr := e.proofs(s, samples)
	flipDigest(&pr.GPUs[0].Proofs[0], 0xff)
	c = must(e.svc.ProveChallenge(e.ctx, e.host, m.ID, s.ch.Check, pr))
	if c.State != market.CheckFailed || !strings.Contains(c.Failure, "not that of the product") {
		t.Fatalf("a wrong part passed: %+v", c)
	}
	if got := e.machine(m.ID); got.Status != market.MachineUnverified {
		t.Errorf("after a failed check the machine is %s", got.Status)
	}
}

func TestSpoofersFailVerification(t *testing.T) {
	t.Run("impossible spec is refused", func(t *testing.T) {
		e := newVEnv(t, nil)
		hw := fakeHW(t, "fp-1", "H100")
		hw.GPUs[0].VRAMMiB = 24576
		_, err := e.svc.RegisterMachine(e.ctx, e.host, hw)
		wantErr(t, err, market.Invalid, "24576 MiB of memory, but a NVIDIA H100 80GB HBM3 has 81559 MiB")
	})
	t.Run("consistent lie about the model fails the challenge", func(t *testing.T) {
		// A CPU that claims to be an H100 with every figure right gets an
		// H100's task, which the CPU path refuses and could not finish.
		e := newVEnv(t, func(c *coord.Config) { c.AllowFakeGPUs = false })
		hw := fakeHW(t, "fp-1", "H100")
		hw.GPUs[0].UUID = "GPU-8f3c2a10-1111-2222-3333-444455556666"
		m := e.register(e.host, hw)
		ch := e.challenge(e.host, m.ID)
		if ch == nil || ch.GPUs[0].Tiles < 1<<20 {
			t.Fatalf("want an H100-sized challenge, got %+v", ch)
		}
		if _, err := (verify.CPUSolver{}).Solve(e.ctx, verify.TaskOf(ch.Nonce, ch.GPUs[0])); err == nil {
			t.Fatal("the CPU solver took an H100 task")
		}
		// Had it tried, it would be late: a CPU does ~1e9 multiply-adds a second.
		e.real.Advance(time.Hour)
		_, err := e.commit(e.host, m.ID, ch.Check, market.ChallengeCommit{Roots: []market.GPURoot{{UUID: hw.GPUs[0].UUID, Root: strings.Repeat("ab", 32)}}})
		wantErr(t, err, market.Invalid, "must answer within")
		if got := e.machine(m.ID); got.Status != market.MachineUnverified {
			t.Errorf("status %s", got.Status)
		}
	})
	t.Run("fake GPUs are refused where not allowed", func(t *testing.T) {
		e := newVEnv(t, func(c *coord.Config) { c.AllowFakeGPUs = false })
		m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
		v := must(e.svc.MachineVerification(e.ctx, e.host, m.ID))
		if len(v.Checks) != 1 || v.Checks[0].State != market.CheckFailed || !strings.Contains(v.Checks[0].Failure, "fake GPU") {
			t.Fatalf("checks = %+v", v.Checks)
		}
	})
	t.Run("reused UUIDs are refused and both machines flagged", func(t *testing.T) {
		e := newVEnv(t, nil)
		first := e.register(e.host, fakeHW(t, "fp-1", "2xRTX 4090"))
		hw := fakeHW(t, "fp-2", "RTX 4090")
		hw.GPUs[0].UUID = first.GPUs[1].UUID
		_, err := e.svc.RegisterMachine(e.ctx, e.other, hw)
		wantErr(t, err, market.Conflict, "registered on another machine")
		if got := e.machine(first.ID); !strings.Contains(got.Review, "also reported") {
			t.Errorf("first machine not flagged: %q", got.Review)
		}
		// The same host re-registering a machine with a stolen UUID: both flagged.
		second := e.register(e.other, fakeHW(t, "fp-3", "RTX 4090"))
		hw = fakeHW(t, "fp-3", "RTX 4090")
		hw.GPUs[0].UUID = first.GPUs[0].UUID
		_, err = e.svc.RegisterMachine(e.ctx, e.other, hw)
		wantErr(t, err, market.Conflict, first.GPUs[0].UUID)
		if got := e.machine(second.ID); got.Review == "" {
			t.Error("second machine not flagged")
		}
		if len(e.events(first.ID, "machine.flagged")) != 2 {
			t.Error("want a machine.flagged event per attempt on the first machine")
		}
	})
	t.Run("a replayed answer fails", func(t *testing.T) {
		e := newVEnv(t, nil)
		m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
		old := e.solve(e.challenge(e.host, m.ID))
		oldSamples := must(e.commit(e.host, m.ID, old.ch.Check, old.commit()))
		oldProofs := e.proofs(old, oldSamples)
		must(e.svc.ProveChallenge(e.ctx, e.host, m.ID, old.ch.Check, oldProofs))
		// The old check is over: sending its answer again is refused.
		_, err := e.commit(e.host, m.ID, old.ch.Check, old.commit())
		wantErr(t, err, market.Conflict, "is over")
		// A new check answered with the old roots and proofs fails.
		c := must(e.svc.RequestCheck(e.ctx, e.host, m.ID))
		ch := e.challenge(e.host, m.ID)
		if ch.Check != c.ID || ch.Nonce == old.ch.Nonce {
			t.Fatalf("new challenge %+v", ch)
		}
		samples := must(e.commit(e.host, m.ID, c.ID, old.commit()))
		got := must(e.svc.ProveChallenge(e.ctx, e.host, m.ID, c.ID, e.proofs(old, samples)))
		if got.State != market.CheckFailed || !strings.Contains(got.Failure, "not that of the product") {
			t.Fatalf("replayed answer: %+v", got)
		}
	})
	t.Run("too slow an answer fails", func(t *testing.T) {
		e := newVEnv(t, nil)
		m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
		s := e.solve(e.challenge(e.host, m.ID))
		e.real.Advance(10 * time.Second) // the fake envelope allows ~4 s; commit adds 20 ms
		_, err := e.commit(e.host, m.ID, s.ch.Check, s.commit())
		wantErr(t, err, market.Invalid, "must answer within")
		v := must(e.svc.MachineVerification(e.ctx, e.host, m.ID))
		if c := v.Checks[0]; c.State != market.CheckFailed || c.GPUs[0].ElapsedMS != 10020 || c.GPUs[0].Rate <= 0 {
			t.Fatalf("evidence = %+v", c)
		}
	})
	t.Run("a wrong part fails", func(t *testing.T) {
		e := newVEnv(t, nil)
		m := e.register(e.host, fakeHW(t, "fp-1", "2xRTX 3090"))
		s := e.solve(e.challenge(e.host, m.ID))
		samples := must(e.commit(e.host, m.ID, s.ch.Check, s.commit()))
		pr := e.proofs(s, samples)
		flipDigest(&pr.GPUs[1].Proofs[2], 1)
		c := must(e.svc.ProveChallenge(e.ctx, e.host, m.ID, s.ch.Check, pr))
		if c.State != market.CheckFailed || c.GPUs[1].Passed || !c.GPUs[0].Passed || !strings.Contains(c.GPUs[1].Failure, "GPU 1: tile") {
			t.Fatalf("check = %+v", c)
		}
		if got := e.machine(m.ID); got.Status != market.MachineUnverified {
			t.Errorf("status %s", got.Status)
		}
		if evs := e.events(m.ID, "machine.verify_failed"); len(evs) != 1 || !strings.Contains(evs[0].Message, "machine verify") {
			t.Errorf("failure event = %+v", evs)
		}
	})
	t.Run("no answer expires", func(t *testing.T) {
		e := newVEnv(t, nil)
		m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
		e.challenge(e.host, m.ID) // issued
		must(0, e.svc.Tick(e.ctx))
		if v := must(e.svc.MachineVerification(e.ctx, e.host, m.ID)); v.Checks[0].State != market.CheckPending {
			t.Fatal("expired before its deadline")
		}
		e.real.Advance(time.Minute)
		must(0, e.svc.Tick(e.ctx))
		v := must(e.svc.MachineVerification(e.ctx, e.host, m.ID))
		if v.Checks[0].State != market.CheckFailed || !strings.Contains(v.Checks[0].Failure, "did not commit before the deadline") {
			t.Fatalf("check = %+v", v.Checks[0])
		}
	})
	t.Run("another host cannot answer", func(t *testing.T) {
		e := newVEnv(t, nil)
		m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
		s := e.solve(e.challenge(e.host, m.ID))
		_, err := e.commit(e.other, m.ID, s.ch.Check, s.commit())
		wantErr(t, err, market.NotFound, "not found")
	})
}

func TestRequestCheck(t *testing.T) {
	e := newVEnv(t, nil)
	m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
	pending := must(e.svc.RequestCheck(e.ctx, e.host, m.ID))
	if v := must(e.svc.MachineVerification(e.ctx, e.host, m.ID)); pending.ID != v.Checks[0].ID {
		t.Errorf("a request while one is pending should return it")
	}
	_, err := e.svc.RequestCheck(e.ctx, e.other, m.ID)
	wantErr(t, err, market.NotFound, "not found")
	if _, err := e.answer(e.host, m.ID); err != nil {
		t.Fatal(err)
	}
	// Offline machines cannot be checked.
	e.clock.Advance(10 * time.Minute)
	must(0, e.svc.Tick(e.ctx))
	_, err = e.svc.RequestCheck(e.ctx, e.host, m.ID)
	wantErr(t, err, market.Unavailable, "offline")
}

// A check requested through one replica reaches the agent through another
// once that one follows the changes, though it had found the machine
// without a check (and no longer reads its checks each time).
func TestCheckThroughAnotherReplica(t *testing.T) {
	e := newVEnv(t, nil)
	m := e.register(e.host, fakeHW(t, "fp-1", "RTX 4090"))
	if _, err := e.answer(e.host, m.ID); err != nil {
		t.Fatal(err)
	}
	other := coord.New(coord.Config{Store: e.store, Clock: e.clock, RealClock: e.real, Passwords: plainPasswords{}, RequireVerification: true, AllowFakeGPUs: true})
	if err := other.RebuildIndex(e.ctx); err != nil {
		t.Fatal(err)
	}
	must(other.FollowOnce(e.ctx))
	desired := func(svc *coord.Service) *market.Challenge {
		return must(svc.Desired(e.ctx, e.host, m.ID, -1, 0)).Challenge
	}
	for range 2 {
		if ch := desired(other); ch != nil {
			t.Fatalf("a challenge before any was requested: %+v", ch)
		}
	}
	c := must(e.svc.RequestCheck(e.ctx, e.host, m.ID))
	if ch := desired(e.svc); ch == nil || ch.Check != c.ID {
		t.Fatalf("the replica that started check %s answers %+v", c.ID, ch)
	}
	must(other.FollowOnce(e.ctx))
	if ch := desired(other); ch == nil || ch.Check != c.ID {
		t.Fatalf("the other replica answers %+v after following; want check %s", ch, c.ID)
	}
}

func TestPeriodicChecksRunOnIdleGPUs(t *testing.T) {
	e := newVEnv(t, func(c *coord.Config) { c.CheckEvery = time.Hour })
	m := e.register(e.host, fakeHW(t, "fp-1", "2xRTX 4090"))
	if _, err := e.answer(e.host, m.ID); err != nil {
		t.Fatal(err)
	}
	renter := must(e.svc.Signup(e.ctx, market.SignupRequest{Email: "r@example.com", Password: "password1", Roles: []market.Role{market.RoleRenter}}))
	must(e.svc.Deposit(e.ctx, e.admin, "dep-1", market.DepositRequest{Account: renter.ID, Amount: market.Tokens(100)}))
	must(e.svc.CreateInstance(e.ctx, renter, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "1"}}))
	for range 10 { // 1.5 h at most, heartbeats every 10 min
		e.clock.Advance(9 * time.Minute)
		must(e.svc.Report(e.ctx, e.host, m.ID, market.Report{}))
		must(0, e.svc.Tick(e.ctx))
		if ch := e.challenge(e.host, m.ID); ch != nil {
			if len(ch.GPUs) != 1 || ch.GPUs[0].Index != 1 {
				t.Fatalf("the periodic check should take only the idle GPU 1, got %+v", ch.GPUs)
			}
			v := must(e.svc.MachineVerification(e.ctx, e.host, m.ID))
			if v.Checks[0].Cause != market.CheckPeriodic {
				t.Errorf("cause %q", v.Checks[0].Cause)
			}
			return
		}
	}
	t.Fatal("no periodic check within 1.5 x CheckEvery")
}

// An agent restart checks the idle GPUs of a verified machine: its
// adopted instances keep theirs. With every GPU rented, no check starts.
func TestRestartChecksOnlyIdleGPUs(t *testing.T) {
	e := newVEnv(t, nil)
	hw := fakeHW(t, "fp-1", "2xRTX 4090")
	m := e.register(e.host, hw)
	if ch := e.challenge(e.host, m.ID); ch == nil || len(ch.GPUs) != 2 {
		t.Fatalf("a new machine's check should take both GPUs, got %+v", ch)
	}
	if _, err := e.answer(e.host, m.ID); err != nil {
		t.Fatal(err)
	}
	renter := must(e.svc.Signup(e.ctx, market.SignupRequest{Email: "r@example.com", Password: "password1", Roles: []market.Role{market.RoleRenter}}))
	must(e.svc.Deposit(e.ctx, e.admin, "dep-1", market.DepositRequest{Account: renter.ID, Amount: market.Tokens(100)}))
	must(e.svc.CreateInstance(e.ctx, renter, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "1"}}))
	must(e.svc.RegisterMachine(e.ctx, e.host, hw)) // the agent restarts
	ch := e.challenge(e.host, m.ID)
	if ch == nil || len(ch.GPUs) != 1 || ch.GPUs[0].Index != 1 {
		t.Fatalf("a restart should check only the idle GPU 1, got %+v", ch)
	}
	if c := must(e.answer(e.host, m.ID)); c.State != market.CheckPassed || c.Cause != market.CheckOnRegister {
		t.Fatalf("check %+v", c)
	}
	must(e.svc.CreateInstance(e.ctx, renter, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "1"}}))
	must(e.svc.RegisterMachine(e.ctx, e.host, hw))
	if ch := e.challenge(e.host, m.ID); ch != nil {
		t.Fatalf("with every GPU rented a restart should start no check, got %+v", ch)
	}
	if got := e.machine(m.ID); got.Unverified || len(got.UsedGPUs) != 2 {
		t.Errorf("the machine should stay verified with both GPUs rented: %+v", got)
	}
}

func TestReliabilityCountsHostFaultsOnly(t *testing.T) {
	e := newVEnv(t, func(c *coord.Config) { c.RequireVerification = false })
	m := e.register(e.host, fakeHW(t, "fp-1", "2xRTX 4090"))
	renter := must(e.svc.Signup(e.ctx, market.SignupRequest{Email: "r@example.com", Password: "password1", Roles: []market.Role{market.RoleRenter}}))
	must(e.svc.Deposit(e.ctx, e.admin, "dep-1", market.DepositRequest{Account: renter.ID, Amount: market.Tokens(100)}))
	run := func(state market.ObservedState, code int) {
		inst := must(e.svc.CreateInstance(e.ctx, renter, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"x"}}))
		must(e.svc.Report(e.ctx, e.host, m.ID, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning}}}))
		e.clock.Advance(time.Minute)
		must(e.svc.Report(e.ctx, e.host, m.ID, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: inst.Generation, State: state, ExitCode: &code, Message: "pull image nosuch: not found"}}}))
	}
	run(market.ObservedExited, 1) // renter's program failed
	run(market.ObservedFailed, 0) // renter's image is bad
	run(market.ObservedExited, 0) // fine
	e.clock.Advance(time.Hour - 2*time.Minute)
	must(e.svc.Report(e.ctx, e.host, m.ID, market.Report{}))
	// The host goes silent with an instance running: a host fault, and
	// downtime until it comes back.
	inst := must(e.svc.CreateInstance(e.ctx, renter, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"x"}}))
	must(e.svc.Report(e.ctx, e.host, m.ID, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning}}}))
	e.clock.Advance(2 * time.Minute)
	must(0, e.svc.Tick(e.ctx)) // lost
	e.clock.Advance(58 * time.Minute)
	must(e.svc.Report(e.ctx, e.host, m.ID, market.Report{}))
	r := must(e.svc.MachineVerification(e.ctx, e.host, m.ID)).Reliability
	if r.HostFaults != 1 || r.RenterFaults != 2 || r.Completed != 1 {
		t.Errorf("faults host %d renter %d completed %d, want 1 2 1", r.HostFaults, r.RenterFaults, r.Completed)
	}
	if r.Coverage >= 1 || r.Coverage < 0.45 || r.FaultFactor != 0.5 || r.Score != r.Coverage*r.FaultFactor {
		t.Errorf("terms %+v", r)
	}
}

func TestBondRanksAndIsSlashedToRenters(t *testing.T) {
	e := newVEnv(t, nil)
	ledgerOK := func() {
		t.Helper()
		if err := e.svc.CheckLedger(e.ctx); err != nil {
			t.Fatalf("ledger invariants: %v", err)
		}
	}
	avail := func(a market.Account) market.Money { return must(e.svc.Wallet(e.ctx, a)).Available }
	must(e.svc.Deposit(e.ctx, e.admin, "dep-h", market.DepositRequest{Account: e.host.ID, Amount: market.Tokens(100)}))
	renter := must(e.svc.Signup(e.ctx, market.SignupRequest{Email: "r@example.com", Password: "password1", Roles: []market.Role{market.RoleRenter}}))
	must(e.svc.Deposit(e.ctx, e.admin, "dep-r", market.DepositRequest{Account: renter.ID, Amount: market.Tokens(100)}))

	bonded := e.register(e.host, fakeHW(t, "fp-1", "2xRTX 4090"))
	plain := e.register(e.other, fakeHW(t, "fp-2", "2xRTX 4090"))
	for _, m := range []market.Machine{bonded, plain} {
		host := e.host
		if m.ID == plain.ID {
			host = e.other
		}
		if _, err := e.answer(host, m.ID); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.svc.SetBond(e.ctx, e.host, bonded.ID, market.BondRequest{PerGPU: market.Tokens(60)})
	wantErr(t, err, market.InsufficientFunds, "deposit first")
	_, err = e.svc.SetBond(e.ctx, e.other, bonded.ID, market.BondRequest{PerGPU: market.Tokens(1)})
	wantErr(t, err, market.NotFound, "not found")
	b := must(e.svc.SetBond(e.ctx, e.host, bonded.ID, market.BondRequest{PerGPU: market.Tokens(10)}))
	if b.Total != market.Tokens(20) || b.PerGPU != market.Tokens(10) || avail(e.host) != market.Tokens(80) {
		t.Fatalf("bond %+v, host available %s", b, avail(e.host))
	}
	ledgerOK()
	// Same price and reliability: the bond ranks first, whatever the IDs.
	if got := e.offers(); len(got) != 2 || got[0] != bonded.ID {
		t.Fatalf("offers %v, want the bonded machine %s first", got, bonded.ID)
	}
	offers := must(e.svc.Offers(e.ctx, market.OfferFilter{Query: "bond_per_gpu>=5"}))
	if len(offers) != 1 || offers[0].Machine != bonded.ID {
		t.Errorf("bond_per_gpu>=5 found %v", offers)
	}

	inst := must(e.svc.CreateInstance(e.ctx, renter, market.CreateInstanceRequest{Machine: bonded.ID, GPUs: 1, Command: []string{"x"}}))
	must(e.svc.Report(e.ctx, e.host, bonded.ID, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning}}}))
	_, err = e.svc.SetBond(e.ctx, e.host, bonded.ID, market.BondRequest{PerGPU: 0})
	wantErr(t, err, market.Conflict, "instances running")

	// A failed check pays 10% of the bond to the renter running there.
	before := avail(renter)
	c := must(e.svc.RequestCheck(e.ctx, e.host, bonded.ID))
	s := e.solve(e.challenge(e.host, bonded.ID))
	samples := must(e.commit(e.host, bonded.ID, c.ID, s.commit()))
	pr := e.proofs(s, samples)
	flipDigest(&pr.GPUs[0].Proofs[0], 1)
	if c = must(e.svc.ProveChallenge(e.ctx, e.host, bonded.ID, c.ID, pr)); c.State != market.CheckFailed {
		t.Fatalf("check %+v", c)
	}
	if got := avail(renter) - before; got != market.Tokens(2) {
		t.Errorf("renter got %s from the failed check, want 2", got)
	}
	if b := must(e.svc.MachineVerification(e.ctx, e.host, bonded.ID)).Bond; b.Total != market.Tokens(18) || b.Slashed != market.Tokens(2) {
		t.Errorf("bond after the slash %+v", b)
	}
	ledgerOK()
	// Going offline under the rental pays 5% of what is left.
	before = avail(renter)
	e.clock.Advance(10 * time.Minute)
	must(e.svc.Report(e.ctx, e.other, plain.ID, market.Report{}))
	must(0, e.svc.Tick(e.ctx))
	if got := must(e.svc.Instance(e.ctx, renter, inst.ID)); got.State != market.InstanceFailed {
		t.Fatalf("instance %s after the host was lost", got.State)
	}
	if b := must(e.svc.MachineVerification(e.ctx, e.host, bonded.ID)).Bond; b.Total != market.Tokens(18)-market.Money(900_000) {
		t.Errorf("bond after downtime %+v", b)
	}
	if len(e.events(bonded.ID, "machine.slashed")) != 2 {
		t.Error("want two machine.slashed events")
	}
	ledgerOK()
	// Idle again: the host takes the rest back.
	if b := must(e.svc.SetBond(e.ctx, e.host, bonded.ID, market.BondRequest{PerGPU: 0})); b.Total != 0 {
		t.Errorf("bond %+v after lowering to 0", b)
	}
	ledgerOK()
}

// flipDigest changes the proof's own tile digest in its group, by xor
// with mask on its first byte.
func flipDigest(p *market.TileProof, mask byte) {
	p.Group[8*(p.Tile%(len(p.Group)/8))] ^= mask
}
