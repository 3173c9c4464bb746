package coord_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// plainPasswords keeps tests fast; production uses Argon2id.
type plainPasswords struct{}

func (plainPasswords) Hash(p string) (string, error) { return "plain:" + p, nil }
func (plainPasswords) Verify(h, p string) bool       { return h == "plain:"+p }

type env struct {
	t      *testing.T
	store  coord.Store
	ctx    context.Context
	svc    *coord.Service
	clock  *fakeClock
	admin  market.Account
	host   market.Account
	renter market.Account
	mach   market.Machine
}

// newEnv starts a service on a fresh SQLite file with an admin, a host
// whose 4-GPU machine is listed at 0.60 per GPU-hour, and a renter with
// 100 tokens.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	store := testStore(t)
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
	e := &env{t: t, ctx: ctx, clock: clock, store: store, svc: coord.New(coord.Config{Store: store, Clock: clock, Passwords: plainPasswords{}})}
	e.admin = must(e.svc.CreateAccount(ctx, "admin@example.com", "password1", []market.Role{market.RoleAdmin}))
	e.host = e.account("host@example.com", market.RoleHost)
	e.renter = e.account("renter@example.com", market.RoleRenter)
	e.mach = e.machine(e.host, "fp-1", 4)
	e.deposit(e.renter, market.Tokens(100))
	return e
}

// must returns v, or panics (failing the test) on an unexpected error.
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

func (e *env) account(email string, roles ...market.Role) market.Account {
	return must(e.svc.Signup(e.ctx, market.SignupRequest{Email: email, Password: "password1", Roles: roles}))
}

func hardware(fp string, gpus int) market.Hardware {
	hw := market.Hardware{Fingerprint: fp, Hostname: "box", Runner: "process", CPUCores: 16, RAMMiB: 65536}
	for i := range gpus {
		hw.GPUs = append(hw.GPUs, market.GPU{Index: i, UUID: fp + "-gpu-" + string(rune('a'+i)), Model: "RTX 4090", VRAMMiB: 24564, MinPowerW: 150, MaxPowerW: 450})
	}
	return hw
}

func (e *env) machine(host market.Account, fp string, gpus int) market.Machine {
	m := must(e.svc.RegisterMachine(e.ctx, host, hardware(fp, gpus)))
	price := market.Money(600_000)
	must(e.svc.UpdateMachine(e.ctx, host, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	return must(e.svc.SetListed(e.ctx, host, m.ID, true))
}

func (e *env) deposit(a market.Account, amt market.Money) {
	must(e.svc.Deposit(e.ctx, e.admin, market.NewID("dep-"), market.DepositRequest{Account: a.ID, Amount: amt}))
}

func (e *env) create(gpus int) (market.Instance, error) {
	return e.svc.CreateInstance(e.ctx, e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: gpus, Command: []string{"sleep", "60"}})
}

// report sends one agent report about inst and returns the rejections.
func (e *env) report(inst market.Instance, state market.ObservedState) []market.Rejection {
	e.t.Helper()
	res := must(e.svc.Report(e.ctx, e.host, inst.Machine, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: inst.Generation, State: state}}}))
	return res.Rejected
}

// advance moves the clock forward in steps of at most 20 s, with the
// agent's heartbeat (an empty report) after each, so the machine stays
// online.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	for d > 0 {
		step := min(d, 20*time.Second)
		e.clock.Advance(step)
		d -= step
		must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{}))
	}
}

func (e *env) inst(id market.InstanceID) market.Instance {
	return must(e.svc.Instance(e.ctx, e.admin, id))
}

func (e *env) wallet(a market.Account) market.Wallet { return must(e.svc.Wallet(e.ctx, a)) }

func (e *env) tick() {
	e.t.Helper()
	if err := e.svc.Tick(e.ctx); err != nil {
		e.t.Fatalf("Tick: %v", err)
	}
	e.check()
}

func (e *env) check() {
	e.t.Helper()
	if err := e.svc.CheckLedger(e.ctx); err != nil {
		e.t.Fatalf("ledger invariants broken: %v", err)
	}
}

func wantKind(t *testing.T, err error, k market.Kind, msgPart string) {
	t.Helper()
	if !market.IsKind(err, k) {
		t.Fatalf("err = %v (kind %v), want kind %v", err, market.KindOf(err), k)
	}
	if !strings.Contains(market.Message(err), msgPart) {
		t.Errorf("message %q does not say %q", market.Message(err), msgPart)
	}
}

func TestCreateHoldsOneHourAndReservesGPUs(t *testing.T) {
	e := newEnv(t)
	inst := must(e.create(2))
	if got, want := inst.GPUs, []int{0, 1}; !equalInts(got, want) {
		t.Errorf("GPUs = %v, want %v", got, want)
	}
	if inst.PricePerHour != 1_200_000 || inst.Escrow != 1_200_000 {
		t.Errorf("price %s escrow %s, want 1.20 and 1.20", inst.PricePerHour, inst.Escrow)
	}
	w := e.wallet(e.renter)
	if w.Available != market.Tokens(100)-1_200_000 || w.Escrow != 1_200_000 {
		t.Errorf("wallet = %+v, want 98.80 available, 1.20 escrow", w)
	}
	second := must(e.create(2))
	if !equalInts(second.GPUs, []int{2, 3}) {
		t.Errorf("second GPUs = %v, want [2 3]", second.GPUs)
	}
	_, err := e.create(1)
	wantKind(t, err, market.Conflict, "0 of 4 GPUs free")
	e.check()
}

func TestCreateRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	poor := e.account("poor@example.com", market.RoleRenter)
	hostOnly := e.account("hostonly@example.com", market.RoleHost)
	for _, tc := range []struct {
		name   string
		caller market.Account
		req    market.CreateInstanceRequest
		kind   market.Kind
		msg    string
	}{
		{"unknown machine", e.renter, market.CreateInstanceRequest{Machine: "m-nope", GPUs: 1, Command: []string{"x"}}, market.NotFound, "m-nope not found"},
		{"zero GPUs", e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 0, Command: []string{"x"}}, market.Invalid, "at least 1"},
		{"too many GPUs", e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 5, Command: []string{"x"}}, market.Invalid, "has 4 GPUs"},
		{"no command", e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1}, market.Invalid, "command"},
		{"image on process runner", e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Image: "pytorch", Command: []string{"x"}}, market.Invalid, "not container images"},
		{"reserved env", e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}, Env: map[string]string{"CUDA_VISIBLE_DEVICES": "0"}}, market.Invalid, "cannot be overridden"},
		{"bad env name", e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}, Env: map[string]string{"A=B": "0"}}, market.Invalid, "without '='"},
		{"grace too long", e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}, GraceSeconds: 3600}, market.Invalid, "above the maximum"},
		{"no money", poor, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}}, market.InsufficientFunds, "holds one hour (0.60 GMT)"},
		{"not a renter", hostOnly, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}}, market.Forbidden, "renter role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.CreateInstance(e.ctx, tc.caller, tc.req)
			wantKind(t, err, tc.kind, tc.msg)
		})
	}
	t.Run("unlisted", func(t *testing.T) {
		must(e.svc.SetListed(e.ctx, e.host, e.mach.ID, false))
		_, err := e.create(1)
		wantKind(t, err, market.Conflict, "not listed")
		must(e.svc.SetListed(e.ctx, e.host, e.mach.ID, true))
	})
	e.check()
	if w := e.wallet(e.renter); w.Available != market.Tokens(100) || w.Escrow != 0 {
		t.Errorf("failed creates moved money: %+v", w)
	}
}

func TestBillingChargesEachMinuteOnceAndSettles(t *testing.T) {
	e := newEnv(t)
	inst := must(e.create(1)) // 0.60/h = 0.01/min
	e.advance(5 * time.Second)
	if rej := e.report(inst, market.ObservedRunning); rej != nil {
		t.Fatalf("running report rejected: %v", rej)
	}
	e.advance(3*time.Minute + 30*time.Second)
	e.tick()
	e.tick() // a second pass at the same time charges nothing more
	got := e.inst(inst.ID)
	if got.BilledMins != 3 || got.Charged != 30_000 {
		t.Fatalf("after 3m30s: billed %d minutes, %s; want 3 minutes, 0.03", got.BilledMins, got.Charged)
	}
	host := e.wallet(e.host)
	if host.Earnings != 27_000 {
		t.Errorf("host earnings = %s, want 0.027 (0.03 less 10%%)", host.Earnings)
	}
	e.advance(40 * time.Second) // 4m10s in: the 5th minute started
	stopped := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	if stopped.State != market.InstanceStopping || stopped.Generation != inst.Generation+1 {
		t.Fatalf("after stop: state %s gen %d, want stopping gen %d", stopped.State, stopped.Generation, inst.Generation+1)
	}
	e.advance(10 * time.Minute) // the agent is slow to confirm; billing ended at the stop
	e.tick()
	if rej := e.report(stopped, market.ObservedStopped); rej != nil {
		t.Fatalf("stopped report rejected: %v", rej)
	}
	got = e.inst(inst.ID)
	if got.State != market.InstanceStopped || !got.Settled || got.BilledMins != 5 || got.Charged != 50_000 || got.Escrow != 0 {
		t.Fatalf("final: %+v; want stopped, settled, 5 minutes, 0.05 charged, no escrow", got)
	}
	w := e.wallet(e.renter)
	if w.Available != market.Tokens(100)-50_000 || w.Escrow != 0 {
		t.Errorf("renter wallet = %+v, want 99.95 available, 0 escrow", w)
	}
	if h := e.wallet(e.host); h.Earnings != 45_000 {
		t.Errorf("host earnings = %s, want 0.045", h.Earnings)
	}
	e.check()
	r := must(e.svc.Earnings(e.ctx, e.host))
	if len(r.Machines) != 1 || r.Machines[0].Minutes != 5 || r.Machines[0].Amount != 45_000 || r.Total != 45_000 {
		t.Errorf("earnings report = %+v", r)
	}
}

func TestOutOfFundsStopsWithNoticeAndEscrowPays(t *testing.T) {
	e := newEnv(t)
	poor := e.account("poor@example.com", market.RoleRenter)
	e.deposit(poor, 620_000) // one hour of escrow (0.60) and two minutes
	inst := must(e.svc.CreateInstance(e.ctx, poor, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}}))
	e.report(inst, market.ObservedRunning)
	e.advance(2 * time.Minute)
	e.tick() // minutes 0 and 1 from available; the next cannot be paid
	got := e.inst(inst.ID)
	if got.State != market.InstanceStopping || got.NoticeAt == nil || !strings.Contains(got.Reason, "out of funds") {
		t.Fatalf("after 2 minutes: state %s reason %q, want stopping for lack of funds", got.State, got.Reason)
	}
	e.advance(90 * time.Second)
	e.report(got, market.ObservedStopped)
	got = e.inst(inst.ID)
	if got.BilledMins != 2 || !got.Settled {
		t.Errorf("billed %d minutes, settled %v; want 2 and settled", got.BilledMins, got.Settled)
	}
	if w := e.wallet(poor); w.Available != 600_000 || w.Escrow != 0 {
		t.Errorf("wallet = %+v, want the escrow back (0.60) and nothing held", w)
	}
	e.check()
}

func TestEscrowPaysMinutesTheBalanceCannot(t *testing.T) {
	e := newEnv(t)
	poor := e.account("poor@example.com", market.RoleRenter)
	e.deposit(poor, 600_000) // exactly the escrow
	inst := must(e.svc.CreateInstance(e.ctx, poor, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}}))
	e.report(inst, market.ObservedRunning)
	e.advance(3 * time.Minute) // no tick ran meanwhile: three minutes are due
	e.tick()
	got := e.inst(inst.ID)
	if got.BilledMins != 3 || got.Escrow != 570_000 || got.State != market.InstanceStopping {
		t.Fatalf("billed %d escrow %s state %s; want 3 minutes from escrow (0.57 left), stopping", got.BilledMins, got.Escrow, got.State)
	}
	e.report(got, market.ObservedStopped)
	if w := e.wallet(poor); w.Available != 570_000 || w.Escrow != 0 {
		t.Errorf("wallet = %+v, want 0.57 back", w)
	}
	e.check()
}

