package coord_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

// newEnvConfig is newEnv with config changes: a service on a fresh SQLite
// file with an admin, a host with a listed 4-GPU machine at 0.60 per
// GPU-hour and a renter with 100 tokens.
func newEnvConfig(t testing.TB, tweak func(*coord.Config)) *env {
	return newEnvOn(t, testStore(t), tweak)
}

// testStore opens the store of a test: a fresh SQLite file, or with
// GPUMARKET_TEST_COORD_STORE=postgres a fresh Postgres database (the
// coordinator's whole suite on Postgres: scripts/test runs it so once).
// It is closed when the test ends.
func testStore(t testing.TB) coord.Store {
	t.Helper()
	var store coord.Store
	var err error
	if os.Getenv("GPUMARKET_TEST_COORD_STORE") == "postgres" {
		store, err = postgres.Open(t.Context(), pgtest.FreshDatabase(t))
	} else {
		store, err = sqlite.Open(t.Context(), t.TempDir()+"/test.db")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// newEnvOn is newEnvConfig on the given store.
func newEnvOn(t testing.TB, store coord.Store, tweak func(*coord.Config)) *env {
	tt, _ := t.(*testing.T)
	ctx := t.Context()
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
	cfg := coord.Config{Store: store, Clock: clock, Passwords: plainPasswords{}}
	if tweak != nil {
		tweak(&cfg)
	}
	e := &env{t: tt, ctx: ctx, clock: clock, store: store, svc: coord.New(cfg)}
	e.admin = must(e.svc.CreateAccount(ctx, "admin@example.com", "password1", []market.Role{market.RoleAdmin}))
	e.host = e.account("host@example.com", market.RoleHost)
	e.renter = e.account("renter@example.com", market.RoleRenter)
	e.mach = e.machine(e.host, "fp-1", 4)
	e.deposit(e.renter, market.Tokens(100))
	return e
}

func shortMoney(c *coord.Config) {
	c.SettlementDelay = 30 * time.Minute
	c.DividendPeriod = time.Hour
	c.UnstakeCooldown = 2 * time.Hour
	c.MinWithdrawal = 10_000 // 0.01
}

// earn rents n GPUs for d and stops the instance, so that the host earns.
func (e *env) earn(gpus int, d time.Duration) market.Instance {
	e.t.Helper()
	inst := must(e.create(gpus))
	e.report(inst, market.ObservedRunning)
	e.advance(d)
	e.tick()
	stopped := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	e.report(stopped, market.ObservedStopped)
	e.tick()
	return e.inst(inst.ID)
}

// run advances the clock by d a minute at a time, with a background pass
// after each, as a running coordinator would.
func (e *env) run(d time.Duration) {
	e.t.Helper()
	for d > 0 {
		step := min(d, time.Minute)
		e.advance(step)
		e.tick()
		d -= step
	}
}

func TestSettlementDelayAndWithdrawals(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	e.earn(1, 10*time.Minute) // 0.10 charged, 0.09 earned
	r := must(e.svc.Earnings(e.ctx, e.host))
	if r.Total != 90_000 || r.Pending != 90_000 || r.Withdrawable != 0 {
		t.Fatalf("right after earning: total %s pending %s withdrawable %s; want 0.09, 0.09, 0", r.Total, r.Pending, r.Withdrawable)
	}
	if len(r.Days) != 1 || r.Days[0].Amount != 90_000 || r.Days[0].Pending != 90_000 || r.Machines[0].Pending != 90_000 {
		t.Errorf("per day and machine: %+v %+v", r.Days, r.Machines)
	}
	_, err := e.svc.Withdraw(e.ctx, e.host, "w-1", market.WithdrawRequest{Amount: 50_000})
	wantKind(t, err, market.InsufficientFunds, "pending")
	e.advance(31 * time.Minute)
	r = must(e.svc.Earnings(e.ctx, e.host))
	if r.Pending != 0 || r.Withdrawable != 90_000 || r.Machines[0].Pending != 0 {
		t.Fatalf("after the delay: pending %s withdrawable %s", r.Pending, r.Withdrawable)
	}

	for _, tc := range []struct {
		name   string
		key    string
		amount market.Money
		kind   market.Kind
		msg    string
	}{
		{"below the minimum", "w-2", 5_000, market.Invalid, "smallest withdrawal"},
		{"more than withdrawable", "w-3", 100_000, market.InsufficientFunds, "withdraw 0.09"},
		{"no key", "", 20_000, market.Invalid, "Idempotency-Key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Withdraw(e.ctx, e.host, tc.key, market.WithdrawRequest{Amount: tc.amount})
			wantKind(t, err, tc.kind, tc.msg)
			e.check()
		})
	}

	w1 := must(e.svc.Withdraw(e.ctx, e.host, "w-4", market.WithdrawRequest{Amount: 30_000}))
	w2 := must(e.svc.Withdraw(e.ctx, e.host, "w-5", market.WithdrawRequest{Amount: 40_000}))
	e.check()
	if r := must(e.svc.Earnings(e.ctx, e.host)); r.Total != 20_000 || r.Withdrawing != 70_000 {
		t.Fatalf("after two withdrawals: earnings %s, withdrawing %s; want 0.02, 0.07", r.Total, r.Withdrawing)
	}
	_, err = e.svc.CompleteWithdrawal(e.ctx, e.host, "c-0", w1.ID)
	wantKind(t, err, market.Forbidden, "admin")
	_, err = e.svc.RejectWithdrawal(e.ctx, e.admin, "r-0", w2.ID, " ")
	wantKind(t, err, market.Invalid, "why")
	done := must(e.svc.CompleteWithdrawal(e.ctx, e.admin, "c-1", w1.ID))
	if done.State != market.WithdrawalCompleted || done.DecidedBy != e.admin.ID {
		t.Errorf("completed withdrawal = %+v", done)
	}
	_, err = e.svc.RejectWithdrawal(e.ctx, e.admin, "r-1", w1.ID, "too late")
	wantKind(t, err, market.Conflict, "completed already")
	rej := must(e.svc.RejectWithdrawal(e.ctx, e.admin, "r-2", w2.ID, "bank details missing"))
	if rej.State != market.WithdrawalRejected || rej.Reason != "bank details missing" {
		t.Errorf("rejected withdrawal = %+v", rej)
	}
	e.check()
	if r := must(e.svc.Earnings(e.ctx, e.host)); r.Total != 60_000 || r.Withdrawing != 0 || r.Withdrawable != 60_000 {
		t.Errorf("after complete and reject: earnings %s withdrawing %s withdrawable %s; want 0.06, 0, 0.06", r.Total, r.Withdrawing, r.Withdrawable)
	}
	if ws := must(e.svc.Withdrawals(e.ctx, e.admin, true, market.WithdrawalPending)); len(ws) != 0 {
		t.Errorf("pending withdrawals left: %+v", ws)
	}
	if _, err := e.svc.Withdrawals(e.ctx, e.host, true, ""); !market.IsKind(err, market.Forbidden) {
		t.Errorf("a host listing everyone's withdrawals: %v, want forbidden", err)
	}
}

func TestIdempotencyKeys(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	first := must(e.svc.AddStake(e.ctx, e.renter, "k-1", market.StakeRequest{Amount: market.Tokens(10)}))
	for _, tc := range []struct {
		name string
		call func() error
		kind market.Kind
		msg  string
	}{
		{"same key, same request: the first result", func() error {
			again, err := e.svc.AddStake(e.ctx, e.renter, "k-1", market.StakeRequest{Amount: market.Tokens(10)})
			if err == nil && again.Staked != first.Staked {
				return fmt.Errorf("replay staked %s, first %s", again.Staked, first.Staked)
			}
			return err
		}, 0, ""},
		{"same key, other amount", func() error {
			_, err := e.svc.AddStake(e.ctx, e.renter, "k-1", market.StakeRequest{Amount: market.Tokens(11)})
			return err
		}, market.Conflict, "different stake"},
		{"same key, other call", func() error {
			_, err := e.svc.RemoveStake(e.ctx, e.renter, "k-1", market.StakeRequest{Amount: market.Tokens(10)})
			return err
		}, market.Conflict, "stake request"},
		{"another caller may use the same key", func() error {
			_, err := e.svc.Deposit(e.ctx, e.admin, "k-1", market.DepositRequest{Account: e.host.ID, Amount: market.Tokens(1)})
			return err
		}, 0, ""},
		{"a refusal is replayed even once it would succeed", func() error {
			_, err := e.svc.RemoveStake(e.ctx, e.renter, "k-2", market.StakeRequest{Amount: market.Tokens(20)})
			if !market.IsKind(err, market.InsufficientFunds) {
				return fmt.Errorf("first unstake of 20 with 10 staked: %v", err)
			}
			must(e.svc.AddStake(e.ctx, e.renter, "k-3", market.StakeRequest{Amount: market.Tokens(20)}))
			_, err = e.svc.RemoveStake(e.ctx, e.renter, "k-2", market.StakeRequest{Amount: market.Tokens(20)})
			return err
		}, market.InsufficientFunds, "cannot unstake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.kind == 0 {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
			} else {
				wantKind(t, err, tc.kind, tc.msg)
			}
			e.check()
		})
	}
	if in := must(e.svc.Stake(e.ctx, e.renter)); in.Staked != market.Tokens(30) {
		t.Errorf("staked %s, want 30 (10 once, then 20)", in.Staked)
	}
}

