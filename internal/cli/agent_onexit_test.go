package cli

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/docker"
)

// TestSystemDockerAgentRestart restarts an agent that runs containers on
// the real Docker daemon with --on-exit leave, as an upgrade would: the
// containers keep running while no agent runs, the next agent on the same
// state dir adopts them without a second container, stops the one the
// renter stopped meanwhile, and removes the one whose instance the
// coordinator failed because the agent stayed down past the lost deadline.
func TestSystemDockerAgentRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("system test with Docker")
	}
	dockerUnavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and the Docker tests cannot run: "+format, args...)
		}
		t.Skipf("SKIPPING DOCKER TEST: "+format, args...)
	}
	dc, err := client.New(client.FromEnv)
	if err != nil {
		dockerUnavailable("%v", err)
	}
	defer dc.Close()
	if _, err := dc.Ping(t.Context(), client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		dockerUnavailable("no Docker daemon answers: %v", err)
	}
	if _, err := dc.ImageInspect(t.Context(), "gpumarket-test:latest"); err != nil {
		dockerUnavailable("test image gpumarket-test:latest is missing (%v); scripts/test builds it", err)
	}
	ns := "gmrestart-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Cleanup(func() { cleanNamespace(ns) })

	s := startSystem(t, t.TempDir()+"/gm.db")
	host := s.signup(t, "host@example.com", market.RoleHost)
	renter := s.signup(t, "renter@example.com", market.RoleRenter)
	must[market.Transfer](t, "deposit")(s.admin.Deposit(s.ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(5)}, "d"))

	// startAgent runs an agent on state like 'gpumarket agent --runner
	// docker' would; stop makes it exit as on SIGTERM.
	state := t.TempDir()
	startAgent := func(leave bool) (stop func()) {
		t.Helper()
		runner, err := docker.New(s.ctx, docker.Options{Namespace: ns, NoGPUDevices: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(s.ctx)
		ag, err := newAgent(ctx, agentOptions{StateDir: state, FakeGPUs: "2xRTX 4090", Client: host, Logger: slog.New(slog.DiscardHandler),
			HeartbeatInterval: 200 * time.Millisecond, PollWait: 5 * time.Second, Runner: runner, RunnerName: "docker", LeaveRunning: leave})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- ag.Run(ctx) }()
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
			runner.Close()
		}
		t.Cleanup(stop)
		return stop
	}
	containers := func(id market.InstanceID) []container.Summary {
		t.Helper()
		res, err := dc.ContainerList(s.ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).
			Add("label", docker.LabelNamespace+"="+ns).Add("label", docker.LabelInstance+"="+string(id))})
		if err != nil {
			t.Fatal(err)
		}
		return res.Items
	}
	state1 := func(id market.InstanceID) market.InstanceState {
		t.Helper()
		return must[market.Instance](t, "show "+string(id))(renter.Instance(s.ctx, id)).State
	}

	stop := startAgent(true)
	var m market.Machine
	eventually(t, "registration", func() (bool, error) {
		ms, err := host.Machines(s.ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price := market.Money(600_000)
	must[market.Machine](t, "price")(host.UpdateMachine(s.ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(s.ctx, m.ID))
	create := func() market.InstanceID {
		t.Helper()
		return must[market.Instance](t, "create")(renter.CreateInstance(s.ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1,
			Image: "gpumarket-test:latest", Command: []string{"-term", "exit", "-sleep", "300s"}})).ID
	}
	keep, stopped := create(), create()
	eventually(t, "both running", func() (bool, error) {
		return state1(keep) == market.InstanceRunning && state1(stopped) == market.InstanceRunning, nil
	})
	before := containers(keep)

	stop() // as on SIGTERM, with --on-exit leave
	for _, id := range []market.InstanceID{keep, stopped} {
		if cs := containers(id); len(cs) != 1 || cs[0].State != container.StateRunning {
			t.Fatalf("containers of %s after the agent exited: %+v, want one running", id, cs)
		}
		if st := state1(id); st != market.InstanceRunning {
			t.Errorf("%s after the agent exited is %s, want running", id, st)
		}
	}
	must[market.Instance](t, "stop")(renter.StopInstance(s.ctx, stopped)) // while no agent runs

	stop = startAgent(true)
	eventually(t, "the instance stopped meanwhile to stop, and its container to go", func() (bool, error) {
		return state1(stopped) == market.InstanceStopped && len(containers(stopped)) == 0, nil
	})
	if after := containers(keep); len(after) != 1 || after[0].ID != before[0].ID || after[0].State != container.StateRunning {
		t.Errorf("containers of %s after the restart: %+v, want only the running %.12s", keep, after, before[0].ID)
	}
	if st := state1(keep); st != market.InstanceRunning {
		t.Errorf("%s after the restart is %s, want running", keep, st)
	}

	// Down past the lost deadline: the coordinator fails the instance and
	// stops billing it; the container is removed when an agent is back.
	stop()
	s.clock.Advance(3 * time.Minute)
	if err := s.co.Service.Tick(s.ctx); err != nil {
		t.Fatal(err)
	}
	if inst := must[market.Instance](t, "show")(renter.Instance(s.ctx, keep)); inst.State != market.InstanceFailed || inst.Reason != "host lost contact" {
		t.Fatalf("%s after the agent stayed down: %s (%s), want failed: host lost contact", keep, inst.State, inst.Reason)
	}
	if cs := containers(keep); len(cs) != 1 || cs[0].State != container.StateRunning {
		t.Errorf("containers of %s while no agent runs: %+v, want one still running", keep, cs)
	}
	startAgent(false)
	eventually(t, "the orphaned container to go", func() (bool, error) {
		return len(containers(keep)) == 0, nil
	})
	s.checkLedger(t)
}

// Plain processes die with the agent's service: --on-exit leave is refused
// with the process runner, before the agent starts.
func TestAgentOnExitLeaveNeedsDocker(t *testing.T) {
	h := newHarness(t)
	r := h.authed("agent", "--runner", "process", "--on-exit", "leave", "--fake-gpus", "1xRTX 4090", "--state-dir", t.TempDir())
	if want := "error: --on-exit leave needs the docker runner"; r.code != 2 || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("code %d, stderr %q; want 2 and %q", r.code, r.stderr, want)
	}
}
