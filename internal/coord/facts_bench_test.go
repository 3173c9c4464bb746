package coord_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// BenchmarkFactsPass measures one pass of the offer index's facts refresh
// (reliability, verified flag, performance, bond per GPU) over every machine: 1,000
// machines of 8 GPUs, each running 8 instances (seedRunning), with a
// history of 48 events each (seedHistory). It reports
// the machines refreshed per second of wall time and the CPU this process
// (the coordinator; with SQLite, also the database) spent per machine.
//
//	go test -run XXX -bench FactsPass -benchtime 3x ./internal/coord/
//
// The Postgres case runs when GPUMARKET_TEST_POSTGRES is set.
// GPUMARKET_BENCH_MACHINES changes the number of machines.
func BenchmarkFactsPass(b *testing.B) {
	n := benchSize(b, "GPUMARKET_BENCH_MACHINES", 1000, 1)
	onStores(b, func(b *testing.B, store coord.Store) { benchFacts(b, store, n) })
}

func benchFacts(b *testing.B, store coord.Store, machines int) {
	ctx := b.Context()
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	svc := coord.New(coord.Config{Store: store, Clock: &fakeClock{t: t0}, Passwords: plainPasswords{}, LostAfter: 30 * 24 * time.Hour})
	seedRunning(b, ctx, store, machines*8, t0)
	seedHistory(b, store, machines, t0)
	if err := svc.RebuildIndex(ctx); err != nil { // as gpumarket serve does before Run
		b.Fatal(err)
	}
	var cpu time.Duration
	var done int
	for b.Loop() {
		before := cpuTime()
		n, err := svc.RefreshFactsPass(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n != machines {
			b.Fatalf("refreshed %d machines, want %d", n, machines)
		}
		cpu += cpuTime() - before
		done += n
	}
	b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "machines/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(done), "cpu-µs/machine")
}

// seedHistory gives each of the first machines of seedRunning a history:
// registered, then six instances created, running and stopped, one per
// GPU-hour after t0.
func seedHistory(b *testing.B, store coord.Store, machines int, t0 time.Time) {
	b.Helper()
	ctx := b.Context()
	for chunk := range slices.Chunk(slices.Collect(rangeN(machines)), 500) {
		err := store.Tx(ctx, func(tx coord.Tx) error {
			for _, i := range chunk {
				m := market.MachineID(fmt.Sprintf("m-%07d", i))
				evs := []market.Event{{At: t0.Add(-30 * time.Hour), Type: "machine.registered", Machine: m, Message: "registered"}}
				for k := range 15 {
					at := t0.Add(time.Duration(k-24) * time.Hour)
					inst := market.InstanceID(fmt.Sprintf("i-h%07d-%d", i, k))
					for j, typ := range []string{"instance.created", "instance.running", "instance.stopped"} {
						evs = append(evs, market.Event{At: at.Add(time.Duration(j) * time.Minute), Type: typ, Machine: m, Instance: inst, Message: "stopped by the renter"})
					}
				}
				evs = append(evs, market.Event{At: t0.Add(-time.Hour), Type: "machine.offline", Machine: m, Message: "no heartbeat"},
					market.Event{At: t0.Add(-50 * time.Minute), Type: "machine.online", Machine: m, Message: "heartbeats resumed"})
				for _, e := range evs {
					if err := tx.AppendEvent(ctx, e); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFactsOfABusyMachine measures the facts of one machine busy with
// short rentals: 30,000 instances in its 30-day window (90,000 events),
// one in ten lost by the host. Its reliability counts every end in the
// window (Tx.OutcomeCounts), however many.
//
//	go test -run XXX -bench FactsOfABusyMachine -benchtime 10x ./internal/coord/
//
// GPUMARKET_BENCH_INSTANCES changes the number of instances.
func BenchmarkFactsOfABusyMachine(b *testing.B) {
	n := benchSize(b, "GPUMARKET_BENCH_INSTANCES", 30_000, 1)
	onStores(b, func(b *testing.B, store coord.Store) {
		ctx := b.Context()
		t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
		// The machine registered at t0 (seedRunning); its window ends 30 days later.
		svc := coord.New(coord.Config{Store: store, Clock: &fakeClock{t: t0.Add(30 * 24 * time.Hour)}, Passwords: plainPasswords{}, LostAfter: 30 * 24 * time.Hour})
		seedRunning(b, ctx, store, 8, t0)
		id := market.MachineID("m-0000000")
		step := 29 * 24 * time.Hour / time.Duration(n)
		for chunk := range slices.Chunk(slices.Collect(rangeN(n)), 2000) {
			err := store.Tx(ctx, func(tx coord.Tx) error {
				for _, k := range chunk {
					at := t0.Add(time.Hour + time.Duration(k)*step)
					end, why := "instance.stopped", "stopped by the renter"
					if k%10 == 0 {
						end, why = "instance.failed", "host lost contact"
					}
					for j, typ := range []string{"instance.created", "instance.running", end} {
						e := market.Event{At: at.Add(time.Duration(j) * time.Second), Type: typ, Machine: id, Instance: market.InstanceID(fmt.Sprintf("i-busy%07d", k)), Message: why}
						if err := tx.AppendEvent(ctx, e); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := svc.RebuildIndex(ctx); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := svc.RefreshFactsPass(ctx); err != nil {
				b.Fatal(err)
			}
		}
		v, err := svc.MachineVerification(ctx, market.Account{ID: "a-admin", Roles: []market.Role{market.RoleAdmin}}, id)
		if err != nil {
			b.Fatal(err)
		}
		if got := v.Reliability.Completed + v.Reliability.HostFaults; got != n {
			b.Fatalf("reliability counted %d ends, want %d", got, n)
		}
	})
}
