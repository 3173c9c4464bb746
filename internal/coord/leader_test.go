package coord_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

// replicaStores opens n stores on one database: an SQLite file, or a fresh
// Postgres database when the test script started a server.
func replicaStores(t *testing.T, n int) map[string]func(t *testing.T) []coord.Store {
	open := func(t *testing.T, one func() (coord.Store, error)) []coord.Store {
		var ss []coord.Store
		for range n {
			s, err := one()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ss = append(ss, s)
		}
		return ss
	}
	m := map[string]func(t *testing.T) []coord.Store{
		"sqlite": func(t *testing.T) []coord.Store {
			path := t.TempDir() + "/shared.db"
			return open(t, func() (coord.Store, error) { return sqlite.Open(t.Context(), path) })
		},
	}
	if !testing.Short() {
		m["postgres"] = func(t *testing.T) []coord.Store {
			url := pgtest.FreshDatabase(t)
			return open(t, func() (coord.Store, error) { return postgres.Open(t.Context(), url) })
		}
	}
	return m
}

// TestLeaderFailover runs three coordinators on one database with one fake
// clock, the way `serve` runs them (every replica serves the API and ticks;
// the lease decides who works). The leader dies in the middle of billing;
// another takes over within the lease time; the dead leader wakes up and
// tries to bill with its old generation and is refused. Every minute is
// billed exactly once, no GPU is given twice, no machine is taken offline.
func TestLeaderFailover(t *testing.T) {
	for name, open := range replicaStores(t, 3) {
		t.Run(name, func(t *testing.T) {
			if name == "postgres" {
				pgtest.ServerURL(t) // skips without a server
			}
			testLeaderFailover(t, open(t))
		})
	}
}

func testLeaderFailover(t *testing.T, stores []coord.Store) {
	ctx := t.Context()
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
	const ttl = 15 * time.Second
	var svcs []*coord.Service
	for i, st := range stores {
		svcs = append(svcs, coord.New(coord.Config{Store: st, Clock: clock, Passwords: plainPasswords{},
			Node: fmt.Sprintf("c%d", i+1), LeaseTTL: ttl}))
	}
	// Users and machines go through different replicas.
	e := &env{t: t, ctx: ctx, clock: clock, store: stores[0], svc: svcs[0]}
	e.admin = must(svcs[0].CreateAccount(ctx, "admin@example.com", "password1", []market.Role{market.RoleAdmin}))
	e.host = must(svcs[1].Signup(ctx, market.SignupRequest{Email: "host@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}}))
	e.renter = must(svcs[2].Signup(ctx, market.SignupRequest{Email: "renter@example.com", Password: "password1", Roles: []market.Role{market.RoleRenter}}))
	e.mach = e.machine(e.host, "fp-1", 4)
	e.deposit(e.renter, market.Tokens(1000))
	for _, s := range svcs {
		if err := s.RebuildIndex(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Eight renters' creates for one GPU each race through the three
	// replicas: four win, on four different GPUs.
	var mu sync.Mutex
	var insts []market.Instance
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			inst, err := svcs[i%3].CreateInstance(ctx, e.renter, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"sleep", "1h"}})
			switch {
			case err == nil:
				mu.Lock()
				insts = append(insts, inst)
				mu.Unlock()
			case !market.IsKind(err, market.Conflict) && !market.IsKind(err, market.Unavailable):
				t.Errorf("create through c%d: %v", i%3+1, err)
			}
		})
	}
	wg.Wait()
	var gpus []int
	for _, inst := range insts {
		gpus = append(gpus, inst.GPUs...)
	}
	slices.Sort(gpus)
	if !slices.Equal(gpus, slices.Compact(slices.Clone(gpus))) || len(gpus) > 4 {
		t.Fatalf("GPUs given: %v; a GPU was given twice", gpus)
	}
	if len(insts) == 0 {
		t.Fatal("no create succeeded")
	}
	report := func(s *coord.Service) {
		t.Helper()
		r := market.Report{}
		for _, inst := range insts {
			r.Instances = append(r.Instances, market.InstanceReport{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning})
		}
		if _, err := s.Report(ctx, e.host, e.mach.ID, r); err != nil {
			t.Fatalf("report: %v", err)
		}
	}
	report(svcs[0])
	started := clock.Now()

	alive := []*coord.Service{svcs[0], svcs[1], svcs[2]}
	leaders := func() []*coord.Service {
		var ls []*coord.Service
		for _, s := range alive {
			if s.Leadership().IsLeader {
				ls = append(ls, s)
			}
		}
		return ls
	}
	// step moves the clock 5 s; the agent heartbeats through one replica
	// (an empty report: memory only) and every live replica ticks at once.
	step := func() {
		t.Helper()
		clock.Advance(5 * time.Second)
		s := alive[rand.IntN(len(alive))]
		if _, err := s.Report(ctx, e.host, e.mach.ID, market.Report{}); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		var wg sync.WaitGroup
		for _, s := range alive {
			wg.Go(func() {
				if err := s.Tick(ctx); err != nil && !coord.IsNotLeader(err) && !market.IsKind(err, market.Unavailable) {
					t.Errorf("tick of %s: %v", s.Leadership().Node, err)
				}
			})
		}
		wg.Wait()
		if ls := leaders(); len(ls) > 1 {
			t.Fatalf("%d replicas think they lead", len(ls))
		}
	}
	for range 24 { // two minutes
		step()
	}
	ls := leaders()
	if len(ls) != 1 {
		t.Fatalf("%d leaders after two minutes, want 1", len(ls))
	}
	dead := ls[0]
	deadGen := dead.Leadership().Generation
	alive = slices.DeleteFunc(alive, func(s *coord.Service) bool { return s == dead })

	// The leader dies (stops ticking, its memory lost) with 30 s of the
	// third minute run. Another replica must lead within the TTL.
	killed := clock.Now()
	for len(leaders()) == 0 {
		if clock.Now().Sub(killed) > ttl+5*time.Second {
			t.Fatalf("no replica took over %s after the leader died (lease %s)", clock.Now().Sub(killed), ttl)
		}
		step()
	}
	took := clock.Now().Sub(killed)
	next := leaders()[0].Leadership()
	if next.Generation != deadGen+1 {
		t.Errorf("new leader's generation %d, want %d", next.Generation, deadGen+1)
	}
	t.Logf("%s took over from %s after %s of clock time (lease %s)", next.Node, dead.Leadership().Node, took, ttl)
	for range 24 {
		step()
	}

	// The dead leader wakes up believing it still leads: every write it
	// tries is refused, and nothing it did shows in the ledger.
	err := dead.PassAs(ctx, deadGen)
	if !coord.IsNotLeader(err) {
		t.Errorf("the old leader's pass after losing the lease: %v, want refused by the fence", err)
	}
	if err := svcs[0].CheckLedger(ctx); err != nil {
		t.Fatalf("ledger: %v", err)
	}
	now := clock.Now()
	for _, inst := range insts {
		got := must(svcs[1].Instance(ctx, e.admin, inst.ID))
		want := int64(now.Sub(started) / time.Minute)
		if got.State != market.InstanceRunning || got.BilledMins != want {
			t.Errorf("instance %s: %s, billed %d minutes, want running and %d (none skipped or twice)", inst.ID, got.State, got.BilledMins, want)
		}
	}
	m := must(svcs[2].Machine(ctx, e.host, e.mach.ID))
	if !m.Online {
		t.Errorf("machine went offline during the failover")
	}
}