func TestStakingDividendsProRataToStakeTime(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	// Align to a period start: the clock starts at 03:00 UTC, a whole hour.
	other := e.account("staker@example.com", market.RoleRenter)
	e.deposit(other, market.Tokens(500))
	must(e.svc.AddStake(e.ctx, e.renter, "s-1", market.StakeRequest{Amount: market.Tokens(10)}))
	inst := must(e.create(2))
	e.report(inst, market.ObservedRunning)
	e.run(30 * time.Minute)
	must(e.svc.AddStake(e.ctx, other, "s-2", market.StakeRequest{Amount: market.Tokens(30)}))
	e.run(30*time.Minute + 10*time.Second)
	sts := must(e.svc.Statements(e.ctx, -1, 0))
	if len(sts) != 1 {
		t.Fatalf("statements after one period: %d, want 1", len(sts))
	}
	st := sts[0]
	if st.FeesIn <= 0 || st.Pool != st.FeesIn || st.Paid+st.CarriedOut != st.Pool {
		t.Fatalf("statement does not add up: %+v", st)
	}
	// Stake-time: renter 10 x 60 min, other 30 x 30 min: 600 to 900.
	want := map[market.AccountID]market.Money{e.renter.ID: st.Pool * 600 / 1500, other.ID: st.Pool * 900 / 1500}
	for _, sh := range st.Shares {
		if d := sh.Payout - want[sh.Account]; d < -1 || d > 1 {
			t.Errorf("payout of %s = %s, want %s (pool %s)", sh.Account, sh.Payout, want[sh.Account], st.Pool)
		}
	}
	if in := must(e.svc.Stake(e.ctx, other)); in.Dividends != want[other.ID] || in.TotalStaked != market.Tokens(40) {
		t.Errorf("stake of other = %+v", in)
	}
	e.tick() // nothing more to distribute
	if n := len(must(e.svc.Statements(e.ctx, -1, 0))); n != 1 {
		t.Errorf("a second tick in the same period made %d statements", n)
	}

	u := must(e.svc.RemoveStake(e.ctx, other, "u-1", market.StakeRequest{Amount: market.Tokens(30)}))
	if in := must(e.svc.Stake(e.ctx, other)); in.Staked != 0 || in.Unstaking != market.Tokens(30) || len(in.Unstakes) != 1 {
		t.Errorf("after unstaking: %+v", in)
	}
	e.advance(time.Hour)
	e.tick()
	if w := e.wallet(other); w.Available < market.Tokens(470)+want[other.ID] || w.Available >= market.Tokens(500) {
		t.Errorf("before the cooldown ends: available %s", w.Available)
	}
	e.advance(u.ReleaseAt.Sub(e.clock.Now()))
	e.tick()
	if in := must(e.svc.Stake(e.ctx, other)); in.Unstaking != 0 || len(in.Unstakes) != 0 {
		t.Errorf("after the cooldown: %+v", in)
	}
	if w := e.wallet(other); w.Available < market.Tokens(500) {
		t.Errorf("after the cooldown: available %s, want 500 and dividends", w.Available)
	}
	// Later periods: only the renter stakes, so it gets whole pools, and
	// every statement carries in what the last one carried out.
	sts = must(e.svc.Statements(e.ctx, -1, 100))
	for i := 0; i+1 < len(sts); i++ {
		if sts[i].CarriedIn != sts[i+1].CarriedOut || sts[i].Period != sts[i+1].Period+1 {
			t.Errorf("period %d carries in %s after %s carried out", sts[i].Period, sts[i].CarriedIn, sts[i+1].CarriedOut)
		}
	}
	e.check()
}

