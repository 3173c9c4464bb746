package cli

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
)

// testClock is the coordinator's fake clock: it moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type cheapPasswords struct{}

func (cheapPasswords) Hash(p string) (string, error) { return "test:" + p, nil }
func (cheapPasswords) Verify(h, p string) bool       { return h == "test:"+p }

// system is a coordinator on 127.0.0.1:0 (real HTTP, real SQLite) with a
// fake clock, and the clients of its users.
type system struct {
	t     *testing.T
	ctx   context.Context
	co    *coordinator
	clock *testClock
	admin *apiclient.Client
}

// stores names the databases the system tests run on: SQLite always,
// Postgres when the test script started one (and always in CI).
func stores(t *testing.T) map[string]func(t testing.TB) string {
	m := map[string]func(t testing.TB) string{
		"sqlite": func(t testing.TB) string { return t.TempDir() + "/gm.db" },
	}
	if os.Getenv(pgtest.EnvURL) != "" || os.Getenv("CI") == "true" {
		m["postgres"] = pgtest.FreshDatabase
	}
	return m
}

// onEachStore runs test as a subtest per store.
func onEachStore(t *testing.T, test func(t *testing.T, db string)) {
	for name, db := range stores(t) {
		t.Run(name, func(t *testing.T) { test(t, db(t)) })
	}
}

