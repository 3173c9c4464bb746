package coord_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

// BenchmarkBillingTick measures one background tick that bills one minute
// of every running instance: 100,000 on-demand instances of one GPU each,
// on 12,500 machines of 8 GPUs owned by 1,000 hosts, rented by 10,000
// renters. Each iteration advances the clock by one minute and runs
// Service.Tick, the whole pass a leader runs (lost-host detection, spot,
// billing, unstakes, dividends). The store is seeded once through the
// Store interface, not timed.
//
//	go test -run XXX -bench BillingTick -benchtime 5x ./internal/coord/
//
// The Postgres case runs when GPUMARKET_TEST_POSTGRES is set.
// GPUMARKET_BENCH_INSTANCES changes the number of instances.
func BenchmarkBillingTick(b *testing.B) {
	n := benchSize(b, "GPUMARKET_BENCH_INSTANCES", 100_000, 8)
	onStores(b, func(b *testing.B, store coord.Store) { benchTick(b, store, n) })
}

// onStores runs bench on a fresh SQLite file ("sqlite") and on a fresh
// Postgres database ("postgres", which runs when GPUMARKET_TEST_POSTGRES
// is set).
func onStores(b *testing.B, bench func(b *testing.B, store coord.Store)) {
	b.Run("sqlite", func(b *testing.B) {
		store, err := sqlite.Open(b.Context(), b.TempDir()+"/bench.db")
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		bench(b, store)
	})
	b.Run("postgres", func(b *testing.B) {
		store, err := postgres.Open(b.Context(), pgtest.FreshDatabase(b))
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		bench(b, store)
	})
}

// benchSize is the number the environment variable env sets, or def when
// it is unset; at least least.
func benchSize(b *testing.B, env string, def, least int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		b.Fatalf("%s=%q: want a number of at least %d", env, v, least)
	}
	return n
}

func benchTick(b *testing.B, store coord.Store, n int) {
	ctx := b.Context()
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: t0}
	svc := coord.New(coord.Config{Store: store, Clock: clock, Passwords: plainPasswords{}, LostAfter: 30 * 24 * time.Hour})
	seedRunning(b, ctx, store, n, t0)
	if err := svc.Tick(ctx); err != nil { // takes the lease; nothing due yet
		b.Fatal(err)
	}
	// The machine the figures come from is shared: besides wall time per
	// tick, report the CPU time this process spent per tick (Getrusage),
	// which other load does not inflate as much.
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		clock.Advance(time.Minute)
		before := cpuTime()
		b.StartTimer()
		if err := svc.Tick(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime() - before
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	// Every instance was charged each minute that passed, once.
	var billed int64
	err := store.Tx(ctx, func(tx coord.Tx) error {
		rows, err := tx.BillableInstances(ctx, "", 0)
		for _, r := range rows {
			billed += r.BilledMins
		}
		if len(rows) != n {
			return fmt.Errorf("%d billable instances, want %d", len(rows), n)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	mins := int64(clock.Now().Sub(t0) / time.Minute)
	if billed != mins*int64(n) {
		b.Fatalf("billed %d instance-minutes over %d minutes of %d instances, want %d", billed, mins, n, mins*int64(n))
	}
	b.ReportMetric(float64(n), "instances")
}

// seedRunning writes n running one-GPU instances started at t0, with
// hosts, machines and renters who can pay for a day, in transactions of a
// few thousand rows.
func seedRunning(b *testing.B, ctx context.Context, store coord.Store, n int, t0 time.Time) {
	b.Helper()
	const gpusPer, instPerRenter, machinesPerHost = 8, 10, 12
	machines := (n + gpusPer - 1) / gpusPer
	hosts := (machines + machinesPerHost - 1) / machinesPerHost
	renters := (n + instPerRenter - 1) / instPerRenter
	price := market.Money(600_000)
	tx := func(fn func(tx coord.Tx) error) {
		b.Helper()
		if err := store.Tx(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
	acct := func(kind string, i int) market.AccountID { return market.AccountID(fmt.Sprintf("a-%s%07d", kind, i)) }
	for chunk := range slices.Chunk(slices.Collect(rangeN(hosts+renters)), 5000) {
		tx(func(tx coord.Tx) error {
			var deposits []market.Transfer
			for _, i := range chunk {
				id, role := acct("h", i), market.RoleHost
				if i >= hosts {
					id, role = acct("r", i-hosts), market.RoleRenter
					deposits = append(deposits, ledger.Deposit(id, price*24*instPerRenter, "seed:"+string(id), "seed", t0))
				}
				if err := tx.InsertAccount(ctx, market.Account{ID: id, Email: string(id) + "@example.com", Roles: []market.Role{role}, CreatedAt: t0}); err != nil {
					return err
				}
			}
			_, err := tx.ApplyTransfers(ctx, deposits)
			return err
		})
	}
	for chunk := range slices.Chunk(slices.Collect(rangeN(machines)), 2000) {
		tx(func(tx coord.Tx) error {
			for _, i := range chunk {
				m := market.Machine{ID: market.MachineID(fmt.Sprintf("m-%07d", i)), Owner: acct("h", i/machinesPerHost),
					Hardware: market.Hardware{Fingerprint: fmt.Sprintf("fp-%d", i), Hostname: "box", Runner: "process", CPUCores: 64, RAMMiB: 1 << 20},
					Listed:   true, Online: true, Status: market.MachineListed, PricePerGPUHour: price, LastSeenAt: t0, CreatedAt: t0}
				for g := range gpusPer {
					m.GPUs = append(m.GPUs, market.GPU{Index: g, UUID: fmt.Sprintf("gpu-%d-%d", i, g), Model: "RTX 4090", VRAMMiB: 24564, MinPowerW: 150, MaxPowerW: 450})
				}
				if err := tx.InsertMachine(ctx, m); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for chunk := range slices.Chunk(slices.Collect(rangeN(n)), 2000) {
		tx(func(tx coord.Tx) error {
			for _, i := range chunk {
				inst := market.Instance{ID: market.InstanceID(fmt.Sprintf("i-%07d", i)), Renter: acct("r", i/instPerRenter),
					Machine: market.MachineID(fmt.Sprintf("m-%07d", i/gpusPer)), Kind: market.OnDemand, GPUs: []int{i % gpusPer},
					Command: []string{"sleep", "inf"}, State: market.InstanceRunning, Generation: 1, PricePerHour: price,
					CreatedAt: t0, StartedAt: &t0, GraceSeconds: 10}
				if err := tx.InsertInstance(ctx, inst); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

func rangeN(n int) func(yield func(int) bool) {
	return func(yield func(int) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
