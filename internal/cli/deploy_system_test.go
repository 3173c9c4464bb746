package cli

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

// deployAgent is a real agent (process runner, fake GPUs) with its queue
// endpoint, that the test can kill.
type deployAgent struct {
	machine market.MachineID
	kill    func()
}

func (s *system) startDeployAgent(t *testing.T, host *apiclient.Client, region, dc string) *deployAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(s.ctx)
	q, err := serveQueue(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := newAgent(ctx, agentOptions{
		StateDir: dir, FakeGPUs: "2xRTX 4090", Region: region, DataCenter: dc, Client: host, Logger: slog.New(slog.DiscardHandler),
		HeartbeatInterval: 100 * time.Millisecond, PollWait: 5 * time.Second, Queue: q,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	kill := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
	t.Cleanup(kill)
	fp, err := os.ReadFile(dir + "/machine-id")
	if err != nil {
		t.Fatalf("read the agent's machine id: %v", err)
	}
	da := &deployAgent{kill: kill}
	eventually(t, "the agent's machine to register", func() (bool, error) {
		ms, err := host.Machines(s.ctx, false)
		for _, m := range ms {
			if m.Fingerprint == strings.TrimSpace(string(fp)) {
				da.machine = m.ID
			}
		}
		return da.machine != "", err
	})
	price := market.Money(600_000)
	must[market.Machine](t, "set price")(host.UpdateMachine(s.ctx, da.machine, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(s.ctx, da.machine))
	return da
}

// tickFresh moves the clock, waits until every live machine has
// heartbeated at the new time, and runs the background tick.
func (s *system) tickFresh(t *testing.T, host *apiclient.Client, d time.Duration, live []*deployAgent) {
	t.Helper()
	s.clock.Advance(d)
	now := s.clock.Now()
	for _, a := range live {
		eventually(t, "a heartbeat after the clock moved", func() (bool, error) {
			m, err := host.Machine(s.ctx, a.machine)
			return !m.LastSeenAt.Before(now), err
		})
	}
	if err := s.co.Service.Tick(s.ctx); err != nil {
		t.Fatalf("tick: %v", err)
	}
	s.checkLedger(t)
}

// TestSystemDeployment runs a deployment of 3 replicas over four real
// agents: a lost agent's replica is replaced elsewhere, a queue length the
// workload reports through the agent scales it up, and a new command rolls
// out one replica at a time.
func TestSystemDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and four agents")
	}
	onEachStore(t, testDeployment)
}

func testDeployment(t *testing.T, db string) {
	s := startSystem(t, db)
	ctx := s.ctx
	host := s.signup(t, "host@example.com", market.RoleHost)
	var agents []*deployAgent
	for _, dc := range []string{"fra", "ams", "par", "mad"} {
		agents = append(agents, s.startDeployAgent(t, host, "eu", dc))
	}
	renter := s.signup(t, "renter@example.com", market.RoleRenter)
	must[market.Transfer](t, "deposit")(s.admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(100)}, "d-1"))

	gm, ok := cliUser(t, ctx, s.co.URL)
	ok("login", "--email", "renter@example.com", "--password", "password-1")

	// Bad input says what is wrong.
	if _, errOut, code := gm("deployment", "create", "web", "--replicas", "5..2", "--", "true"); code != 2 || !strings.Contains(errOut, "MIN <= MAX") {
		t.Errorf("bad --replicas: exit %d, %q", code, errOut)
	}
	if _, errOut, code := gm("deployment", "create", "web", "--spot", "--", "true"); code != 2 || !strings.Contains(errOut, "--spot needs --max-price-per-day") {
		t.Errorf("--spot: exit %d, %q", code, errOut)
	}
	if _, errOut, code := gm("deployment", "create", "web", "--query", "gpu_nam=x", "--", "true"); code != 1 || !strings.Contains(errOut, "did you mean") {
		t.Errorf("bad query: exit %d, %q", code, errOut)
	}

	out := ok("deployment", "create", "web", "--gpus-per-replica", "1", "--replicas", "3..5", "--regions", "eu",
		"--scale-on", "queue>100", "--", "/bin/sh", "-c", `echo "queue at $GPUMARKET_QUEUE_URL"; exec sleep 600`)
	if !strings.Contains(out, "Created deployment web") {
		t.Fatalf("create said %q", out)
	}
	show := func() market.DeploymentView {
		t.Helper()
		var v market.DeploymentView
		if err := json.Unmarshal([]byte(ok("deployment", "show", "web", "-o", "json")), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	active := func(v market.DeploymentView) (running, other int) {
		for _, r := range v.Replicas {
			if r.State == market.InstanceRunning {
				running++
			} else {
				other++
			}
		}
		return
	}
	waitRunning := func(n int, rev int64) market.DeploymentView {
		t.Helper()
		var v market.DeploymentView
		eventually(t, "replicas to run", func() (bool, error) {
			var err error
			v, err = renter.Deployment(ctx, "web")
			running, other := active(v)
			for _, r := range v.Replicas {
				if r.DeploymentRevision != rev {
					return false, err
				}
			}
			return running == n && other == 0, err
		})
		return v
	}
	live := agents
	s.tickFresh(t, host, time.Second, live)
	v := waitRunning(3, 1)
	hosts := map[market.MachineID]bool{}
	for _, r := range v.Replicas {
		hosts[r.Machine] = true
	}
	if len(hosts) != 3 {
		t.Fatalf("3 replicas on %d machines, want 3 (spread)", len(hosts))
	}

	// Kill the agent of the first replica: after the lost deadline its
	// replica is replaced on another machine.
	lost := v.Replicas[0].Machine
	for _, a := range agents {
		if a.machine == lost {
			a.kill()
		}
	}
	live = slices.DeleteFunc(slices.Clone(agents), func(a *deployAgent) bool { return a.machine == lost })
	s.tickFresh(t, host, 2*time.Minute, live)
	v = waitRunning(3, 1)
	for _, r := range v.Replicas {
		if r.Machine == lost {
			t.Fatalf("replica %s still on the lost machine %s", r.ID, lost)
		}
	}
	if !slices.ContainsFunc(show().History, func(h market.DeploymentHistory) bool {
		return h.Kind == "place" && strings.Contains(h.Message, "2 of 3 replicas active, adding one")
	}) {
		t.Errorf("history does not record the replacement: %+v", show().History)
	}

	// The workload reports a queue of 450 to its agent (the URL is in its
	// environment); the agent forwards it and the deployment scales up.
	var url string
	eventually(t, "the replica's queue URL in its output", func() (bool, error) {
		chunks, err := renter.Logs(ctx, v.Replicas[0].ID, 0, 100, time.Second)
		for _, c := range chunks {
			if _, after, ok := strings.Cut(c.Data, "queue at "); ok {
				url = strings.TrimSpace(after)
			}
		}
		return strings.HasPrefix(url, "http://127.0.0.1:"), err
	})
	resp, err := http.Post(url, "text/plain", strings.NewReader("450"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("report the queue: status %d", resp.StatusCode)
	}
	eventually(t, "the scale-up", func() (bool, error) {
		s.tickFresh(t, host, time.Second, live)
		d, err := renter.Deployment(ctx, "web")
		return d.Desired == 5, err
	})
	v = waitRunning(5, 1)
	if !slices.ContainsFunc(v.History, func(h market.DeploymentHistory) bool {
		return h.Kind == "scale" && strings.Contains(h.Message, "queue 450 over 1 replicas")
	}) {
		t.Errorf("history does not give the scale-up's reason: %+v", v.History)
	}

	// Rolling update: a new command, one new replica at a time, an old
	// one stopped only once a new one runs.
	out = ok("deployment", "update", "web", "--", "/bin/sh", "-c", "echo v2; exec sleep 600")
	if !strings.Contains(out, "rolling update to revision 2") {
		t.Fatalf("update said %q", out)
	}
	for pass := 0; ; pass++ {
		if pass == 30 {
			t.Fatalf("the update did not finish in 30 passes: %+v", show())
		}
		s.tickFresh(t, host, time.Second, live)
		v = show()
		starting, running, newRunning := 0, 0, 0
		for _, r := range v.Replicas {
			switch {
			case r.State == market.InstanceRunning:
				running++
				if r.DeploymentRevision == 2 {
					newRunning++
				}
			case r.State != market.InstanceStopping:
				starting++
			}
		}
		if starting > 1 {
			t.Fatalf("pass %d: %d replicas starting at once, want one at a time", pass, starting)
		}
		if running < 5 && newRunning < 5 {
			// Old replicas stop only once their replacement runs, so the
			// running count never drops below the desired 5 (a stopping
			// one still counts until it ends).
			stopping := len(v.Replicas) - running - starting
			if running+stopping < 5 {
				t.Fatalf("pass %d: %d running and %d stopping, want 5 serving", pass, running, stopping)
			}
		}
		if newRunning == 5 && len(v.Replicas) == 5 {
			break
		}
		// Let the agents act on the pass before the next one.
		eventually(t, "the agents to catch up", func() (bool, error) {
			d, err := renter.Deployment(ctx, "web")
			for _, r := range d.Replicas {
				if r.State == market.InstancePending || r.State == market.InstanceStarting || r.State == market.InstanceStopping {
					return false, err
				}
			}
			return true, err
		})
	}
	out = ok("deployment", "show", "web")
	t.Logf("gpumarket deployment show web:\n%s", out)
	for _, want := range []string{"Deployment web", "revision 2", "rolling update to revision 2: a new replica is ready", "Decisions, newest first"} {
		if !strings.Contains(out, want) {
			t.Errorf("deployment show lacks %q:\n%s", want, out)
		}
	}
	list := ok("deployment", "list")
	if !strings.Contains(list, "web") || !strings.Contains(list, "3..5") {
		t.Errorf("deployment list:\n%s", list)
	}
	ok("deployment", "delete", "web")
	s.tickFresh(t, host, time.Second, live)
	eventually(t, "the deployment to go", func() (bool, error) {
		s.tickFresh(t, host, time.Second, live)
		_, err := renter.Deployment(ctx, "web")
		return market.IsKind(err, market.NotFound) || err != nil && strings.Contains(err.Error(), "not found"), nil
	})
	s.checkLedger(t)
}

// twoAgentSystem starts a coordinator on SQLite with two real agents in
// region eu and a renter with 100 tokens.
func twoAgentSystem(t *testing.T) (s *system, host, renter *apiclient.Client, live []*deployAgent) {
	t.Helper()
	s = startSystem(t, t.TempDir()+"/gm.db")
	host = s.signup(t, "host@example.com", market.RoleHost)
	live = []*deployAgent{s.startDeployAgent(t, host, "eu", "fra"), s.startDeployAgent(t, host, "eu", "ams")}
	renter = s.signup(t, "renter@example.com", market.RoleRenter)
	must[market.Transfer](t, "deposit")(s.admin.Deposit(s.ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(100)}, "d-1"))
	return s, host, renter, live
}

// TestSystemDeploymentScalesOnGPUUtil scales a deployment on the GPU
// utilisation the agents report (fake GPUs read busy while they run work).
func TestSystemDeploymentScalesOnGPUUtil(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and two agents")
	}
	s, host, renter, live := twoAgentSystem(t)
	ctx := s.ctx
	must[market.Deployment](t, "create")(renter.CreateDeployment(ctx, market.DeploymentSpec{Name: "train", Command: []string{"sleep", "600"},
		GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 3, Scale: &market.ScaleRule{Metric: market.ScaleGPUUtil, Target: 70}}))
	s.tickFresh(t, host, time.Second, live)
	eventually(t, "the replica to run", func() (bool, error) {
		v, err := renter.Deployment(ctx, "train")
		return len(v.Replicas) == 1 && v.Replicas[0].State == market.InstanceRunning, err
	})
	// The busy GPU reads 85-99%: one replica at that wants 2 at a 70% target.
	eventually(t, "the scale-up on GPU utilisation", func() (bool, error) {
		s.tickFresh(t, host, time.Second, live)
		v, err := renter.Deployment(ctx, "train")
		return v.Desired == 2, err
	})
	v := must[market.DeploymentView](t, "show")(renter.Deployment(ctx, "train"))
	if !slices.ContainsFunc(v.History, func(h market.DeploymentHistory) bool {
		return h.Kind == "scale" && strings.Contains(h.Message, "mean GPU utilisation") && strings.Contains(h.Message, "scaling up 1 -> 2")
	}) {
		t.Errorf("history lacks the reason of the scale-up: %+v", v.History)
	}
	// Within the up cooldown (1 min) nothing more happens, even busy.
	s.tickFresh(t, host, time.Second, live)
	if v := must[market.DeploymentView](t, "show")(renter.Deployment(ctx, "train")); v.Desired != 2 {
		t.Errorf("desired %d within the cooldown, want 2", v.Desired)
	}
}

