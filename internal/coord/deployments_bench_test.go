package coord_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

// BenchmarkDeploymentLossTick measures the leader's tick that finds 1% of
// the machines lost and places their replicas again, end to end on SQLite:
// reading deployments, replicas and machines, reconciling, and creating
// each replacement through CreateInstance (GPUs, escrow, events). The
// fleet is GPUMARKET_BENCH_MACHINES machines of 8 GPUs (default 1000) with
// as many deployments of 5 one-GPU replicas. Each op builds a fresh fleet
// (not timed), so run it with -benchtime 1x.
func BenchmarkDeploymentLossTick(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("GPUMARKET_BENCH_MACHINES")); err == nil && v > 0 {
		n = v
	}
	var replaced int
	b.StopTimer()
	for range b.N {
		ctx := b.Context()
		store, err := sqlite.Open(ctx, b.TempDir()+"/bench.db")
		if err != nil {
			b.Fatal(err)
		}
		clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
		var logs bytes.Buffer
		svc := coord.New(coord.Config{Store: store, Clock: clock, Passwords: plainPasswords{},
			Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		check := func(err error) {
			b.Helper()
			if err != nil {
				b.Fatal(err)
			}
		}
		admin, err := svc.CreateAccount(ctx, "admin@example.com", "password1", []market.Role{market.RoleAdmin})
		check(err)
		host, err := svc.Signup(ctx, market.SignupRequest{Email: "host@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}})
		check(err)
		renter, err := svc.Signup(ctx, market.SignupRequest{Email: "renter@example.com", Password: "password1", Roles: []market.Role{market.RoleRenter}})
		check(err)
		_, err = svc.Deposit(ctx, admin, "bench", market.DepositRequest{Account: renter.ID, Amount: market.Tokens(int64(n) * 10)})
		check(err)
		price := market.Money(600_000)
		ms := make([]market.MachineID, n)
		for i := range n {
			hw := market.Hardware{Fingerprint: fmt.Sprintf("fp-%d", i), Hostname: "box", Runner: "process", CPUCores: 16, RAMMiB: 65536,
				Region: fmt.Sprintf("r%d", i%10), DataCenter: fmt.Sprintf("dc%d", i%40)}
			for g := range 8 {
				hw.GPUs = append(hw.GPUs, market.GPU{Index: g, UUID: fmt.Sprintf("fp-%d-%d", i, g), Model: "RTX 4090", VRAMMiB: 24564, MinPowerW: 150, MaxPowerW: 450})
			}
			m, err := svc.RegisterMachine(ctx, host, hw)
			check(err)
			_, err = svc.UpdateMachine(ctx, host, m.ID, market.MachineUpdate{PricePerGPUHour: &price})
			check(err)
			_, err = svc.SetListed(ctx, host, m.ID, true)
			check(err)
			ms[i] = m.ID
		}
		for i := range n {
			_, err := svc.CreateDeployment(ctx, renter, market.DeploymentSpec{Name: fmt.Sprintf("d%d", i), Command: []string{"serve"},
				GPUsPerReplica: 1, MinReplicas: 5, MaxReplicas: 5, Regions: []string{fmt.Sprintf("r%d", i%10)}, MaxLatency: market.Duration(200 * time.Millisecond)})
			check(err)
		}
		check(svc.Tick(ctx)) // places every replica
		// 1% of the machines fall silent; the others heartbeat.
		clock.Advance(2 * time.Minute)
		for i, id := range ms {
			if i%100 != 0 {
				_, err := svc.Report(ctx, host, id, market.Report{})
				check(err)
			}
		}
		before := svc.LoopStats()
		logs.Reset()
		if path := os.Getenv("GPUMARKET_BENCH_PROFILE"); path != "" {
			f, err := os.Create(path)
			check(err)
			check(pprof.StartCPUProfile(f))
			defer f.Close()
		}
		b.StartTimer()
		check(svc.Tick(ctx))
		b.StopTimer()
		pprof.StopCPUProfile()
		for name, st := range svc.LoopStats() {
			if ms := (st.Seconds - before[name].Seconds) * 1000; ms >= 1 {
				b.ReportMetric(ms, name+"-ms")
			}
		}
		for line := range strings.SplitSeq(logs.String(), "\n") {
			var pass struct {
				Msg         string  `json:"msg"`
				ReadMS      float64 `json:"read_ms"`
				ReconcileMS float64 `json:"reconcile_ms"`
				ApplyMS     float64 `json:"apply_ms"`
			}
			if json.Unmarshal([]byte(line), &pass) == nil && pass.Msg == "deployments pass" {
				b.ReportMetric(pass.ReadMS, "read-ms")
				b.ReportMetric(pass.ReconcileMS, "reconcile-ms")
				b.ReportMetric(pass.ApplyMS, "apply-ms")
			}
		}
		ds, err := svc.Deployments(ctx, renter, false)
		check(err)
		replaced = 0
		for _, d := range ds {
			if d.Status.Replicas != 5 || d.Status.Pending != 0 {
				b.Fatalf("deployment %s after the tick: %+v, want 5 replicas and none pending", d.Spec.Name, d.Status)
			}
		}
		insts, err := svc.Instances(ctx, renter, false)
		check(err)
		lost := 0
		for _, i := range insts {
			if i.State == market.InstancePending && i.CreatedAt.Equal(clock.Now()) {
				replaced++
			}
			if i.State == market.InstanceFailed {
				lost++
			}
		}
		if replaced != lost || lost == 0 {
			b.Fatalf("%d replicas lost with their machines, %d placed again", lost, replaced)
		}
		check(store.Close())
	}
	b.ReportMetric(float64(replaced), "replaced/op")
}
