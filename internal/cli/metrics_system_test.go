package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestSystemGPUMetrics: a real agent's GPU readings travel with its
// reports to the coordinator, which serves them per instance and per
// machine (API and `instance show`); the coordinator's /metrics has its
// totals and loop durations, and the agent's --metrics-addr its per-GPU
// gauges.
func TestSystemGPUMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("system test")
	}
	s := startSystem(t, t.TempDir()+"/gm.db")
	host := s.signup(t, "host@example.com", market.RoleHost)
	renter := s.signup(t, "renter@example.com", market.RoleRenter)
	must[market.Transfer](t, "deposit")(s.admin.Deposit(s.ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(5)}, "d"))

	am, err := listenAgentMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	go am.serve(ctx, slog.New(slog.DiscardHandler))
	a, err := newAgent(ctx, agentOptions{
		StateDir: t.TempDir(), FakeGPUs: "2xRTX 4090", Client: host, Logger: slog.New(slog.DiscardHandler),
		HeartbeatInterval: 100 * time.Millisecond, PollWait: 5 * time.Second, GPUMetrics: am.gauges,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var m market.Machine
	eventually(t, "registration", func() (bool, error) {
		ms, err := host.Machines(s.ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price := market.Tokens(1)
	must[market.Machine](t, "price")(host.UpdateMachine(s.ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(s.ctx, m.ID))

	eventually(t, "machine metrics", func() (bool, error) {
		r, err := host.MachineMetrics(s.ctx, m.ID, time.Hour)
		return err == nil && len(r.Latest) == 2 && len(r.GPUs) == 2 && len(r.GPUs[0].Points) > 0, err
	})
	inst := must[market.Instance](t, "create")(renter.CreateInstance(s.ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "300"}}))
	eventually(t, "instance running", func() (bool, error) {
		i, err := renter.Instance(s.ctx, inst.ID)
		return i.State == market.InstanceRunning, err
	})
	var rep market.MetricsReport
	eventually(t, "instance metrics", func() (bool, error) {
		var err error
		rep, err = renter.InstanceMetrics(s.ctx, inst.ID, 15*time.Minute)
		return err == nil && len(rep.Latest) == 1 && len(rep.GPUs) == 1 && len(rep.GPUs[0].Points) > 0, err
	})
	if g := rep.Latest[0]; g.Index != inst.GPUs[0] || g.UtilPct < 0 || g.UtilPct > 100 || g.PowerW <= 0 || g.TempC <= 0 {
		t.Errorf("latest reading of the instance's GPU %d: %+v", inst.GPUs[0], g)
	}
	if _, err := host.InstanceMetrics(s.ctx, inst.ID, time.Hour); !market.IsKind(err, market.NotFound) {
		t.Errorf("the host reads the renter's instance metrics: %v", err)
	}
	if _, err := renter.MachineMetrics(s.ctx, m.ID, time.Hour); !market.IsKind(err, market.NotFound) {
		t.Errorf("a renter reads the host's machine metrics: %v", err)
	}

	// instance show prints the latest reading.
	cfg := t.TempDir() + "/config.json"
	for _, args := range [][]string{{"login", "--email", "renter@example.com", "--password", "password-1"}, {"instance", "show", string(inst.ID)}} {
		var out, errOut strings.Builder
		if code := run(s.ctx, append([]string{"--config", cfg, "--coordinator", s.co.URL}, args...), strings.NewReader(""), &out, &errOut, nil); code != 0 {
			t.Fatalf("gpumarket %s: exit %d: %s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
		if args[0] == "instance" && (!strings.Contains(out.String(), "GPU ") || !strings.Contains(out.String(), "% busy")) {
			t.Errorf("instance show lacks the GPU reading:\n%s", out.String())
		}
	}

	// Prometheus: the coordinator's totals and loop durations.
	if err := s.co.Service.Tick(s.ctx); err != nil {
		t.Fatal(err)
	}
	scrape := func(url string) string {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := scrape(s.co.URL + "/metrics")
	for _, want := range []string{
		`gpumarket_machines{status="listed"} 1`, "gpumarket_gpus 2", "gpumarket_gpus_rented 1",
		`gpumarket_instances_active{state="running"} 1`, `gpumarket_ledger_balance_tokens{purpose="escrow"} 1`,
		`gpumarket_loop_duration_seconds_count{loop="money"} 1`, "gpumarket_gauges_error 0",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("coordinator /metrics lacks %q", want)
		}
	}
	body = scrape("http://" + am.ln.Addr().String() + "/metrics")
	for _, want := range []string{`gpumarket_agent_gpu_utilization_percent{gpu="0",uuid="GPU-`, `gpumarket_agent_gpu_power_watts{gpu="1"`, "gpumarket_agent_gpu_temperature_celsius"} {
		if !strings.Contains(body, want) {
			t.Errorf("agent /metrics lacks %q:\n%.3000s", want, body)
		}
	}
}
