package cli

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

// TestCrashDuringBilling runs `gpumarket serve` on an SQLite file, with 240
// on-demand instances running on 30 machines and a clock 600 times faster
// than real time (a billed minute every 100 ms, a tick every 50 ms, so
// billing is under way most of the time), and kills it with SIGKILL at a
// random moment 100 times (10 with -short), restarting it on the same file
// each time. A restarted coordinator first charges the minutes that passed
// while it was down. At the end every instance is stopped, and each must
// have been charged every minute it ran exactly once (no minute twice, none
// skipped) and `gpumarket admin ledger check` must find every invariant
// intact.
//
// The test acts as the hosts' agent through the agent API (registration,
// running and stopped reports), so that nothing but the coordinator
// restarts.
func TestCrashDuringBilling(t *testing.T) {
	kills := 100
	if testing.Short() {
		kills = 10
	}
	const machines, gpus = 30, 8
	bin := gpumarketBinary(t)
	ctx := t.Context()
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := &replica{
		name: "c1", bin: bin, url: "http://" + addr,
		failfile: filepath.Join(dir, "unused.failpoint"), logPath: filepath.Join(dir, "c1.log"),
		stalled: make(chan struct{}, 1),
		// A fixed epoch keeps the fast clock continuous across restarts; a
		// fixed node name lets the restarted process resume the leader
		// lease at once instead of waiting for the killed one's to expire.
		args: []string{"serve", "--db", filepath.Join(dir, "gm.db"), "--listen", addr,
			"--speedup", "600", "--clock-epoch", time.Now().UTC().Format(time.RFC3339Nano), "--node", "crash-test",
			"--tick", "50ms", "--lost-after", "10m", "--heartbeat-flush", "1s", "--log-format", "json",
			// Its machines are registered by hand and answer no challenges.
			"--no-require-verification"},
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("coordinator log (last lines):\n%s", r.tail())
		}
	})
	r.start(t)

	anon := apiclient.New(r.url, "", nil)
	login := func(email, password string) *apiclient.Client {
		t.Helper()
		res := must[market.LoginResult](t, "login "+email)(anon.Login(ctx, market.LoginRequest{Email: email, Password: password}))
		return apiclient.New(r.url, res.Key.Secret, nil)
	}
	signup := func(email string, role market.Role) *apiclient.Client {
		t.Helper()
		must[market.Account](t, "signup "+email)(anon.Signup(ctx, market.SignupRequest{Email: email, Password: "password-1", Roles: []market.Role{role}}))
		return login(email, "password-1")
	}
	admin := login("admin@example.com", "admin-password-1")
	host := signup("host@example.com", market.RoleHost)
	renter := signup("renter@example.com", market.RoleRenter)
	must[market.Transfer](t, "deposit")(admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(1_000_000)}, "crash-deposit"))

	price := market.Money(60_000) // 0.06 per GPU-hour: 1,000 a minute
	var ids []market.MachineID
	for m := range machines {
		hw := market.Hardware{Fingerprint: fmt.Sprintf("crash-%d", m), Hostname: "box", Runner: "process", CPUCores: 32, RAMMiB: 1 << 17}
		for g := range gpus {
			hw.GPUs = append(hw.GPUs, market.GPU{Index: g, UUID: fmt.Sprintf("GPU-crash-%d-%d", m, g), Model: "RTX 4090", VRAMMiB: 24564, MinPowerW: 150, DefaultPowerW: 450, MaxPowerW: 450})
		}
		mach := must[market.Machine](t, "register")(host.Register(ctx, hw))
		must[market.Machine](t, "price")(host.UpdateMachine(ctx, mach.ID, market.MachineUpdate{PricePerGPUHour: &price}))
		must[market.Machine](t, "list")(host.ListMachine(ctx, mach.ID))
		ids = append(ids, mach.ID)
	}
	var insts []market.Instance
	for _, id := range ids {
		var reps []market.InstanceReport
		for range gpus {
			inst := must[market.Instance](t, "create")(renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: id, GPUs: 1, Command: []string{"sleep", "inf"}}))
			insts = append(insts, inst)
			reps = append(reps, market.InstanceReport{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning})
		}
		must[market.ReportResult](t, "report running")(host.Report(ctx, id, market.Report{Instances: reps}))
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("kill times from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	started := time.Now()
	for range kills {
		// Up to 300 ms: up to 3 billed minutes and 6 ticks, and the first
		// one after a restart catches up on the downtime.
		time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
		r.kill()
		r.start(t)
	}
	t.Logf("%d kills and restarts in %s", kills, time.Since(started).Round(time.Millisecond))

	// Billing went on across the restarts.
	var billed int64
	for _, i := range must[[]market.Instance](t, "instances")(renter.Instances(ctx)) {
		billed += i.BilledMins
	}
	if least := int64(len(insts)) * 10; billed < least {
		t.Fatalf("%d minutes billed in all; want at least %d", billed, least)
	}

	// Stop everything, confirm the stops as the agent, wait for settlement.
	for _, id := range ids {
		var reps []market.InstanceReport
		for _, i := range insts {
			if i.Machine != id {
				continue
			}
			st := must[market.Instance](t, "stop")(renter.StopInstance(ctx, i.ID))
			reps = append(reps, market.InstanceReport{Instance: st.ID, Generation: st.Generation, State: market.ObservedStopped})
		}
		must[market.ReportResult](t, "report stopped")(host.Report(ctx, id, market.Report{Instances: reps}))
	}
	var final []market.Instance
	eventually(t, "every instance settled", func() (bool, error) {
		var err error
		final, err = renter.Instances(ctx)
		for _, i := range final {
			if !i.Settled {
				return false, err
			}
		}
		return len(final) == len(insts), err
	})
	billed = 0
	for _, i := range final {
		if i.StartedAt == nil || i.StopAt == nil {
			t.Errorf("instance %s: started %v, stop %v", i.ID, i.StartedAt, i.StopAt)
			continue
		}
		ran := i.StopAt.Sub(*i.StartedAt)
		want := int64(ran / time.Minute)
		if ran%time.Minute != 0 {
			want++
		}
		if i.BilledMins != want {
			t.Errorf("instance %s ran %s and was billed %d minutes; want %d", i.ID, ran, i.BilledMins, want)
		}
		if wantCharged := price.MulDiv(want, 60); i.Charged != wantCharged {
			t.Errorf("instance %s was charged %s for %d minutes; want %s", i.ID, i.Charged, i.BilledMins, wantCharged)
		}
		billed += i.BilledMins
	}

	// The ledger check, as an operator runs it: every minute of every
	// instance charged once (0..n-1), all the other invariants.
	cfg := filepath.Join(dir, "admin.json")
	gm := func(args ...string) (string, int) {
		var out, errOut strings.Builder
		code := run(ctx, append([]string{"--config", cfg, "--coordinator", r.url}, args...), strings.NewReader(""), &out, &errOut, nil)
		return out.String() + errOut.String(), code
	}
	if out, code := gm("login", "--email", "admin@example.com", "--password", "admin-password-1"); code != 0 {
		t.Fatalf("login: %s", out)
	}
	out, code := gm("admin", "ledger", "check")
	if code != 0 || !strings.Contains(out, " 0 of ") {
		t.Errorf("gpumarket admin ledger check: exit %d\n%s", code, out)
	}
	t.Logf("%d instances, %d minutes billed exactly once each across %d SIGKILLs; ledger check:\n%s", len(final), billed, kills, out)
}