func TestLedgerCheckReportsEachInvariant(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	e.earn(1, 3*time.Minute)
	if _, err := e.svc.LedgerCheck(e.ctx, e.renter); !market.IsKind(err, market.Forbidden) {
		t.Errorf("renter ran the ledger check: %v", err)
	}
	r := must(e.svc.LedgerCheck(e.ctx, e.admin))
	if !r.OK || len(r.Checks) < 10 || r.Transfers == 0 {
		t.Fatalf("report = %+v", r)
	}
	for _, c := range r.Checks {
		if !c.OK {
			t.Errorf("%s: %v", c.Name, c.Details)
		}
	}
}

// TestConcurrentSpendingNeverGoesNegative has 100 goroutines spend one
// balance at once, staking it or paying a host with it, through four
// coordinators on one database: exactly as many succeed as it covers.
// On SQLite the single writer serialises them; on Postgres (when
// GPUMARKET_TEST_POSTGRES is set) they run concurrently in SERIALIZABLE
// transactions over several connection pools, which collide and are
// retried. A spend the database was too busy to finish (Unavailable) is
// retried with its idempotency key, as a client would.
func TestConcurrentSpendingNeverGoesNegative(t *testing.T) {
	for name, open := range replicaStores(t, 4) {
		t.Run(name, func(t *testing.T) {
			if name == "postgres" {
				pgtest.ServerURL(t) // skips without a server
			}
			testConcurrentSpending(t, open(t))
		})
	}
}