type fakeGateway struct {
	addr netip.Addr
	err  error
}

func (f fakeGateway) HostGateway(context.Context) (netip.Addr, error) { return f.addr, f.err }

func TestQueueAddr(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	gw := fakeGateway{addr: netip.MustParseAddr("172.17.0.1")}
	for _, tc := range []struct {
		flag string
		gw   gatewayer
		want string
	}{
		{"auto", nil, "127.0.0.1:0"},                                // plain processes share the host's loopback
		{"auto", gw, "172.17.0.1:0"},                                // containers reach the bridge's gateway
		{"auto", fakeGateway{err: errors.New("no")}, "127.0.0.1:0"}, // warned, still serves the host
		{"10.0.0.5:7000", gw, "10.0.0.5:7000"},                      // as given
	} {
		if got := queueAddr(ctx, tc.flag, tc.gw, log); got != tc.want {
			t.Errorf("queueAddr(%q, %v) = %q, want %q", tc.flag, tc.gw, got, tc.want)
		}
	}
}

// TestSystemDeploymentHealthCommand rolls out a new command gated on a
// health check command, given through the CLI: the agent runs it inside
// the new replica, and the old replica keeps serving until it passes.
func TestSystemDeploymentHealthCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and two agents")
	}
	s, host, renter, live := twoAgentSystem(t)
	ctx := s.ctx
	gm, ok := cliUser(t, ctx, s.co.URL)
	ok("login", "--email", "renter@example.com", "--password", "password-1")

	if _, errOut, code := gm("deployment", "create", "api", "--health-cmd", "true", "--health", "8080/healthz", "--", "sleep", "600"); code == 0 || !strings.Contains(errOut, "health") {
		t.Errorf("a command and an HTTP check at once: exit %d, %q", code, errOut)
	}
	if _, errOut, code := gm("deployment", "create", "api", "--health-cmd", "  ", "--", "sleep", "600"); code != 2 || !strings.Contains(errOut, "--health-cmd is blank") {
		t.Errorf("a blank health command: exit %d, %q", code, errOut)
	}
	ok("deployment", "create", "api", "--replicas", "1", "--", "sleep", "600")
	s.tickFresh(t, host, time.Second, live)
	var old market.Instance
	eventually(t, "the first replica to run", func() (bool, error) {
		v, err := renter.Deployment(ctx, "api")
		if len(v.Replicas) == 1 && v.Replicas[0].State == market.InstanceRunning {
			old = v.Replicas[0]
			return true, err
		}
		return false, err
	})

	ready := t.TempDir() + "/ready"
	out := ok("deployment", "update", "api", "--health-cmd", "test -f "+ready, "--health-timeout", "1s", "--", "sleep", "601")
	if !strings.Contains(out, "rolling update to revision 2") {
		t.Fatalf("update said %q", out)
	}
	newReplica := func() (market.Instance, bool) {
		v := must[market.DeploymentView](t, "show")(renter.Deployment(ctx, "api"))
		for _, r := range v.Replicas {
			if r.DeploymentRevision == 2 {
				return r, true
			}
		}
		return market.Instance{}, false
	}
	eventually(t, "the new replica to run", func() (bool, error) {
		s.tickFresh(t, host, time.Second, live)
		r, ok := newReplica()
		return ok && r.State == market.InstanceRunning, nil
	})
	// Unhealthy (no file): several passes later the old replica still runs.
	for range 4 {
		s.tickFresh(t, host, time.Second, live)
		time.Sleep(500 * time.Millisecond) // health checks run every 2 s
	}
	if got := must[market.Instance](t, "old replica")(renter.Instance(ctx, old.ID)); got.State != market.InstanceRunning {
		t.Fatalf("old replica %s while the new one fails its health command, want running", got.State)
	}
	// The check passes: the old replica is stopped.
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		s.tickFresh(t, host, time.Second, live)
		got, err := renter.Instance(ctx, old.ID)
		if err == nil && (got.State == market.InstanceStopping || got.State.Terminal()) {
			break
		}
		if i == 40 {
			t.Fatalf("old replica %s after 40 passes with the new one healthy; deployment:\n%s", got.State, ok("deployment", "show", "api"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	show := ok("deployment", "show", "api")
	if !strings.Contains(show, "test -f "+ready) {
		t.Errorf("deployment show does not give the health command:\n%s", show)
	}
	s.checkLedger(t)
}