func startSystem(t testing.TB, db string, opts ...func(*coordinatorConfig)) *system {
	ctx, cancel := context.WithCancel(context.Background())
	clock := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	cfg := coordinatorConfig{
		Listen: "127.0.0.1:0", DB: db, Mode: "test", Clock: clock,
		Logger: slog.New(slog.DiscardHandler), Tick: time.Hour, // the test calls Tick
		LostAfter: time.Minute, Passwords: cheapPasswords{},
	}
	for _, o := range opts {
		o(&cfg)
	}
	co, err := startCoordinator(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	if _, err := co.Service.CreateAccount(ctx, "admin@example.com", "admin-password", []market.Role{market.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	s := &system{ctx: ctx, co: co, clock: clock}
	if tt, ok := t.(*testing.T); ok {
		s.t = tt
	}
	s.admin = s.login(t, "admin@example.com", "admin-password")
	return s
}

func (s *system) login(t testing.TB, email, password string) *apiclient.Client {
	t.Helper()
	res, err := apiclient.New(s.co.URL, "", nil).Login(s.ctx, market.LoginRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	return apiclient.New(s.co.URL, res.Key.Secret, nil)
}

func (s *system) signup(t testing.TB, email string, roles ...market.Role) *apiclient.Client {
	t.Helper()
	if _, err := apiclient.New(s.co.URL, "", nil).Signup(s.ctx, market.SignupRequest{Email: email, Password: "password-1", Roles: roles}); err != nil {
		t.Fatalf("signup %s: %v", email, err)
	}
	return s.login(t, email, "password-1")
}

// startAgent runs a real agent with the process runner and fake GPUs,
// talking HTTP to the coordinator with the host's key.
func (s *system) startAgent(t testing.TB, host *apiclient.Client, gpus string) {
	t.Helper()
	ctx, cancel := context.WithCancel(s.ctx)
	a, err := newAgent(ctx, agentOptions{
		StateDir: t.TempDir(), FakeGPUs: gpus, Client: host, Logger: slog.New(slog.DiscardHandler),
		HeartbeatInterval: 100 * time.Millisecond, PollWait: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
}

// eventually polls cond every 10 ms for up to 10 s.
func eventually(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// advance moves the coordinator's clock, waits for the agent's next
// heartbeat at the new time (so the machine stays online), and runs the
// background tick.
func (s *system) advance(t testing.TB, host *apiclient.Client, id market.MachineID, d time.Duration) {
	t.Helper()
	s.clock.Advance(d)
	now := s.clock.Now()
	eventually(t, "a heartbeat after the clock moved", func() (bool, error) {
		m, err := host.Machine(s.ctx, id)
		return !m.LastSeenAt.Before(now), err
	})
	if err := s.co.Service.Tick(s.ctx); err != nil {
		t.Fatalf("tick: %v", err)
	}
	s.checkLedger(t)
}

func (s *system) checkLedger(t testing.TB) {
	t.Helper()
	if err := s.co.Service.CheckLedger(s.ctx); err != nil {
		t.Fatalf("ledger invariants: %v", err)
	}
}

func wantWallet(t *testing.T, what string, got market.Wallet, avail, escrow, earnings market.Money) {
	t.Helper()
	if got.Available != avail || got.Escrow != escrow || got.Earnings != earnings {
		t.Errorf("%s wallet: available %s escrow %s earnings %s; want %s %s %s", what, got.Available, got.Escrow, got.Earnings, avail, escrow, earnings)
	}
}

func must[T any](t testing.TB, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// TestSystemRentBillStop walks the whole first slice as users would:
// sign-up, deposit, a host's agent registering, search, create, running,
// logs, billed minutes, stop and earnings, with every balance exact.
func TestSystemRentBillStop(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and an agent")
	}
	onEachStore(t, testRentBillStop)
}

func testRentBillStop(t *testing.T, db string) {
	s := startSystem(t, db)
	ctx := s.ctx
	host := s.signup(t, "host@example.com", market.RoleHost)
	renter := s.signup(t, "renter@example.com", market.RoleRenter)

	must[market.Transfer](t, "deposit")(s.admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(10)}, "dep-1"))
	// A retried deposit with the same key credits once.
	must[market.Transfer](t, "deposit retry")(s.admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(10)}, "dep-1"))
	wantWallet(t, "renter after deposit", must[market.Wallet](t, "wallet")(renter.Wallet(ctx)), market.Tokens(10), 0, 0)

	s.startAgent(t, host, "2xRTX 4090")
	var m market.Machine
	eventually(t, "the agent's machine to register", func() (bool, error) {
		ms, err := host.Machines(ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	if len(m.GPUs) != 2 || m.Status != market.MachineUnlisted || m.Runner != "process" {
		t.Fatalf("registered machine: %d GPUs, status %s, runner %s", len(m.GPUs), m.Status, m.Runner)
	}
	if offers := must[[]market.Offer](t, "offers")(renter.Offers(ctx, market.OfferFilter{})); len(offers) != 0 {
		t.Fatalf("unlisted machine offered: %v", offers)
	}
	price := market.Money(1_200_000) // 1.20 per GPU-hour: 0.02 a minute
	must[market.Machine](t, "set price")(host.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(ctx, m.ID))

	offers := must[[]market.Offer](t, "offers")(renter.Offers(ctx, market.OfferFilter{GPUName: "rtx_4090", MinGPUs: 1}))
	if len(offers) != 1 || offers[0].Machine != m.ID || offers[0].FreeGPUs != 2 {
		t.Fatalf("offers = %+v, want the one machine with 2 free GPUs", offers)
	}

	inst := must[market.Instance](t, "create")(renter.CreateInstance(ctx, market.CreateInstanceRequest{
		Machine: m.ID, GPUs: 1, Env: map[string]string{"GREETING": "hello"},
		Command: []string{"/bin/sh", "-c", `echo "$GREETING from GPUs $CUDA_VISIBLE_DEVICES"; exec sleep 300`},
	}))
	wantWallet(t, "renter after create", must[market.Wallet](t, "wallet")(renter.Wallet(ctx)), market.Tokens(10)-price, price, 0)

	eventually(t, "the instance to run", func() (bool, error) {
		got, err := renter.Instance(ctx, inst.ID)
		return got.State == market.InstanceRunning, err
	})
	var logs strings.Builder
	eventually(t, "the instance's output", func() (bool, error) {
		chunks, err := renter.Logs(ctx, inst.ID, 0, 100, time.Second)
		logs.Reset()
		for _, c := range chunks {
			logs.WriteString(c.Data)
		}
		return strings.Contains(logs.String(), "hello from GPUs"), err
	})
	if want := "hello from GPUs " + m.GPUs[0].UUID; !strings.Contains(logs.String(), want) {
		t.Errorf("logs %q do not contain %q: the process did not get its GPU", logs.String(), want)
	}

	// Three billed minutes, each 0.02: 0.018 to the host, 0.002 fee.
	for range 3 {
		s.advance(t, host, m.ID, time.Minute)
	}
	got := must[market.Instance](t, "show")(renter.Instance(ctx, inst.ID))
	if got.BilledMins != 3 || got.Charged != 60_000 {
		t.Fatalf("after 3 minutes: billed %d, charged %s", got.BilledMins, got.Charged)
	}
	wantWallet(t, "renter after 3 minutes", must[market.Wallet](t, "wallet")(renter.Wallet(ctx)), market.Tokens(10)-price-60_000, price, 0)
	wantWallet(t, "host after 3 minutes", must[market.Wallet](t, "wallet")(host.Wallet(ctx)), 0, 0, 54_000)

	must[market.Instance](t, "stop")(renter.StopInstance(ctx, inst.ID))
	eventually(t, "the instance to stop", func() (bool, error) {
		var err error
		got, err = renter.Instance(ctx, inst.ID)
		return got.State == market.InstanceStopped, err
	})
	if got.State != market.InstanceStopped {
		evs, _ := renter.Events(ctx, apiclient.EventQuery{Instance: inst.ID})
		t.Fatalf("instance %+v; events %+v", got, evs)
	}
	if !got.Settled || got.BilledMins != 3 || got.Escrow != 0 {
		t.Errorf("stopped instance: settled %v, billed %d, escrow %s", got.Settled, got.BilledMins, got.Escrow)
	}
	wantWallet(t, "renter at the end", must[market.Wallet](t, "wallet")(renter.Wallet(ctx)), market.Tokens(10)-60_000, 0, 0)
	earn := must[market.EarningsReport](t, "earnings")(host.Earnings(ctx))
	if earn.Total != 54_000 || len(earn.Machines) != 1 || earn.Machines[0].Minutes != 3 {
		t.Errorf("earnings = %+v, want 0.054 over 3 minutes of one machine", earn)
	}
	hist := must[[]market.HistoryEntry](t, "history")(renter.History(ctx, 0, 100))
	var charges int
	for _, h := range hist {
		if h.Kind == market.TransferCharge {
			charges++
		}
	}
	if charges != 3 {
		t.Errorf("renter history has %d charges, want 3: %+v", charges, hist)
	}
	s.checkLedger(t)

	// The GPU is free again. The offer index follows the commit that
	// ended the instance a moment after it (the report's reindex, or the
	// change feed), so a read right after the state may still see it held.
	eventually(t, "the GPU back on offer", func() (bool, error) {
		offers, err := renter.Offers(ctx, market.OfferFilter{})
		return len(offers) == 1 && offers[0].FreeGPUs == 2, err
	})
}

// TestSystemErrorsAndAuthorization checks statuses and messages of bad
// input and that users cannot touch what is not theirs, over HTTP.
func TestSystemErrorsAndAuthorization(t *testing.T) {
	if testing.Short() {
		t.Skip("system test")
	}
	onEachStore(t, testErrorsAndAuthorization)
}

func testErrorsAndAuthorization(t *testing.T, db string) {
	s := startSystem(t, db)
	ctx := s.ctx
	host := s.signup(t, "host@example.com", market.RoleHost)
	renter := s.signup(t, "renter@example.com", market.RoleRenter)
	mallory := s.signup(t, "mallory@example.com", market.RoleRenter, market.RoleHost)
	must[market.Transfer](t, "deposit")(s.admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(10)}, "d"))
	s.startAgent(t, host, "1xRTX 4090")
	var m market.Machine
	eventually(t, "registration", func() (bool, error) {
		ms, err := host.Machines(ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price := market.Money(500_000)
	must[market.Machine](t, "price")(host.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(ctx, m.ID))
	inst := must[market.Instance](t, "create")(renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "60"}}))

	neg := market.Money(-1)
	extra := must[market.NewAPIKey](t, "create key")(renter.CreateKey(ctx, market.CreateKeyRequest{Name: "to revoke"}))
	revoked := apiclient.New(s.co.URL, extra.Secret, nil)
	must[market.Account](t, "use new key")(revoked.Me(ctx))
	if err := renter.RevokeKey(ctx, extra.ID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		kind market.Kind
		msg  string
	}{
		{"unknown machine", func() error {
			_, err := renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: "m-nope", GPUs: 1, Command: []string{"x"}})
			return err
		}, market.NotFound, "not found"},
		{"too many GPUs", func() error {
			_, err := renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 3, Command: []string{"x"}})
			return err
		}, market.Invalid, "has 1 GPUs"},
		{"GPU taken", func() error {
			_, err := renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"x"}})
			return err
		}, market.Conflict, "0 of 1 GPUs free"},
		{"negative price", func() error {
			_, err := host.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &neg})
			return err
		}, market.Invalid, "above zero"},
		{"no key", func() error {
			_, err := apiclient.New(s.co.URL, "", nil).Wallet(ctx)
			return err
		}, market.Unauthorized, "missing API key"},
		{"wrong key", func() error {
			_, err := apiclient.New(s.co.URL, "gmk_wrong", nil).Wallet(ctx)
			return err
		}, market.Unauthorized, "unknown API key"},
		{"revoked key", func() error {
			_, err := revoked.Wallet(ctx)
			return err
		}, market.Unauthorized, "revoked"},
		{"other renter's instance", func() error {
			_, err := mallory.Instance(ctx, inst.ID)
			return err
		}, market.NotFound, "not found"},
		{"stop other renter's instance", func() error {
			_, err := mallory.StopInstance(ctx, inst.ID)
			return err
		}, market.NotFound, "not found"},
		{"other renter's logs", func() error {
			_, err := mallory.Logs(ctx, inst.ID, 0, 10, 0)
			return err
		}, market.NotFound, "not found"},
		{"other host's machine", func() error {
			_, err := mallory.UnlistMachine(ctx, m.ID)
			return err
		}, market.NotFound, "not found"},
		{"other host's desired state", func() error {
			_, err := mallory.Desired(ctx, m.ID, 0, 0)
			return err
		}, market.NotFound, "not found"},
		{"deposit without admin", func() error {
			_, err := renter.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: 5}, "x")
			return err
		}, market.Forbidden, "admin role"},
		{"faucet outside dev", func() error {
			_, err := renter.Faucet(ctx)
			return err
		}, market.Forbidden, "only in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !market.IsKind(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v (kind %v), want kind %v saying %q", err, market.KindOf(err), tc.kind, tc.msg)
			}
		})
	}
	if list := must[[]market.Instance](t, "list")(mallory.Instances(ctx)); len(list) != 0 {
		t.Errorf("mallory lists %d instances", len(list))
	}
	s.checkLedger(t)
}