func TestReportsAreFencedByGeneration(t *testing.T) {
	e := newEnv(t)
	inst := must(e.create(1))
	e.report(inst, market.ObservedRunning)
	stopped := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	// A late report of the old generation must not revive or end it.
	rej := e.report(inst, market.ObservedExited)
	if len(rej) != 1 || !strings.Contains(rej[0].Reason, "stale generation 1") {
		t.Fatalf("stale report: rejections %v, want one for generation 1", rej)
	}
	if got := e.inst(inst.ID); got.State != market.InstanceStopping {
		t.Fatalf("state after stale report = %s, want stopping", got.State)
	}
	// Another host's agent cannot report about this instance.
	other := e.account("other-host@example.com", market.RoleHost)
	om := e.machine(other, "fp-other", 1)
	res := must(e.svc.Report(e.ctx, other, om.ID, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: stopped.Generation, State: market.ObservedStopped}}}))
	if len(res.Rejected) != 1 || res.Rejected[0].Reason != "not assigned to this machine" {
		t.Fatalf("foreign report: %v", res.Rejected)
	}
	_, err := e.svc.Report(e.ctx, other, e.mach.ID, market.Report{})
	wantKind(t, err, market.NotFound, "not found among your machines")
	e.check()
}

func TestLostHostFailsInstancesBilledToLastHeartbeat(t *testing.T) {
	e := newEnv(t)
	inst := must(e.create(1))
	e.report(inst, market.ObservedRunning)
	e.clock.Advance(90 * time.Second)
	e.report(inst, market.ObservedRunning) // heartbeat at 1m30s
	e.clock.Advance(59 * time.Second)
	e.tick()
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatal("machine offline before the lost deadline")
	}
	// The deadline allows the heartbeat flush period as slack.
	e.clock.Advance(coord.DefaultHeartbeatFlush)
	e.tick()
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatal("machine offline within the heartbeat flush slack")
	}
	e.clock.Advance(2 * time.Second)
	e.tick()
	m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID))
	if m.Online || m.Status != market.MachineOffline {
		t.Fatalf("machine after deadline: online %v status %s", m.Online, m.Status)
	}
	got := e.inst(inst.ID)
	if got.State != market.InstanceFailed || got.Reason != "host lost contact" || got.BilledMins != 2 || !got.Settled {
		t.Fatalf("instance: %s %q billed %d settled %v; want failed, host lost contact, 2 minutes, settled", got.State, got.Reason, got.BilledMins, got.Settled)
	}
	offers := must(e.svc.Offers(e.ctx, market.OfferFilter{}))
	if len(offers) != 0 {
		t.Errorf("offline machine is offered: %v", offers)
	}
	e.check()
}

func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	inst := must(e.create(1))
	mallory := e.account("mallory@example.com", market.RoleRenter, market.RoleHost)
	_, err := e.svc.Instance(e.ctx, mallory, inst.ID)
	wantKind(t, err, market.NotFound, "not found")
	_, err = e.svc.StopInstance(e.ctx, mallory, inst.ID)
	wantKind(t, err, market.NotFound, "not found")
	_, err = e.svc.Logs(e.ctx, mallory, inst.ID, 0, 0, 0)
	wantKind(t, err, market.NotFound, "not found")
	_, err = e.svc.Events(e.ctx, mallory, coord.EventFilter{Instance: inst.ID})
	wantKind(t, err, market.NotFound, "not found")
	price := market.Money(1)
	_, err = e.svc.UpdateMachine(e.ctx, mallory, e.mach.ID, market.MachineUpdate{PricePerGPUHour: &price})
	wantKind(t, err, market.NotFound, "not found")
	_, err = e.svc.SetListed(e.ctx, mallory, e.mach.ID, false)
	wantKind(t, err, market.NotFound, "not found")
	_, err = e.svc.Desired(e.ctx, mallory, e.mach.ID, 0, 0)
	wantKind(t, err, market.NotFound, "not found")
	_, err = e.svc.Deposit(e.ctx, mallory, "k", market.DepositRequest{Account: mallory.ID, Amount: 1})
	wantKind(t, err, market.Forbidden, "admin role")
	_, err = e.svc.Machines(e.ctx, mallory, true)
	wantKind(t, err, market.Forbidden, "admin role")
	if list := must(e.svc.Instances(e.ctx, mallory, false)); len(list) != 0 {
		t.Errorf("mallory lists %d instances, want 0", len(list))
	}
}

func TestDepositIsIdempotent(t *testing.T) {
	e := newEnv(t)
	req := market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(5)}
	first := must(e.svc.Deposit(e.ctx, e.admin, "key-1", req))
	again := must(e.svc.Deposit(e.ctx, e.admin, "key-1", req))
	if first.Seq != again.Seq {
		t.Errorf("retry made a new transfer: seq %d then %d", first.Seq, again.Seq)
	}
	req.Amount = market.Tokens(6)
	_, err := e.svc.Deposit(e.ctx, e.admin, "key-1", req)
	wantKind(t, err, market.Conflict, "different deposit")
	if w := e.wallet(e.renter); w.Available != market.Tokens(105) {
		t.Errorf("available = %s, want 105", w.Available)
	}
	e.check()
}

func TestConcurrentCreatesNeverShareAGPU(t *testing.T) {
	e := newEnv(t)
	e.deposit(e.renter, market.Tokens(1000))
	var wg sync.WaitGroup
	results := make(chan market.Instance, 20)
	for range 20 {
		wg.Go(func() {
			if inst, err := e.create(1); err == nil {
				results <- inst
			} else if !market.IsKind(err, market.Conflict) {
				t.Errorf("create: %v", err)
			}
		})
	}
	wg.Wait()
	close(results)
	seen := map[int]bool{}
	n := 0
	for inst := range results {
		n++
		for _, g := range inst.GPUs {
			if seen[g] {
				t.Errorf("GPU %d given twice", g)
			}
			seen[g] = true
		}
	}
	if n != 4 {
		t.Errorf("%d creates succeeded, want 4 (one per GPU)", n)
	}
	e.check()
}

// Creates that arrive together share a transaction and read their
// machines once (batchReads): each must still see the GPUs the ones
// before it took, so that as many creates as GPUs all succeed.
func TestConcurrentCreatesFillAMachine(t *testing.T) {
	e := newEnv(t)
	e.deposit(e.renter, market.Tokens(1000))
	var wg sync.WaitGroup
	got := make(chan market.Instance, 4)
	for range 4 {
		wg.Go(func() {
			inst, err := e.create(1)
			if err != nil {
				t.Errorf("create: %v", err)
				return
			}
			got <- inst
		})
	}
	wg.Wait()
	close(got)
	var gpus []int
	for inst := range got {
		gpus = append(gpus, inst.GPUs...)
	}
	slices.Sort(gpus)
	if !slices.Equal(gpus, []int{0, 1, 2, 3}) {
		t.Errorf("GPUs %v, want each of 0-3 once", gpus)
	}
	e.check()
}