func testConcurrentSpending(t *testing.T, stores []coord.Store) {
	e := newEnvOn(t, stores[0], shortMoney)
	var svcs []*coord.Service
	for i, st := range stores {
		svcs = append(svcs, coord.New(coord.Config{Store: st, Clock: e.clock, Passwords: plainPasswords{}, Node: fmt.Sprintf("c%d", i+1)}))
	}
	spender := e.account("spender@example.com", market.RoleRenter)
	e.deposit(spender, market.Tokens(50)+500_000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, short, busy := 0, 0, 0
	start := make(chan struct{})
	for i := range 100 {
		svc := svcs[i%len(svcs)]
		key := fmt.Sprintf("spend-%d", i)
		spend := func() error {
			if i%2 == 0 {
				_, err := svc.AddStake(e.ctx, spender, key, market.StakeRequest{Amount: market.Tokens(1)})
				return err
			}
			_, err := svc.PayHost(e.ctx, spender, key, market.PayRequest{Host: e.host.ID, Amount: market.Tokens(1)})
			return err
		}
		wg.Go(func() {
			<-start
			err := spend()
			for try := 0; market.IsKind(err, market.Unavailable) && try < 20; try++ {
				mu.Lock()
				busy++
				mu.Unlock()
				err = spend()
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case market.IsKind(err, market.InsufficientFunds):
				short++
			default:
				t.Errorf("spend %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	t.Logf("%d spent, %d refused, %d retries of a busy database", ok, short, busy)
	w := e.wallet(spender)
	if ok != 50 || short != 50 || w.Available != 500_000 {
		t.Errorf("%d spent, %d refused, %s left; want 50, 50, 0.5", ok, short, w.Available)
	}
	e.check()
}

// TestConcurrentReplaysHaveOneEffect sends each money call 50 times at
// once with one key: it takes effect once and every caller gets the same
// answer.
func TestConcurrentReplaysHaveOneEffect(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	e.earn(2, 30*time.Minute)
	e.advance(31 * time.Minute)
	must(e.svc.AddStake(e.ctx, e.renter, "pre", market.StakeRequest{Amount: market.Tokens(10)}))
	w := must(e.svc.Withdraw(e.ctx, e.host, "pre", market.WithdrawRequest{Amount: 20_000}))
	w2 := must(e.svc.Withdraw(e.ctx, e.host, "pre2", market.WithdrawRequest{Amount: 20_000}))
	earned := e.earn(1, 10*time.Minute) // unsettled: refunds take from it
	calls := []struct {
		name string
		call func() (string, error)
	}{
		{"deposit", func() (string, error) {
			t, err := e.svc.Deposit(e.ctx, e.admin, "same", market.DepositRequest{Account: e.renter.ID, Amount: market.Tokens(7)})
			return fmt.Sprint(t.Seq), err
		}},
		{"withdraw", func() (string, error) {
			w, err := e.svc.Withdraw(e.ctx, e.host, "same", market.WithdrawRequest{Amount: 30_000})
			return string(w.ID), err
		}},
		{"complete", func() (string, error) {
			w, err := e.svc.CompleteWithdrawal(e.ctx, e.admin, "same-c", w.ID)
			return string(w.State), err
		}},
		{"reject", func() (string, error) {
			w, err := e.svc.RejectWithdrawal(e.ctx, e.admin, "same-r", w2.ID, "no")
			return string(w.State), err
		}},
		{"stake", func() (string, error) {
			_, err := e.svc.AddStake(e.ctx, e.renter, "same", market.StakeRequest{Amount: market.Tokens(3)})
			return "", err
		}},
		{"unstake", func() (string, error) {
			u, err := e.svc.RemoveStake(e.ctx, e.renter, "same-u", market.StakeRequest{Amount: market.Tokens(4)})
			return u.ID, err
		}},
		{"refund", func() (string, error) {
			r, err := e.svc.Refund(e.ctx, e.admin, "same-rf", market.RefundRequest{Instance: earned.ID, FromMinute: 0, ToMinute: 2, Reason: "down"})
			return string(r.ID), err
		}},
		{"downtime refund", func() (string, error) {
			r, err := e.svc.RefundDowntime(e.ctx, market.RefundRequest{Instance: earned.ID, FromMinute: 2, ToMinute: 4, Reason: "down"})
			return string(r.ID), err
		}},
		{"pay host", func() (string, error) {
			t, err := e.svc.PayHost(e.ctx, e.renter, "same-pay", market.PayRequest{Host: e.host.ID, Amount: market.Tokens(1)})
			return fmt.Sprint(t.Seq), err
		}},
		{"create instance", func() (string, error) {
			i, err := e.svc.CreateInstanceOnce(e.ctx, e.renter, "same-ci", market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}})
			return string(i.ID), err
		}},
		{"create instance on the best offer", func() (string, error) {
			i, err := e.svc.CreateInstanceOnce(e.ctx, e.renter, "same-auto", market.CreateInstanceRequest{Auto: "gpu_name=RTX_4090", GPUs: 1, Command: []string{"x"}})
			return string(i.ID), err
		}},
	}
	before := e.wallet(e.renter)
	instsBefore := len(must(e.svc.Instances(e.ctx, e.renter, false)))
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var wg sync.WaitGroup
			results := make([]string, 50)
			for i := range results {
				wg.Go(func() {
					r, err := c.call()
					if err != nil {
						r = "error: " + err.Error()
					}
					results[i] = r
				})
			}
			wg.Wait()
			for i, r := range results {
				if r != results[0] || (len(r) > 5 && r[:6] == "error:") {
					t.Fatalf("call %d answered %q, call 0 %q", i, r, results[0])
				}
			}
			e.check()
		})
	}
	after := e.wallet(e.renter)
	// Refunded: minutes 0-3 of one GPU at 0.60 per GPU-hour, 0.01 each.
	if d := after.Available - before.Available; d != market.Tokens(7-3-1)+40_000-1_200_000 {
		t.Errorf("renter's available changed by %s; want +7 deposit -3 stake -1 payment +0.04 refunds -1.2 held for two creates", d)
	}
	if d := after.Escrow - before.Escrow; d != 1_200_000 {
		t.Errorf("renter's escrow changed by %s; want 1.2: one hour of one GPU for each of the two creates", d)
	}
	if n := len(must(e.svc.Instances(e.ctx, e.renter, false))) - instsBefore; n != 2 {
		t.Errorf("the replayed creates made %d instances, want 2 (one per key)", n)
	}
	in := must(e.svc.Stake(e.ctx, e.renter))
	if in.Staked != market.Tokens(10+3-4) || in.Unstaking != market.Tokens(4) {
		t.Errorf("stake = %+v; want 9 staked, 4 unstaking", in)
	}
	r := must(e.svc.Earnings(e.ctx, e.host))
	if r.Withdrawing != 30_000 {
		t.Errorf("withdrawing %s, want 0.03 (the one queued by the replays)", r.Withdrawing)
	}
}

// TestSimulation runs random sequences of deposits, rentals, spot bids
// (placed, changed, cancelled, won and lost in the clearing rounds that
// come as the clock advances), agent reports, clock advances, stops, host
// losses, withdrawals, stakes, refunds, payments in a project asset and
// coordinator restarts, and checks every ledger invariant, and that no
// GPU is given twice, after every step. It runs on SQLite, and on
// Postgres too when GPUMARKET_TEST_POSTGRES is set. A failure names its
// store and seed; run one seed with -run 'TestSimulation/sqlite/seed=N'.
//
// Seeds per store: -sim.seeds N or GPUMARKET_SIM_SEEDS=N; by default 300
// on SQLite and 50 on Postgres (40 and 10 with -short or -race).
func TestSimulation(t *testing.T) {
	seeds := *simSeeds
	if v := os.Getenv("GPUMARKET_SIM_SEEDS"); seeds == 0 && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("GPUMARKET_SIM_SEEDS=%q: want a number of seeds, at least 1", v)
		}
		seeds = n
	}
	const steps = 40
	quick := testing.Short() || raceEnabled
	for name, open := range replicaStores(t, 1) {
		n := seeds
		switch {
		case n > 0:
		case name == "postgres" && quick:
			n = 10
		case name == "postgres":
			n = 50 // a database per seed
		case quick:
			n = 40
		default:
			n = 300
		}
		t.Run(name, func(t *testing.T) {
			if name == "postgres" {
				pgtest.ServerURL(t) // skips without a server
			}
			for seed := range n {
				t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
					t.Parallel()
					simulate(t, open(t)[0], uint64(seed), steps)
				})
			}
		})
	}
}