// BenchmarkDispatch measures dispatch latency: from instance create
// returning to the agent reporting the instance starting, over loopback
// with SQLite and the real process runner, one create at a time (the stop
// and its wait are not timed). Run with -benchtime=1000x; it reports p50
// and p99.
func BenchmarkDispatch(b *testing.B) {
	db := b.TempDir() + "/gm.db"
	if os.Getenv("GPUMARKET_BENCH_STORE") == "postgres" {
		db = pgtest.FreshDatabase(b)
	}
	s := startSystem(b, db)
	ctx := s.ctx
	host := s.signup(b, "host@example.com", market.RoleHost)
	renter := s.signup(b, "renter@example.com", market.RoleRenter)
	must[market.Transfer](b, "deposit")(s.admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(1_000_000)}, "d"))
	watch := &reportWatch{Coordinator: host, started: map[market.InstanceID]chan time.Time{}}
	actx, cancel := context.WithCancel(ctx)
	ag, err := newAgent(actx, agentOptions{StateDir: b.TempDir(), FakeGPUs: "8xH100 80GB", Client: watch, Logger: slog.New(slog.DiscardHandler), HeartbeatInterval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(actx) }()
	defer func() { cancel(); <-done }()
	var m market.Machine
	eventually(b, "registration", func() (bool, error) {
		ms, err := host.Machines(ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price := market.Money(500_000)
	must[market.Machine](b, "price")(host.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](b, "list")(host.ListMachine(ctx, m.ID))

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		inst, err := renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "600"}, GraceSeconds: 5})
		t0 := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		started := watch.wait(inst.ID)
		select {
		case t1 := <-started:
			lat = append(lat, t1.Sub(t0))
		case <-time.After(10 * time.Second):
			b.Fatalf("instance %s: no starting report within 10s", inst.ID)
		}
		b.StopTimer()
		if _, err := renter.StopInstance(ctx, inst.ID); err != nil {
			b.Fatal(err)
		}
		eventually(b, "the stop", func() (bool, error) {
			got, err := renter.Instance(ctx, inst.ID)
			return got.State.Terminal(), err
		})
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// reportWatch passes the agent's calls through and notes when each
// instance is first reported starting (or running).
type reportWatch struct {
	agent.Coordinator
	mu      sync.Mutex
	started map[market.InstanceID]chan time.Time
}

func (w *reportWatch) ch(id market.InstanceID) chan time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.started[id]
	if c == nil {
		c = make(chan time.Time, 1)
		w.started[id] = c
	}
	return c
}