// Creates in one batch see the holds and the keys of those before them:
// a renter with money for two one-hour holds gets two of four, and one
// key sent four times at once makes one instance.
func TestConcurrentCreatesSeeHoldsAndKeys(t *testing.T) {
	e := newEnv(t)
	poor := e.account("poor@example.com", market.RoleRenter)
	req := market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"sleep", "60"}}
	hold := e.mach.PricePerGPUHour
	e.deposit(poor, 2*hold+hold/2)
	var wg sync.WaitGroup
	var made, short atomic.Int32
	for range 4 {
		wg.Go(func() {
			_, err := e.svc.CreateInstance(e.ctx, poor, req)
			switch {
			case err == nil:
				made.Add(1)
			case market.IsKind(err, market.InsufficientFunds):
				short.Add(1)
			default:
				t.Errorf("create: %v", err)
			}
		})
	}
	wg.Wait()
	if made.Load() != 2 || short.Load() != 2 {
		t.Errorf("%d made, %d short of funds; want 2 and 2", made.Load(), short.Load())
	}

	ids := make(chan market.InstanceID, 4)
	for range 4 {
		wg.Go(func() {
			inst, err := e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-at-once", req)
			if err != nil {
				t.Errorf("create with a key: %v", err)
				return
			}
			ids <- inst.ID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[market.InstanceID]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 {
		t.Errorf("one key sent 4 times at once made instances %v; want one", seen)
	}
	e.check()
}

// Reports that arrive together are each recorded as if alone: a
// stranger's is refused, a stale one rejected, the others recorded.
func TestConcurrentReportsRecordedTogether(t *testing.T) {
	e := newEnv(t)
	var insts []market.Instance
	for k := range 6 {
		m := e.machine(e.host, fmt.Sprintf("fp-batch-%d", k), 1)
		insts = append(insts, must(e.svc.CreateInstance(e.ctx, e.renter, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "60"}})))
	}
	stranger := e.account("stranger@example.com", market.RoleHost)
	var wg sync.WaitGroup
	for round := range 3 {
		for k, inst := range insts {
			wg.Go(func() {
				gen := inst.Generation
				if k == 0 {
					gen++ // stale: rejected, the others not
				}
				res, err := e.svc.Report(e.ctx, e.host, inst.Machine, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: gen, State: market.ObservedRunning}}})
				switch {
				case err != nil:
					t.Errorf("round %d: report of %s: %v", round, inst.ID, err)
				case (k == 0) != (len(res.Rejected) == 1):
					t.Errorf("round %d: report of %s rejected %v", round, inst.ID, res.Rejected)
				}
			})
			wg.Go(func() {
				_, err := e.svc.Report(e.ctx, stranger, inst.Machine, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedFailed}}})
				if !market.IsKind(err, market.NotFound) {
					t.Errorf("round %d: a stranger's report: %v, want NotFound", round, err)
				}
			})
		}
		wg.Wait()
	}
	for k, inst := range insts {
		want := market.InstanceRunning
		if k == 0 {
			want = market.InstancePending
		}
		if got := e.inst(inst.ID).State; got != want {
			t.Errorf("instance %d: %s, want %s", k, got, want)
		}
	}
	e.check()
}

// holdNext is a store whose next transaction, once armed, waits for
// release before it runs (started is closed when it is reached).
type holdNext struct {
	coord.Store
	armed            atomic.Bool
	started, release chan struct{}
}

func (h *holdNext) Tx(ctx context.Context, fn func(tx coord.Tx) error) error {
	if h.armed.CompareAndSwap(true, false) {
		close(h.started)
		<-h.release
	}
	return h.Store.Tx(ctx, fn)
}

// A report and a create that share a batch: the report goes first, so the
// GPU that the instance it ends held is free for the create, and each is
// answered as if alone, next to a stranger's report refused.
func TestReportAndCreateShareABatch(t *testing.T) {
	store := &holdNext{Store: testStore(t), started: make(chan struct{}), release: make(chan struct{})}
	e := newEnvOn(t, store, nil)
	small := e.machine(e.host, "fp-small", 1)
	req := market.CreateInstanceRequest{Machine: small.ID, GPUs: 1, Command: []string{"sleep", "60"}}
	old := must(e.svc.CreateInstance(e.ctx, e.renter, req))
	e.report(old, market.ObservedRunning)
	stranger := e.account("stranger@example.com", market.RoleHost)

	// A create on another machine holds the batch runner while the three
	// calls queue behind it, to be run as the next batch.
	store.armed.Store(true)
	var wg sync.WaitGroup
	wg.Go(func() { must(e.create(1)) })
	<-store.started
	var made market.Instance
	var createErr, strangerErr error
	wg.Go(func() { made, createErr = e.svc.CreateInstance(e.ctx, e.renter, req) })
	wg.Go(func() {
		_, strangerErr = e.svc.Report(e.ctx, stranger, small.ID, market.Report{Instances: []market.InstanceReport{{Instance: old.ID, Generation: old.Generation, State: market.ObservedFailed}}})
	})
	wg.Go(func() { e.report(old, market.ObservedStopped) })
	for e.svc.BatchQueued() < 3 {
		time.Sleep(time.Millisecond)
	}
	close(store.release)
	wg.Wait()
	if createErr != nil {
		t.Fatalf("the create after the report that freed its GPU, in one batch: %v", createErr)
	}
	if !slices.Equal(made.GPUs, []int{0}) {
		t.Errorf("the create got GPUs %v, want [0]", made.GPUs)
	}
	wantKind(t, strangerErr, market.NotFound, "not found among your machines")
	if got := e.inst(old.ID); got.State != market.InstanceStopped {
		t.Errorf("the instance reported stopped is %s", got.State)
	}
	e.check()
}