var simSeeds = flag.Int("sim.seeds", 0, "seeds TestSimulation runs per store (0: GPUMARKET_SIM_SEEDS, else 300 on SQLite and 50 on Postgres, 40 and 10 with -short or -race)")

func simulate(t *testing.T, store coord.Store, seed uint64, steps int) {
	var cfg coord.Config
	e := newEnvOn(t, store, func(c *coord.Config) {
		shortMoney(c)
		c.LostAfter = time.Hour
		c.SpotInterval = 2 * time.Minute // rounds come often as the clock advances
		c.Node = "sim"                   // a restarted coordinator keeps the lease
		cfg = *c
	})
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	staker := e.account("staker@example.com", market.RoleRenter)
	e.deposit(staker, market.Tokens(int64(1+rng.IntN(50))))
	// A project asset, which must balance on its own.
	must(e.svc.CreateAsset(e.ctx, e.admin, market.CreateAssetRequest{Name: "DPN"}))
	must(e.svc.Deposit(e.ctx, e.admin, "dpn-seed", market.DepositRequest{Account: e.renter.ID, Asset: "DPN", Amount: market.Tokens(int64(1 + rng.IntN(20)))}))
	// Spot terms (reserve 1 token per GPU-day, 0.10 per kWh, at most
	// 400 W) and a second bidder, who may run out of money.
	reserve, energy, maxW := market.Tokens(1), market.Money(100_000), 400
	must(e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{SpotReservePerGPUDay: &reserve, EnergyPerKWh: &energy, MaxPowerW: &maxW}))
	bidder := e.account("bidder@example.com", market.RoleRenter)
	e.deposit(bidder, market.Tokens(int64(1+rng.IntN(30))))
	type bidRef struct {
		id  market.BidID
		who market.Account
	}
	var bids []bidRef
	var live, rented []market.Instance
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d, step %d (%v): %s", seed, len(log), log, fmt.Sprintf(format, args...))
	}
	allowed := func(err error) bool {
		switch market.KindOf(err) {
		case market.Invalid, market.InsufficientFunds, market.Conflict, market.NotFound, market.Unavailable:
			return true
		}
		return err == nil
	}
	key := func() string { return fmt.Sprintf("k-%d", rng.Uint64()) }
	alive := true
	done := map[string]int{}
	defer func() {
		spot, spotMins, preempted := 0, int64(0), 0
		if insts, err := e.svc.Instances(e.ctx, e.admin, true); err == nil {
			for _, inst := range insts {
				if inst.Kind == market.Spot {
					spot++
					spotMins += inst.BilledMins
				}
				if inst.State == market.InstancePreempted {
					preempted++
				}
			}
		}
		t.Logf("seed %d: successful steps %v; %d spot instances billed %d minutes, %d preempted", seed, done, spot, spotMins, preempted)
	}()
	// agentSync is the agent reconciling: it starts what it should run
	// (most of the time) and reports stopped what it was told to stop.
	agentSync := func() error {
		var reps []market.InstanceReport
		for _, inst := range must(e.svc.Instances(e.ctx, e.admin, true)) {
			switch {
			case inst.State == market.InstanceStopping:
				reps = append(reps, market.InstanceReport{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedStopped})
			case (inst.State == market.InstancePending || inst.State == market.InstanceStarting) && rng.IntN(4) > 0:
				reps = append(reps, market.InstanceReport{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning})
			}
		}
		_, err := e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{Instances: reps})
		return err
	}
	for range steps {
		var err error
		op := rng.IntN(23)
		switch {
		case op == 6 && (!alive || rng.IntN(3) > 0), op == 12:
			op = 3 // mostly, time passes
		case op == 11:
			op = 5 // stops, so that rentals do not fill the machine for good
		case op >= 13 && op < 15:
			op = 7 + (op-13)*1 // withdrawals and their decisions
		}
		switch op {
		case 0:
			log = append(log, "deposit")
			_, err = e.svc.Deposit(e.ctx, e.admin, key(), market.DepositRequest{Account: e.renter.ID, Amount: market.Money(rng.Int64N(int64(market.Tokens(5))) + 1)})
		case 1, 2:
			log = append(log, "rent")
			var inst market.Instance
			k := key()
			req := market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1 + rng.IntN(2), Command: []string{"sleep", "60"}}
			if rng.IntN(3) == 0 {
				req.Machine, req.Auto = "", "gpu_name=RTX_4090"
			}
			inst, err = e.svc.CreateInstanceOnce(e.ctx, e.renter, k, req)
			if rng.IntN(4) == 0 {
				// A retry of the same call: the same answer, no second
				// instance or hold.
				log = append(log, "rent replayed")
				again, err2 := e.svc.CreateInstanceOnce(e.ctx, e.renter, k, req)
				if again.ID != inst.ID || market.KindOf(err2) != market.KindOf(err) {
					fail("replayed create answered %s (%v), first %s (%v)", again.ID, err2, inst.ID, err)
				}
			}
			if err == nil {
				live = append(live, inst)
				rented = append(rented, inst)
				if rng.IntN(4) > 0 && alive {
					e.report(inst, market.ObservedRunning)
				}
			}
		case 3, 4:
			d := []time.Duration{10 * time.Second, time.Minute, 7 * time.Minute, 25 * time.Minute}[rng.IntN(4)]
			log = append(log, "advance "+d.String())
			e.clock.Advance(d)
			if !alive && rng.IntN(3) > 0 {
				alive = true // the host comes back
				log = append(log, "host back")
			}
			if alive {
				_, err = e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{})
			}
		case 5:
			if len(live) == 0 {
				continue
			}
			i := rng.IntN(len(live))
			log = append(log, "stop")
			var stopped market.Instance
			if stopped, err = e.svc.StopInstance(e.ctx, e.renter, live[i].ID); err == nil && alive && rng.IntN(2) == 0 {
				_, err = e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{Instances: []market.InstanceReport{{Instance: stopped.ID, Generation: stopped.Generation, State: market.ObservedStopped}}})
			}
			live = append(live[:i], live[i+1:]...)
		case 6:
			log = append(log, "host lost")
			alive = false
			e.clock.Advance(2 * time.Hour)
		case 7:
			req := market.WithdrawRequest{Amount: market.Money(rng.Int64N(200_000))}
			if rng.IntN(3) == 0 {
				req.Asset, req.Amount = "DPN", market.Money(rng.Int64N(int64(market.Tokens(3))))
			}
			log = append(log, "withdraw "+string(req.Asset))
			_, err = e.svc.Withdraw(e.ctx, e.host, key(), req)
		case 8:
			ws, lerr := e.svc.Withdrawals(e.ctx, e.admin, true, market.WithdrawalPending)
			if lerr != nil || len(ws) == 0 {
				continue
			}
			w := ws[rng.IntN(len(ws))]
			if rng.IntN(2) == 0 {
				log = append(log, "complete")
				_, err = e.svc.CompleteWithdrawal(e.ctx, e.admin, key(), w.ID)
			} else {
				log = append(log, "reject")
				_, err = e.svc.RejectWithdrawal(e.ctx, e.admin, key(), w.ID, "simulated")
			}
		case 9:
			who := []market.Account{e.renter, staker}[rng.IntN(2)]
			log = append(log, "stake")
			_, err = e.svc.AddStake(e.ctx, who, key(), market.StakeRequest{Amount: market.Money(rng.Int64N(int64(market.Tokens(10))) + 1)})
		case 10:
			who := []market.Account{e.renter, staker}[rng.IntN(2)]
			log = append(log, "unstake")
			_, err = e.svc.RemoveStake(e.ctx, who, key(), market.StakeRequest{Amount: market.Money(rng.Int64N(int64(market.Tokens(10))) + 1)})
		}
		switch op {
		case 18, 22:
			who := []market.Account{e.renter, bidder}[rng.IntN(2)]
			req := market.CreateBidRequest{Machine: e.mach.ID, GPUs: []int{0, 1, 1, 1, 2, 2, 3}[rng.IntN(7)], // 0: all of them
				PricePerGPUDay: []market.Money{market.Tokens(1), market.Tokens(2), 14_400_000, market.Tokens(30)}[rng.IntN(4)],
				PowerLimitW:    150 + 50*rng.IntN(6), NoticeSeconds: 20 * rng.IntN(4), Command: []string{"sleep", "inf"}}
			if rng.IntN(4) == 0 {
				req.LifetimeSeconds = int64(60 * (1 + rng.IntN(90))) // it may expire
			}
			log = append(log, fmt.Sprintf("bid %d GPUs at %s", req.GPUs, req.PricePerGPUDay))
			var b market.Bid
			if b, err = e.svc.CreateBid(e.ctx, who, req); err == nil {
				bids = append(bids, bidRef{b.ID, who})
			}
		case 19, 20:
			if len(bids) == 0 {
				continue
			}
			i := rng.IntN(len(bids))
			b := bids[i]
			if op == 19 {
				log = append(log, "cancel bid")
				_, err = e.svc.CancelBid(e.ctx, b.who, b.id)
				bids = append(bids[:i], bids[i+1:]...)
			} else {
				log = append(log, "change bid")
				price := market.Money(1+rng.Int64N(30)) * market.Tokens(1)
				_, err = e.svc.ChangeBid(e.ctx, b.who, b.id, market.BidChange{PricePerGPUDay: &price})
			}
		case 21:
			if !alive {
				continue
			}
			log = append(log, "agent reports")
			err = agentSync()
		}
		if op == 17 {
			// The coordinator restarts: everything it kept in memory
			// (caches, the last spot round, heartbeats) is gone.
			log = append(log, "restart")
			e.svc = coord.New(cfg)
			err = e.svc.RebuildIndex(e.ctx)
		}
		if op == 16 {
			log = append(log, "pay in DPN")
			_, err = e.svc.PayHost(e.ctx, e.renter, key(), market.PayRequest{Host: e.host.ID, Asset: "DPN", Amount: market.Money(rng.Int64N(int64(market.Tokens(5))) + 1)})
		}
		if op == 15 && len(rented) > 0 {
			inst := rented[rng.IntN(len(rented))]
			from := rng.Int64N(30)
			req := market.RefundRequest{Instance: inst.ID, FromMinute: from, ToMinute: from + 1 + rng.Int64N(10), Reason: "simulated downtime"}
			if rng.IntN(2) == 0 {
				log = append(log, "refund")
				_, err = e.svc.Refund(e.ctx, e.admin, key(), req)
			} else {
				log = append(log, "downtime refund")
				_, err = e.svc.RefundDowntime(e.ctx, req)
			}
		}
		if !allowed(err) {
			fail("unexpected error: %v", err)
		}
		if err == nil && len(log) > 0 {
			done[log[len(log)-1]]++
		}
		if alive && rng.IntN(2) == 0 {
			// The agent polls between steps as well.
			if err := agentSync(); err != nil && !allowed(err) {
				fail("agent report: %v", err)
			}
		}
		if err := e.svc.Tick(e.ctx); err != nil {
			fail("tick: %v", err)
		}
		if err := e.svc.CheckLedger(e.ctx); err != nil {
			fail("%v", err)
		}
		// No GPU is given to two instances that may run on it: an
		// instance told to stop may still hold GPUs a new one got.
		held := map[int]market.InstanceID{}
		for _, inst := range must(e.svc.Instances(e.ctx, e.admin, true)) {
			if inst.State != market.InstancePending && inst.State != market.InstanceStarting && inst.State != market.InstanceRunning {
				continue
			}
			for _, g := range inst.GPUs {
				if other, ok := held[g]; ok {
					fail("GPU %d is given to both %s and %s", g, other, inst.ID)
				}
				held[g] = inst.ID
			}
		}
	}
}