func (w *reportWatch) wait(id market.InstanceID) <-chan time.Time { return w.ch(id) }

func (w *reportWatch) Report(ctx context.Context, id market.MachineID, r market.Report) (market.ReportResult, error) {
	now := time.Now()
	for _, ir := range r.Instances {
		if ir.State == market.ObservedStarting || ir.State == market.ObservedRunning {
			select {
			case w.ch(ir.Instance) <- now:
			default: // already noted
			}
		}
	}
	return w.Coordinator.Report(ctx, id, r)
}

// TestSystemCLI drives the real coordinator and agent through the CLI
// verbs, as a user at a terminal would: sign-up, login (config file),
// search with the query language, auto placement, logs, stop, wallet.
func TestSystemCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("system test")
	}
	s := startSystem(t, t.TempDir()+"/gm.db")
	host := s.signup(t, "host@example.com", market.RoleHost)
	s.startAgent(t, host, "2xRTX 4090")
	var m market.Machine
	eventually(t, "registration", func() (bool, error) {
		ms, err := host.Machines(s.ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	gm, ok := cliUser(t, s.ctx, s.co.URL)
	hostCfg := t.TempDir() + "/host.json"
	for _, args := range [][]string{
		{"login", "--email", "host@example.com", "--password", "password-1"},
		{"machine", "set", string(m.ID), "--price-per-gpu-hour", "0.6", "--region", "eu-west"},
		{"machine", "list-for-rent", string(m.ID)},
	} {
		var out, errOut strings.Builder
		if code := run(s.ctx, append([]string{"--config", hostCfg, "--coordinator", s.co.URL}, args...), strings.NewReader(""), &out, &errOut, nil); code != 0 {
			t.Fatalf("host: gpumarket %s: exit %d: %s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
	}

	ok("signup", "--email", "renter@example.com", "--password", "password-1")
	ok("login", "--email", "renter@example.com", "--password", "password-1")
	must[market.Transfer](t, "deposit")(s.admin.Deposit(s.ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(5)}, "d"))

	if out := ok("offer", "search", "gpu_name=rtx_4090 num_gpus>=2 region in [eu] price_per_gpu_hour<0.8"); !strings.Contains(out, string(m.ID)) {
		t.Errorf("offer search does not list %s:\n%s", m.ID, out)
	}
	out, errOut, code := gm("offer", "search", "gpu_mem>=24")
	if code == 0 || !strings.Contains(errOut, "did you mean 'gpu_ram'") {
		t.Errorf("bad query: exit %d, stderr %q", code, errOut)
	}
	if out := ok("offer", "search", "num_gpus>=3", "--explain"); !strings.Contains(out, "num_gpus>=3") || !strings.Contains(out, string(m.ID)) {
		t.Errorf("explain does not name the filter and the near miss:\n%s", out)
	}
	out = ok("-o", "json", "instance", "create", "--auto", "gpu_name=RTX_4090", "--gpus", "2", "--", "sh", "-c", "echo cli-hello; exec sleep 300")
	var inst market.Instance
	if err := json.Unmarshal([]byte(out), &inst); err != nil || inst.Machine != m.ID || len(inst.GPUs) != 2 {
		t.Fatalf("instance create --auto -o json: %v\n%s", err, out)
	}
	eventually(t, "logs through the CLI", func() (bool, error) {
		out, _, _ := gm("instance", "logs", string(inst.ID))
		return strings.Contains(out, "cli-hello"), nil
	})
	eventually(t, "instance list to show it running", func() (bool, error) {
		out := ok("instance", "list")
		return strings.Contains(out, string(inst.ID)) && strings.Contains(out, "running"), nil
	})
	ok("instance", "stop", string(inst.ID))
	eventually(t, "the stop", func() (bool, error) {
		out, _, _ := gm("-o", "json", "instance", "show", string(inst.ID))
		return strings.Contains(out, `"state": "stopped"`), nil
	})
	if out := ok("wallet", "show"); !strings.Contains(out, "5.00 GMT") {
		t.Errorf("wallet after a stop within the first minute (nothing billed):\n%s", out)
	}
	s.checkLedger(t)
}

// cliUser returns two ways to run gpumarket commands as one user against
// the coordinator at url, with a config file of their own: gm returns the
// output, the errors and the exit code; ok fails the test on a non-zero
// exit and returns the output.
func cliUser(t *testing.T, ctx context.Context, url string) (gm func(args ...string) (string, string, int), ok func(args ...string) string) {
	cfg := t.TempDir() + "/config.json"
	gm = func(args ...string) (string, string, int) {
		var out, errOut strings.Builder
		code := run(ctx, append([]string{"--config", cfg, "--coordinator", url}, args...), strings.NewReader(""), &out, &errOut, nil)
		return out.String(), errOut.String(), code
	}
	ok = func(args ...string) string {
		t.Helper()
		out, errOut, code := gm(args...)
		if code != 0 {
			t.Fatalf("gpumarket %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	return gm, ok
}