func TestLoginAndKeys(t *testing.T) {
	e := newEnv(t)
	_, err := e.svc.Login(e.ctx, market.LoginRequest{Email: "renter@example.com", Password: "wrong-password"})
	wantKind(t, err, market.Unauthorized, "wrong email or password")
	_, err = e.svc.Login(e.ctx, market.LoginRequest{Email: "nobody@example.com", Password: "password1"})
	wantKind(t, err, market.Unauthorized, "wrong email or password")
	res := must(e.svc.Login(e.ctx, market.LoginRequest{Email: "RENTER@example.com", Password: "password1"}))
	if !strings.HasPrefix(res.Key.Secret, coord.KeyPrefix) {
		t.Fatalf("secret %q lacks prefix", res.Key.Secret)
	}
	a := must(e.svc.Authenticate(e.ctx, res.Key.Secret))
	if a.ID != e.renter.ID {
		t.Errorf("key authenticates %s, want %s", a.ID, e.renter.ID)
	}
	if err := e.svc.RevokeKey(e.ctx, e.renter, res.Key.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(e.ctx, res.Key.Secret)
	wantKind(t, err, market.Unauthorized, "revoked")
	_, err = e.svc.Signup(e.ctx, market.SignupRequest{Email: "Renter@Example.com", Password: "password1"})
	wantKind(t, err, market.Conflict, "exists already")
	_, err = e.svc.Signup(e.ctx, market.SignupRequest{Email: "x@example.com", Password: "password1", Roles: []market.Role{market.RoleAdmin}})
	wantKind(t, err, market.Invalid, "cannot be chosen")
	_, err = e.svc.Signup(e.ctx, market.SignupRequest{Email: "not-an-email", Password: "password1"})
	wantKind(t, err, market.Invalid, "not an email")
}

func TestArgon2id(t *testing.T) {
	var h coord.Argon2id
	hash, err := h.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q is not a PHC argon2id string with the expected parameters", hash)
	}
	if !h.Verify(hash, "correct horse") || h.Verify(hash, "correct horsE") || h.Verify("garbage", "x") {
		t.Error("Verify accepts a wrong password or rejects the right one")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOfferIndexFollowsChangesAndRestarts(t *testing.T) {
	e := newEnv(t)
	search := func(q string) []market.Offer {
		t.Helper()
		return must(e.svc.Offers(e.ctx, market.OfferFilter{Query: q}))
	}
	if got := search("gpu_name=RTX_4090 num_gpus>=4"); len(got) != 1 || got[0].FreeGPUs != 4 {
		t.Fatalf("fresh machine: %+v", got)
	}
	inst := must(e.create(3))
	if got := search("num_gpus>=2"); len(got) != 0 {
		t.Errorf("after renting 3 of 4 GPUs, num_gpus>=2 finds %+v", got)
	}
	if got := search(""); len(got) != 1 || got[0].FreeGPUs != 1 {
		t.Errorf("after renting 3 of 4: %+v, want 1 free", got)
	}
	stopped := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	e.report(stopped, market.ObservedStopped)
	if got := search("num_gpus>=4"); len(got) != 1 {
		t.Errorf("after the stop, the GPUs are not back: %+v", got)
	}
	price := market.Money(2_000_000)
	must(e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	if got := search("price_per_gpu_hour<1.5"); len(got) != 0 {
		t.Errorf("a price change is not seen: %+v", got)
	}
	must(e.svc.SetListed(e.ctx, e.host, e.mach.ID, false))
	if got := search(""); len(got) != 0 {
		t.Errorf("an unlisted machine is offered: %+v", got)
	}
	must(e.svc.SetListed(e.ctx, e.host, e.mach.ID, true))

	// A restarted coordinator rebuilds the index from the store.
	again := coord.New(coord.Config{Store: e.store, Clock: e.clock, Passwords: plainPasswords{}})
	if got := must(again.Offers(e.ctx, market.OfferFilter{})); len(got) != 0 {
		t.Fatalf("index filled before RebuildIndex: %+v", got)
	}
	if err := again.RebuildIndex(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := must(again.Offers(e.ctx, market.OfferFilter{Query: "gpu_name=RTX_4090"})); len(got) != 1 || got[0].PricePerGPUHour != price {
		t.Errorf("after rebuild: %+v", got)
	}

	// A machine that goes silent leaves the index.
	e.clock.Advance(2 * time.Minute)
	e.tick()
	if got := search(""); len(got) != 0 {
		t.Errorf("an offline machine is offered: %+v", got)
	}
}

func TestOfferQueryErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		f   market.OfferFilter
		msg string
	}{
		{market.OfferFilter{Query: "gpu_mem>=24"}, "did you mean 'gpu_ram'"},
		{market.OfferFilter{Query: "num_gpus>=two"}, "needs a number"},
		{market.OfferFilter{Sort: "gpu_name"}, "cannot sort by"},
		{market.OfferFilter{Limit: -1}, "must not be negative"},
	} {
		_, err := e.svc.Offers(e.ctx, tc.f)
		wantKind(t, err, market.Invalid, tc.msg)
	}
}

func TestAutoPlacement(t *testing.T) {
	e := newEnv(t)
	host2 := e.account("host2@example.com", market.RoleHost)
	cheap := e.machine(host2, "fp-cheap", 2)
	price := market.Money(100_000)
	must(e.svc.UpdateMachine(e.ctx, host2, cheap.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	auto := func(q string, gpus int) (market.Instance, error) {
		return e.svc.CreateInstance(e.ctx, e.renter, market.CreateInstanceRequest{Auto: q, GPUs: gpus, Command: []string{"x"}})
	}
	first := must(auto("gpu_name=RTX_4090", 2))
	if first.Machine != cheap.ID {
		t.Errorf("auto placed on %s, want the cheaper %s", first.Machine, cheap.ID)
	}
	second := must(auto("gpu_name=RTX_4090", 2))
	if second.Machine != e.mach.ID {
		t.Errorf("second auto placed on %s, want %s (the cheap one is full)", second.Machine, e.mach.ID)
	}
	_, err := auto("gpu_name=RTX_4090 num_gpus>=4", 1)
	wantKind(t, err, market.Unavailable, "no offer matches")
	_, err = e.svc.CreateInstance(e.ctx, e.renter, market.CreateInstanceRequest{Auto: "gpu_name=X", Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}})
	wantKind(t, err, market.Invalid, "not both")
	e.check()
}

func TestReplicaIndexFollowsOtherReplicas(t *testing.T) {
	e := newEnv(t)
	other := coord.New(coord.Config{Store: e.store, Clock: e.clock, Passwords: plainPasswords{}})
	if err := other.RebuildIndex(e.ctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); other.FollowChanges(ctx, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	free := func() int {
		offers := must(other.Offers(e.ctx, market.OfferFilter{}))
		if len(offers) == 0 {
			return 0
		}
		return offers[0].FreeGPUs
	}
	waitFor := func(what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("the other replica never saw %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitFor("the machine", func() bool { return free() == 4 })
	inst := must(e.create(3)) // through the first replica
	d := waitFor("the rental", func() bool { return free() == 1 })
	t.Logf("another replica's rental seen after %v", d)
	price := market.Money(9_000_000)
	must(e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	waitFor("the price change", func() bool {
		return len(must(other.Offers(e.ctx, market.OfferFilter{Query: "price_per_gpu_hour>=9"}))) == 1
	})
	stopped := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	e.report(stopped, market.ObservedStopped)
	waitFor("the GPUs coming back", func() bool { return free() == 4 })
}

// The follower refreshes a machine for another replica's change that
// moves its offer, and not for one that leaves it as it was: an instance
// that starts or runs holds the GPUs it held.
func TestFollowerSkipsChangesThatLeaveOffers(t *testing.T) {
	e := newEnv(t)
	other := coord.New(coord.Config{Store: e.store, Clock: e.clock, Passwords: plainPasswords{}})
	if err := other.RebuildIndex(e.ctx); err != nil {
		t.Fatal(err)
	}
	must(other.FollowOnce(e.ctx))
	inst := must(e.create(1))
	if n := must(other.FollowOnce(e.ctx)); n != 1 {
		t.Errorf("after a create through another replica: %d machines refreshed, want 1", n)
	}
	e.report(inst, market.ObservedStarting)
	e.report(inst, market.ObservedRunning)
	if n := must(other.FollowOnce(e.ctx)); n != 0 {
		t.Errorf("after the instance started and ran: %d machines refreshed, want 0", n)
	}
	stopped := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	e.report(stopped, market.ObservedStopped)
	if n := must(other.FollowOnce(e.ctx)); n != 1 {
		t.Errorf("after the instance stopped: %d machines refreshed, want 1", n)
	}
	if offers := must(other.Offers(e.ctx, market.OfferFilter{})); len(offers) != 1 || offers[0].FreeGPUs != 4 {
		t.Errorf("the other replica's offers: %+v; want the machine with its 4 GPUs free", offers)
	}

	// A replica's own create is in its index at once (no read), and its
	// follower does not refresh the machine for it.
	if err := e.svc.RebuildIndex(e.ctx); err != nil {
		t.Fatal(err)
	}
	must(e.svc.FollowOnce(e.ctx))
	mine := must(e.create(3))
	if offers := must(e.svc.Offers(e.ctx, market.OfferFilter{})); len(offers) != 1 || offers[0].FreeGPUs != 1 {
		t.Errorf("offers after a create here: %+v; want the machine with 1 GPU free", offers)
	}
	if n := must(e.svc.FollowOnce(e.ctx)); n != 0 {
		t.Errorf("after a create here: %d machines refreshed, want 0", n)
	}
	if n := must(other.FollowOnce(e.ctx)); n != 1 {
		t.Errorf("after a create through another replica: %d machines refreshed, want 1", n)
	}
	must(e.svc.StopInstance(e.ctx, e.renter, mine.ID))
}

// The desired state keeps a machine's instances between answers (work.go):
// what it answers follows every change, made here or, once followed,
// through another replica.
func TestDesiredFollowsEveryChange(t *testing.T) {
	e := newEnv(t)
	other := coord.New(coord.Config{Store: e.store, Clock: e.clock, Passwords: plainPasswords{}})
	for _, svc := range []*coord.Service{e.svc, other} {
		if err := svc.RebuildIndex(e.ctx); err != nil {
			t.Fatal(err)
		}
		must(svc.FollowOnce(e.ctx))
	}
	// The long-poll answers list each instance running, or stopping.
	answer := func(svc *coord.Service) map[market.InstanceID]market.Desired {
		t.Helper()
		ds := must(svc.Desired(e.ctx, e.host, e.mach.ID, -1, 0))
		out := map[market.InstanceID]market.Desired{}
		for _, a := range ds.Assignments {
			out[a.Instance] = a.Desired
		}
		return out
	}
	want := func(what string, svc *coord.Service, w map[market.InstanceID]market.Desired) {
		t.Helper()
		for range 2 { // read, then kept
			if got := answer(svc); !maps.Equal(got, w) {
				t.Fatalf("%s: desired %v, want %v", what, got, w)
			}
		}
	}
	run, stop := market.DesiredRun, market.DesiredStop
	want("at first", e.svc, map[market.InstanceID]market.Desired{})
	a := must(e.create(1))
	want("after a create", e.svc, map[market.InstanceID]market.Desired{a.ID: run})
	b := must(e.create(1))
	e.report(a, market.ObservedRunning)
	want("after a second create and an ack", e.svc, map[market.InstanceID]market.Desired{a.ID: run, b.ID: run})
	must(e.svc.StopInstance(e.ctx, e.renter, a.ID))
	want("after a stop", e.svc, map[market.InstanceID]market.Desired{a.ID: stop, b.ID: run})
	// Through another replica: seen here once followed.
	want("the other replica", other, map[market.InstanceID]market.Desired{a.ID: stop, b.ID: run})
	c := must(e.create(1))
	must(other.FollowOnce(e.ctx))
	want("another replica's create, followed", other, map[market.InstanceID]market.Desired{a.ID: stop, b.ID: run, c.ID: run})
	must(e.svc.StopInstance(e.ctx, e.renter, b.ID))
	must(other.FollowOnce(e.ctx))
	want("another replica's stop, followed", other, map[market.InstanceID]market.Desired{a.ID: stop, b.ID: stop, c.ID: run})
}

// An agent's heartbeat that repeats its reports (its instances running,
// unchanged) costs no transaction and keeps the machine online. After a
// change made here, or through another replica once followed, the next
// report goes to the store, which rejects a stale generation.
func TestHeartbeatsWithWorkStayInMemory(t *testing.T) {
	store := &txCounter{Store: testStore(t)}
	e := newEnvOn(t, store, nil)
	other := coord.New(coord.Config{Store: store, Clock: e.clock, Passwords: plainPasswords{}})
	for _, svc := range []*coord.Service{e.svc, other} {
		if err := svc.RebuildIndex(e.ctx); err != nil {
			t.Fatal(err)
		}
		must(svc.FollowOnce(e.ctx))
	}
	a, b := must(e.create(1)), must(e.create(1))
	beat := func(insts ...market.Instance) (rejected []market.Rejection, txs int64) {
		t.Helper()
		var r market.Report
		for _, i := range insts {
			r.Instances = append(r.Instances, market.InstanceReport{Instance: i.ID, Generation: i.Generation, State: market.ObservedRunning})
		}
		before := store.n.Load()
		res := must(e.svc.Report(e.ctx, e.host, e.mach.ID, r))
		return res.Rejected, store.n.Load() - before
	}
	if _, txs := beat(a, b); txs == 0 {
		t.Fatal("the acknowledgements took no transaction")
	}
	for range 4 {
		e.clock.Advance(20 * time.Second) // past the lost deadline (1 min) in all
		if rej, txs := beat(a, b); txs != 0 || len(rej) != 0 {
			t.Fatalf("a heartbeat repeating its reports took %d transactions and rejected %v, want none", txs, rej)
		}
	}
	e.tick()
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatal("the machine went offline on heartbeats that repeat its reports")
	}
	if got := e.inst(a.ID).State; got != market.InstanceRunning {
		t.Fatalf("instance a is %s, want running", got)
	}

	must(e.svc.StopInstance(e.ctx, e.renter, a.ID))
	rej, txs := beat(a, b)
	if txs == 0 || len(rej) != 1 || rej[0].Instance != a.ID || !strings.Contains(rej[0].Reason, "stale generation") {
		t.Fatalf("after a stop here: %d transactions, rejected %v; want the store and a's old generation rejected", txs, rej)
	}
	if _, txs := beat(b); txs != 0 {
		t.Fatalf("b's heartbeat, repeated, took %d transactions", txs)
	}
	must(other.StopInstance(e.ctx, e.renter, b.ID))
	must(e.svc.FollowOnce(e.ctx))
	rej, txs = beat(b)
	if txs == 0 || len(rej) != 1 || rej[0].Instance != b.ID {
		t.Fatalf("after a stop through another replica, followed: %d transactions, rejected %v; want the store and b's old generation rejected", txs, rej)
	}
	e.check()
}

func TestKeyCacheRevocationAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	other := coord.New(coord.Config{Store: e.store, Clock: e.clock, Passwords: plainPasswords{}})
	k := must(e.svc.CreateKey(e.ctx, e.renter, "script"))
	must(e.svc.Authenticate(e.ctx, k.Secret)) // cached by the first replica
	if err := other.RevokeKey(e.ctx, e.renter, k.ID); err != nil {
		t.Fatal(err)
	}
	_, err := other.Authenticate(e.ctx, k.Secret)
	wantKind(t, err, market.Unauthorized, "revoked")
	e.clock.Advance(6 * time.Second) // past the cache's 5 s
	_, err = e.svc.Authenticate(e.ctx, k.Secret)
	wantKind(t, err, market.Unauthorized, "revoked")
	// Revoked through the same replica: at once.
	k2 := must(e.svc.CreateKey(e.ctx, e.renter, "script2"))
	must(e.svc.Authenticate(e.ctx, k2.Secret))
	if err := e.svc.RevokeKey(e.ctx, e.renter, k2.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(e.ctx, k2.Secret)
	wantKind(t, err, market.Unauthorized, "revoked")
}

// An agent that registers again with the hardware it had (a restart, a
// reconnect storm) changes nothing and writes nothing; a changed report or
// a machine back from offline takes the full path.
func TestRegisterAgain(t *testing.T) {
	e := newEnv(t)
	registered := func() int {
		var evs []market.Event
		must(0, e.store.Tx(e.ctx, func(tx coord.Tx) error {
			var err error
			evs, err = tx.Events(e.ctx, coord.EventFilter{Machine: e.mach.ID})
			return err
		}))
		n := 0
		for _, ev := range evs {
			if ev.Type == "machine.registered" || ev.Type == "machine.online" {
				n++
			}
		}
		return n
	}
	before := registered()
	again := must(e.svc.RegisterMachine(e.ctx, e.host, hardware("fp-1", 4)))
	if again.ID != e.mach.ID || !again.Listed || !again.Online || len(again.GPUs) != 4 {
		t.Fatalf("registered again: got %+v, want the listed online machine %s", again, e.mach.ID)
	}
	if got := registered(); got != before {
		t.Errorf("an unchanged registration appended %d events, want none", got-before)
	}
	// The registration counts as a heartbeat: still online after the
	// lost deadline has passed since the last report.
	e.clock.Advance(50 * time.Second)
	must(e.svc.RegisterMachine(e.ctx, e.host, hardware("fp-1", 4)))
	e.clock.Advance(50 * time.Second)
	e.tick()
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatalf("machine went offline although its agent registered again 50 s ago")
	}

	hw := hardware("fp-1", 4)
	hw.Hostname = "renamed"
	changed := must(e.svc.RegisterMachine(e.ctx, e.host, hw))
	if changed.Hostname != "renamed" || registered() != before+1 {
		t.Errorf("a changed registration: hostname %q, %d new events; want renamed and one event", changed.Hostname, registered()-before)
	}

	e.clock.Advance(10 * time.Minute)
	e.tick()
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); m.Online {
		t.Fatalf("machine still online after 10 silent minutes")
	}
	back := must(e.svc.RegisterMachine(e.ctx, e.host, hw))
	if !back.Online || registered() != before+2 {
		t.Errorf("back from offline: online %v, %d new events; want online and a machine.online event", back.Online, registered()-before)
	}
}

// txCounter counts the transactions run on a store.
type txCounter struct {
	coord.Store
	n atomic.Int64
}

func (c *txCounter) Tx(ctx context.Context, fn func(tx coord.Tx) error) error {
	c.n.Add(1)
	return c.Store.Tx(ctx, fn)
}

// An agent of an online machine that registers again unchanged is answered
// from memory, without a transaction: a reconnect storm of every agent
// costs the store nothing. A changed registration still goes to the store.
func TestRegisterAgainAnsweredFromMemory(t *testing.T) {
	ctx := t.Context()
	db, err := sqlite.Open(ctx, t.TempDir()+"/test.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := &txCounter{Store: db}
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
	svc := coord.New(coord.Config{Store: store, Clock: clock, Passwords: plainPasswords{}})
	host := must(svc.Signup(ctx, market.SignupRequest{Email: "host@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}}))
	m := must(svc.RegisterMachine(ctx, host, hardware("fp-1", 4)))

	before := store.n.Load()
	for range 3 {
		clock.Advance(10 * time.Second)
		again := must(svc.RegisterMachine(ctx, host, hardware("fp-1", 4)))
		if again.ID != m.ID || !again.Online || len(again.GPUs) != 4 {
			t.Fatalf("registered again: got %+v, want online machine %s", again, m.ID)
		}
	}
	if n := store.n.Load() - before; n != 0 {
		t.Errorf("three unchanged registrations ran %d transactions, want 0", n)
	}
	// Another host's agent with the same fingerprint is not answered
	// with this machine: it takes the full path, which refuses its GPUs.
	other := must(svc.Signup(ctx, market.SignupRequest{Email: "other@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}}))
	if o, err := svc.RegisterMachine(ctx, other, hardware("fp-1", 4)); err == nil {
		t.Errorf("another host's agent registered the same GPUs and got machine %s", o.ID)
	}

	hw := hardware("fp-1", 4)
	hw.Hostname = "renamed"
	before = store.n.Load()
	if changed := must(svc.RegisterMachine(ctx, host, hw)); changed.Hostname != "renamed" || changed.ID != m.ID {
		t.Errorf("a changed registration gave %+v, want machine %s renamed", changed, m.ID)
	}
	if store.n.Load() == before {
		t.Error("a changed registration ran no transaction")
	}
}

// Lost-host detection lists a machine as silent, and before its
// transaction runs this coordinator's flush claims the machine (its agent
// beat in memory). The detection must leave it online and remembered:
// when the agent then dies, the claim is released and the machine goes
// offline, instead of staying online for ever under the vouch.
func TestClaimedDuringDetectionStillGoesOffline(t *testing.T) {
	e := newEnv(t) // lost after 60 s
	start := e.clock.Now()
	e.clock.Advance(70 * time.Second)
	must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{})) // in memory
	must(0, e.svc.FlushSeen(e.ctx))                               // claims it, seen at start+70s
	e.clock.Advance(10 * time.Second)
	must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{}))
	must(0, e.svc.FlushSeen(e.ctx)) // vouches at start+80s
	// Detection listed it when its stored heartbeat was start+70s.
	must(0, e.svc.LoseMachine(e.ctx, e.mach.ID, start.Add(75*time.Second)))
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatal("a machine its coordinator vouches for was taken offline")
	}
	// The agent dies: no heartbeat after start+80s.
	for range 12 {
		e.clock.Advance(10 * time.Second)
		must(0, e.svc.FlushSeen(e.ctx))
		e.tick()
	}
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); m.Online {
		t.Fatalf("the machine is still online 120 s after its last heartbeat (last seen %s)", m.LastSeenAt)
	}
}

// A machine released because its heartbeats came late (a coordinator too
// busy to hear them in time) is still known: its next heartbeat is
// answered from memory and the next flush claims it again, instead of a
// store transaction per machine, which under load made the coordinator
// slower still. It stays online throughout. One that stays silent goes
// offline at the deadline and comes back through the store.
func TestReleasedMachineBeatsAgainFromMemory(t *testing.T) {
	e := newEnv(t) // lost after 60 s: claims released after 45 s of silence
	beat := func() {
		t.Helper()
		must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{}))
	}
	beat()
	must(0, e.svc.FlushSeen(e.ctx)) // claimed
	e.clock.Advance(50 * time.Second)
	must(0, e.svc.FlushSeen(e.ctx)) // released, last heard 50 s ago
	e.tick()
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatal("offline before the deadline")
	}
	before := e.svc.HeartbeatCounts().InMemory
	beat() // late, not lost
	if got := e.svc.HeartbeatCounts().InMemory - before; got != 1 {
		t.Fatalf("the late heartbeat of a released machine went to the store (%d answered from memory, want 1)", got)
	}
	for range 6 {
		e.clock.Advance(10 * time.Second)
		beat()
		must(0, e.svc.FlushSeen(e.ctx))
		e.tick()
	}
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatal("a machine heartbeating again after its release went offline")
	}

	// Silent for good: released, then offline at the deadline.
	for range 8 {
		e.clock.Advance(10 * time.Second)
		must(0, e.svc.FlushSeen(e.ctx))
		e.tick()
	}
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); m.Online {
		t.Fatalf("still online 80 s after the last heartbeat")
	}
	beat()
	if m := must(e.svc.Machine(e.ctx, e.host, e.mach.ID)); !m.Online {
		t.Fatal("a heartbeat after the machine went offline did not bring it back")
	}
}

