package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/process"
)

func leaveRunning(c *agent.Config) { c.LeaveRunning = true }

// agentDir is a directory for the instances of agents that run one after
// the other in this test process, removed once nothing writes there any
// more. An agent that left its workloads running exits, but its runner,
// here in the same process, still waits on the processes it started and
// records their end when a later agent stops them, which may happen as
// the test ends (t.TempDir's removal then failed: "directory not empty").
// A real agent's process is gone by then.
func agentDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gpumarket-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // registered first, so it runs after the agents' own
		for range 100 {
			if err = os.RemoveAll(dir); err == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("remove %s: %v", dir, err)
	})
	return dir
}

// An agent with LeaveRunning exits without stopping its workloads; the
// next one adopts them without starting them again, keeps the settings of
// the one it adopts, and stops the one the coordinator ended meanwhile,
// then resets that one's GPU, whose settings it never learnt.
func TestLeaveRunningRestart(t *testing.T) {
	dir := agentDir(t)
	count := filepath.Join(t.TempDir(), "starts")
	gpus, err := fake.Parse("2xRTX 4090", "seed")
	if err != nil {
		t.Fatal(err)
	}
	ctl := fake.NewControl(gpus) // the cards keep their settings across agents
	withControl := func() agent.Runner {
		pr, err := process.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		return agent.WithGPUControl(pr, ctl)
	}
	keep := run("i-keep", 1, "echo started >> "+count+"; sleep 30")
	keep.GPUs, keep.GPUUUIDs, keep.PowerLimitW = []int{0}, []string{gpus[0].UUID}, 300
	ended := run("i-ended", 1, "echo started >> "+count+"; sleep 30")
	ended.GPUs, ended.GPUUUIDs, ended.PowerLimitW = []int{1}, []string{gpus[1].UUID}, 350

	hw := func(c *agent.Config) { c.Hardware.GPUs = gpus }
	c := newFakeCoord()
	c.set(keep, ended)
	first := start(t, dir, c, withControl(), hw, leaveRunning)
	both := func(r market.Report) bool {
		return hasState("i-keep", market.ObservedRunning, nil)(r) && hasState("i-ended", market.ObservedRunning, nil)(r)
	}
	c.waitReport(t, "both running", both)
	first.stop(t)
	var last market.Report
	for len(c.reports) > 0 {
		last = <-c.reports
	}
	if !both(last) {
		t.Errorf("final report = %+v, want both still running", last)
	}
	if got := ctl.Get(gpus[1].UUID).PowerLimitW; got != 350 {
		t.Errorf("power limit of i-ended's GPU after the agent left = %d W, want 350 W still applied", got)
	}

	c.retire("i-ended") // the coordinator ends it while no agent runs
	start(t, dir, c, withControl(), hw)
	c.waitReport(t, "i-ended stopped", hasState("i-ended", market.ObservedStopped, nil))
	c.waitReport(t, "i-ended forgotten, i-keep running", func(r market.Report) bool {
		_, found := instance(r, "i-ended")
		return !found && hasState("i-keep", market.ObservedRunning, nil)(r)
	})
	b, _ := os.ReadFile(count)
	if got := strings.Count(string(b), "started"); got != 2 {
		t.Errorf("processes started = %d, want 2 (none by the second agent)", got)
	}
	if got, want := ctl.Get(gpus[1].UUID).PowerLimitW, gpus[1].DefaultPowerW; got != want {
		t.Errorf("power limit of the ended instance's GPU = %d W, want the default %d W", got, want)
	}
	if got := ctl.Get(gpus[0].UUID).PowerLimitW; got != 300 {
		t.Errorf("power limit of the adopted instance's GPU = %d W, want 300 W", got)
	}
}

// A workload found from before a restart that the coordinator no longer
// wants holds every GPU until it has ended: the agent never learnt which
// GPUs it had, and the coordinator may have given them to a new instance.
func TestOrphanHoldsGPUs(t *testing.T) {
	dir := t.TempDir()
	if err := crashAgent(t, dir, "i-old", `trap "" TERM; sleep 30`); err != nil {
		t.Fatal(err)
	}
	c := newFakeCoord()
	fresh := run("i-new", 1, "sleep 30")
	fresh.GPUs, fresh.GPUUUIDs = []int{1}, []string{"GPU-b"}
	c.set(fresh)
	start(t, dir, c, nil) // i-old gets DefaultGrace, 2 s, then SIGKILL
	r := c.waitReport(t, "i-new starting", func(r market.Report) bool { _, ok := instance(r, "i-new"); return ok })
	if old, ok := instance(r, "i-old"); ok && (old.State == market.ObservedRunning || old.State == market.ObservedStarting) {
		t.Errorf("i-new started while the orphan still ran: %+v", r.Instances)
	}
}