// TestLeaseFencesPausedLeader: a leader whose lease another replica took
// cannot commit loop work, even mid-billing, while the new leader bills.
func TestLeaseFencesConcurrentPasses(t *testing.T) {
	for name, open := range replicaStores(t, 2) {
		t.Run(name, func(t *testing.T) {
			if name == "postgres" {
				pgtest.ServerURL(t)
			}
			stores := open(t)
			ctx := t.Context()
			clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
			a := coord.New(coord.Config{Store: stores[0], Clock: clock, Passwords: plainPasswords{}, Node: "a"})
			b := coord.New(coord.Config{Store: stores[1], Clock: clock, Passwords: plainPasswords{}, Node: "b"})
			e := &env{t: t, ctx: ctx, clock: clock, store: stores[0], svc: a}
			e.admin = must(a.CreateAccount(ctx, "admin@example.com", "password1", []market.Role{market.RoleAdmin}))
			e.host = e.account("host@example.com", market.RoleHost)
			e.renter = e.account("renter@example.com", market.RoleRenter)
			e.mach = e.machine(e.host, "fp-1", 4)
			e.deposit(e.renter, market.Tokens(1000))
			var insts []market.Instance
			for range 4 {
				inst := must(e.create(1))
				e.report(inst, market.ObservedRunning)
				insts = append(insts, inst)
			}
			e.tick() // a leads, generation 1
			if !a.Leadership().IsLeader {
				t.Fatal("a does not lead after its tick")
			}
			// a pauses; its lease runs out; b takes over. Meanwhile a
			// wakes and works with generation 1, racing b's passes.
			for i := range 20 {
				clock.Advance(30 * time.Second)
				must(b.Report(ctx, e.host, e.mach.ID, market.Report{}))
				var wg sync.WaitGroup
				var errA error
				wg.Go(func() { errA = a.PassAs(ctx, 1) })
				wg.Go(func() {
					if err := b.Tick(ctx); err != nil {
						t.Errorf("b's tick %d: %v", i, err)
					}
				})
				wg.Wait()
				if !coord.IsNotLeader(errA) {
					t.Fatalf("a's pass %d with a lost lease: %v, want refused", i, errA)
				}
			}
			if !b.Leadership().IsLeader || b.Leadership().Generation != 2 {
				t.Errorf("b: %+v, want leader with generation 2", b.Leadership())
			}
			if err := b.CheckLedger(ctx); err != nil {
				t.Fatal(err)
			}
			for _, inst := range insts {
				got := e.inst(inst.ID)
				if got.BilledMins != 10 {
					t.Errorf("instance %s billed %d minutes, want 10", inst.ID, got.BilledMins)
				}
			}
		})
	}
}