// A coordinator alone re-reads none of its claims; once another one
// vouches, it re-reads each every half claim silence (a claim may have
// been taken over).
func TestClaimsRecheckedOnlyWithOtherCoordinators(t *testing.T) {
	e := newEnv(t) // lost after 60 s: claim silence 45 s, recheck every 22.5 s
	flushed := func() int64 { return e.svc.HeartbeatCounts().Flushed }
	must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{}))
	must(0, e.svc.FlushSeen(e.ctx)) // claimed
	before := flushed()
	for range 3 {
		e.clock.Advance(10 * time.Second)
		must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{}))
		must(0, e.svc.FlushSeen(e.ctx))
	}
	if n := flushed() - before; n != 0 {
		t.Fatalf("alone, 30 s of flushes re-read %d claims, want 0", n)
	}
	must(0, e.store.Tx(e.ctx, func(tx coord.Tx) error { return tx.BeatNode(e.ctx, "another-coordinator", e.clock.Now()) }))
	before = flushed()
	must(0, e.svc.FlushSeen(e.ctx))
	if n := flushed() - before; n != 1 {
		t.Fatalf("with another coordinator, the claim held 30 s was re-read %d times, want 1", n)
	}
}

// panicOnce is a store whose next transaction panics when armed.
type panicOnce struct {
	coord.Store
	armed atomic.Bool
}

func (p *panicOnce) Tx(ctx context.Context, fn func(tx coord.Tx) error) error {
	if p.armed.CompareAndSwap(true, false) {
		panic("injected store panic")
	}
	return p.Store.Tx(ctx, fn)
}

// A panic while a batch of creates runs fails that batch's creates with an
// internal error; the creates after it still run (the batcher is not left
// waiting for ever).
func TestCreateBatchSurvivesAPanic(t *testing.T) {
	base, err := sqlite.Open(t.Context(), t.TempDir()+"/test.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	store := &panicOnce{Store: base}
	e := newEnvOn(t, store, nil)
	store.armed.Store(true)
	_, err = e.create(1)
	wantKind(t, err, market.Internal, "internal error")
	if _, err := e.create(1); err != nil {
		t.Fatalf("the create after the panic: %v", err)
	}
	e.check()
}
