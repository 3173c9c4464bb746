package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/process"
)

var _ agent.Runner = (*process.Runner)(nil)

// TestMain doubles as a short-lived "previous agent" that starts an
// instance and exits without stopping it, as a crashed agent would.
func TestMain(m *testing.M) {
	if dir := os.Getenv("AGENT_TEST_CRASH_DIR"); dir != "" {
		r, err := process.New(dir)
		if err == nil {
			for _, id := range strings.Fields(os.Getenv("AGENT_TEST_CRASH_IDS")) {
				err = errors.Join(err, r.Start(context.Background(), run(id, 1, os.Getenv("AGENT_TEST_CRASH_SCRIPT"))))
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeCoord is an in-memory coordinator with the agent API's behaviour:
// versioned desired state with long polls, generation fencing of reports.
type fakeCoord struct {
	mu            sync.Mutex
	version       int64
	changed       chan struct{} // closed when version changes
	assignments   []market.Assignment
	generation    map[market.InstanceID]int64 // current generation, also of retired instances
	lostAfter     int
	down          bool
	reportsDown   bool // Report fails, Desired works
	registerFails int
	registers     int
	logs          map[market.InstanceID]string
	rejected      []market.Rejection
	reports       chan market.Report
}

func newFakeCoord() *fakeCoord {
	return &fakeCoord{
		changed: make(chan struct{}), generation: map[market.InstanceID]int64{},
		logs: map[market.InstanceID]string{}, reports: make(chan market.Report, 10000), lostAfter: 60,
	}
}

var errDown = market.Errorf("call coordinator", market.Unavailable, "connection refused")

func (f *fakeCoord) Register(ctx context.Context, hw market.Hardware) (market.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registers++
	if f.down || f.registerFails > 0 {
		f.registerFails--
		return market.Machine{}, errDown
	}
	return market.Machine{ID: "m-test", Hardware: hw}, nil
}

func (f *fakeCoord) Desired(ctx context.Context, id market.MachineID, since int64, wait time.Duration) (market.DesiredState, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		if f.down {
			f.mu.Unlock()
			return market.DesiredState{}, errDown
		}
		ds := market.DesiredState{Machine: id, Version: f.version, Assignments: slices.Clone(f.assignments), LostAfterSeconds: f.lostAfter}
		changed := f.changed
		f.mu.Unlock()
		if ds.Version != since {
			return ds, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return ds, nil
		case <-ctx.Done():
			return market.DesiredState{}, ctx.Err()
		}
	}
}

func (f *fakeCoord) Report(ctx context.Context, id market.MachineID, r market.Report) (market.ReportResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down || f.reportsDown {
		return market.ReportResult{}, errDown
	}
	var res market.ReportResult
	for _, ir := range r.Instances {
		if cur := f.generation[ir.Instance]; ir.Generation < cur {
			rj := market.Rejection{Instance: ir.Instance, Reason: fmt.Sprintf("stale generation %d; current is %d", ir.Generation, cur)}
			res.Rejected = append(res.Rejected, rj)
			f.rejected = append(f.rejected, rj)
		}
	}
	for _, c := range r.Logs {
		f.logs[c.Instance] += c.Data
	}
	f.reports <- r
	return res, nil
}

// set replaces the desired state and wakes long polls.
func (f *fakeCoord) set(as ...market.Assignment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.assignments = as
	for _, a := range as {
		f.generation[a.Instance] = a.Generation
	}
	f.version++
	close(f.changed)
	f.changed = make(chan struct{})
}

// retire drops an instance from the desired state and moves it to a newer
// generation, so that reports about the old one are stale.
func (f *fakeCoord) retire(id market.InstanceID) {
	f.mu.Lock()
	f.generation[id]++
	var keep []market.Assignment
	for _, a := range f.assignments {
		if a.Instance != id {
			keep = append(keep, a)
		}
	}
	f.mu.Unlock()
	f.set(keep...)
}

func (f *fakeCoord) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeCoord) output(id market.InstanceID) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs[id]
}

// waitReport reads reports until ok accepts one.
func (f *fakeCoord) waitReport(t *testing.T, what string, ok func(market.Report) bool) market.Report {
	t.Helper()
	timeout := time.After(15 * time.Second)
	var last market.Report
	for {
		select {
		case r := <-f.reports:
			if ok(r) {
				return r
			}
			last = r
		case <-timeout:
			t.Fatalf("no report with %s; last: %+v", what, last)
		}
	}
}

func instance(r market.Report, id market.InstanceID) (market.InstanceReport, bool) {
	for _, ir := range r.Instances {
		if ir.Instance == id {
			return ir, true
		}
	}
	return market.InstanceReport{}, false
}

func hasState(id market.InstanceID, s market.ObservedState, code *int) func(market.Report) bool {
	return func(r market.Report) bool {
		ir, ok := instance(r, id)
		if !ok || ir.State != s {
			return false
		}
		return code == nil || (ir.ExitCode != nil && *ir.ExitCode == *code)
	}
}

func run(id string, gen int64, script string) market.Assignment {
	return market.Assignment{
		Instance: market.InstanceID(id), Generation: gen, Desired: market.DesiredRun,
		GPUs: []int{0, 1}, GPUUUIDs: []string{"GPU-a", "GPU-b"},
		Command: []string{"/bin/sh", "-c", script}, GraceSeconds: 5,
	}
}

// testClock is the real clock shifted by an offset a test can move, so
// that "30 s without contact" takes no time.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}
func (c *testClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// stopSpy tells the test when the agent's stops return.
type stopSpy struct {
	agent.Runner
	stopped chan market.InstanceID
}

func (s stopSpy) Stop(ctx context.Context, id market.InstanceID, grace time.Duration) error {
	err := s.Runner.Stop(ctx, id, grace)
	s.stopped <- id
	return err
}

type harness struct {
	coord  *fakeCoord
	runner agent.Runner
	clock  *testClock
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, dir string, coord *fakeCoord, r agent.Runner, opts ...func(*agent.Config)) *harness {
	t.Helper()
	if r == nil {
		pr, err := process.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		r = pr
	}
	h := &harness{coord: coord, runner: r, clock: &testClock{}, done: make(chan error, 1)}
	cfg := agent.Config{
		Hardware:          market.Hardware{Fingerprint: "fp", Runner: "process"},
		Coordinator:       coord,
		Runner:            r,
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:             h.clock,
		HeartbeatInterval: 50 * time.Millisecond,
		PollWait:          200 * time.Millisecond,
		ReconcileInterval: 10 * time.Millisecond,
		RetryMin:          5 * time.Millisecond,
		RetryMax:          20 * time.Millisecond,
		DefaultGrace:      2 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	a := agent.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop cancels Run and waits for it to return.
func (h *harness) stop(t *testing.T) {
	h.cancel()
	select {
	case err, ok := <-h.done:
		if ok && err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		if ok {
			close(h.done)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return after cancel")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ptr(i int) *int { return &i }

func TestStartLogsStop(t *testing.T) {
	c := newFakeCoord()
	h := start(t, t.TempDir(), c, nil)
	c.set(run("i-1", 1, "echo hi; sleep 30"))

	r := c.waitReport(t, "i-1 starting", hasState("i-1", market.ObservedStarting, nil))
	if ir, _ := instance(r, "i-1"); ir.Generation != 1 {
		t.Errorf("generation = %d, want 1", ir.Generation)
	}
	c.waitReport(t, "i-1 running", hasState("i-1", market.ObservedRunning, nil))
	c.waitReport(t, "logs of i-1", func(market.Report) bool { return c.output("i-1") == "hi\n" })

	c.set(market.Assignment{Instance: "i-1", Generation: 1, Desired: market.DesiredStop, GraceSeconds: 5})
	c.waitReport(t, "i-1 stopped by SIGTERM", hasState("i-1", market.ObservedStopped, ptr(143)))

	c.set()
	c.waitReport(t, "i-1 forgotten", func(r market.Report) bool { return len(r.Instances) == 0 })
	if got := c.output("i-1"); got != "hi\n" {
		t.Errorf("output = %q, want one hi (started once)", got)
	}
	if l, _ := h.runner.List(t.Context()); len(l) != 0 {
		t.Errorf("runner still lists %+v", l)
	}
}

// A stop ordered with a new generation is confirmed with that generation,
// also once the process has ended, so the coordinator does not reject the
// confirmation as stale.
func TestStopNewGeneration(t *testing.T) {
	c := newFakeCoord()
	start(t, t.TempDir(), c, nil)
	c.set(run("i-1", 1, "sleep 30"))
	r := c.waitReport(t, "i-1 running", hasState("i-1", market.ObservedRunning, nil))
	if ir, _ := instance(r, "i-1"); ir.Generation != 1 {
		t.Fatalf("running report = %+v, want generation 1", ir)
	}

	c.set(market.Assignment{Instance: "i-1", Generation: 2, Desired: market.DesiredStop, GraceSeconds: 5})
	stoppedGen2 := func(r market.Report) bool {
		ir, ok := instance(r, "i-1")
		return ok && ir.State == market.ObservedStopped && ir.Generation == 2
	}
	r = c.waitReport(t, "i-1 stopped with generation 2", stoppedGen2)
	if ir, _ := instance(r, "i-1"); ir.ExitCode == nil || *ir.ExitCode != 143 {
		t.Errorf("stopped report = %+v, want exit code 143 (SIGTERM)", ir)
	}
	// Later reports (heartbeats) keep the generation.
	for range 3 {
		r = c.waitReport(t, "another report of i-1", func(r market.Report) bool { _, ok := instance(r, "i-1"); return ok })
		if !stoppedGen2(r) {
			ir, _ := instance(r, "i-1")
			t.Fatalf("later report = %+v, want stopped with generation 2", ir)
		}
	}
}

func TestKillAfterGrace(t *testing.T) {
	c := newFakeCoord()
	start(t, t.TempDir(), c, nil)
	a := run("i-trap", 1, `trap "" TERM; echo ready; sleep 30`)
	a.GraceSeconds = 1
	c.set(a)
	c.waitReport(t, "ready", func(market.Report) bool { return c.output("i-trap") == "ready\n" })
	c.set() // absent from the desired state: stop it too
	c.waitReport(t, "i-trap killed", hasState("i-trap", market.ObservedStopped, ptr(137)))
}

func TestEnvAndExit(t *testing.T) {
	c := newFakeCoord()
	start(t, t.TempDir(), c, nil)
	c.set(run("i-env", 1, `echo "$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES|$GPUMARKET_GPU_INDICES"; exit 4`))
	c.waitReport(t, "i-env exited 4", hasState("i-env", market.ObservedExited, ptr(4)))
	c.waitReport(t, "env output", func(market.Report) bool { return c.output("i-env") != "" })
	if got, want := c.output("i-env"), "GPU-a,GPU-b|GPU-a,GPU-b|0,1\n"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

func TestEmptyCommandFails(t *testing.T) {
	c := newFakeCoord()
	start(t, t.TempDir(), c, nil)
	a := run("i-empty", 3, "")
	a.Command = nil
	c.set(a)
	r := c.waitReport(t, "i-empty failed", hasState("i-empty", market.ObservedFailed, nil))
	if ir, _ := instance(r, "i-empty"); !strings.Contains(ir.Message, "no command") || ir.Generation != 3 {
		t.Errorf("report = %+v, want generation 3 and a message about the missing command", ir)
	}
}

// After an agent crash, a new agent adopts what the old one left running:
// it does not start a desired instance again and stops the ones no longer
// desired.
func TestRestartReconcile(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(t.TempDir(), "starts")
	crashed := crashAgent(t, dir, "i-keep i-orphan", `echo started >> `+count+`; sleep 30`)
	if crashed != nil {
		t.Fatal(crashed)
	}
	// The coordinator knows what it wants before the new agent asks: an
	// empty desired state is an order to stop everything, and would race
	// the adoption of i-keep.
	c := newFakeCoord()
	keep := run("i-keep", 1, "echo started >> "+count+"; sleep 30")
	keep.GraceSeconds = 0
	c.set(keep)
	h := start(t, dir, c, nil)
	c.waitReport(t, "i-orphan stopped", hasState("i-orphan", market.ObservedStopped, nil))
	r := c.waitReport(t, "i-keep running", hasState("i-keep", market.ObservedRunning, nil))
	if ir, _ := instance(r, "i-orphan"); ir.ExitCode != nil {
		t.Errorf("orphan exit code = %d, want unknown", *ir.ExitCode)
	}
	b, _ := os.ReadFile(count)
	if got := strings.Count(string(b), "started"); got != 2 {
		t.Errorf("processes started = %d, want 2 (one per instance, none by the new agent)", got)
	}
	h.stop(t) // stops i-keep; grace 0 means SIGKILL at once
	var last market.Report
	for len(c.reports) > 0 {
		last = <-c.reports
	}
	if ir, ok := instance(last, "i-keep"); !ok || ir.State != market.ObservedStopped {
		t.Errorf("final report = %+v, want i-keep stopped", last)
	}
}

func crashAgent(t *testing.T, dir, ids, script string) error {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "AGENT_TEST_CRASH_DIR="+dir, "AGENT_TEST_CRASH_IDS="+ids, "AGENT_TEST_CRASH_SCRIPT="+script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("crashing agent: %v: %s", err, out)
	}
	return nil
}

func TestStaleRejected(t *testing.T) {
	c := newFakeCoord()
	h := start(t, t.TempDir(), c, nil)
	c.set(run("i-1", 1, "sleep 30"))
	c.waitReport(t, "i-1 running", hasState("i-1", market.ObservedRunning, nil))
	c.retire("i-1")
	c.waitReport(t, "i-1 stopped", hasState("i-1", market.ObservedStopped, nil))
	c.waitReport(t, "i-1 forgotten", func(r market.Report) bool { return len(r.Instances) == 0 })
	c.mu.Lock()
	rejected := slices.Clone(c.rejected)
	c.mu.Unlock()
	if len(rejected) == 0 || rejected[0].Instance != "i-1" {
		t.Errorf("rejections = %+v, want the stale report of i-1", rejected)
	}
	if l, _ := h.runner.List(t.Context()); len(l) != 0 {
		t.Errorf("runner still lists %+v", l)
	}
}

func TestLostContactSelfStop(t *testing.T) {
	c := newFakeCoord()
	dir := t.TempDir()
	pr, err := process.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	spy := stopSpy{pr, make(chan market.InstanceID, 10)}
	h := start(t, dir, c, spy)
	c.set(run("i-1", 1, "sleep 30"))
	c.waitReport(t, "i-1 running", hasState("i-1", market.ObservedRunning, nil))

	c.setDown(true)
	h.clock.Advance(29 * time.Second) // under half of 60 s: keep running
	h.clock.Advance(2 * time.Second)  // now over it
	select {
	case id := <-spy.stopped:
		if id != "i-1" {
			t.Errorf("stopped %s, want i-1", id)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the agent did not stop its workload after losing contact")
	}
	l, _ := pr.List(t.Context())
	if len(l) != 1 || l[0].State != market.ObservedStopped {
		t.Errorf("runner lists %+v, want i-1 stopped", l)
	}

	// Back in contact, the agent reports the stop and does not restart
	// the instance the coordinator still lists.
	c.setDown(false)
	c.waitReport(t, "i-1 stopped", hasState("i-1", market.ObservedStopped, nil))
	c.waitReport(t, "a heartbeat", func(market.Report) bool { return true })
	if l, _ := pr.List(t.Context()); len(l) != 1 || l[0].State != market.ObservedStopped {
		t.Errorf("runner lists %+v, want i-1 still stopped", l)
	}
}

// Only reports are heartbeats to the coordinator: answered polls do not
// keep a host that cannot report from stopping its workloads.
func TestPollsAreNoContact(t *testing.T) {
	c := newFakeCoord()
	dir := t.TempDir()
	pr, err := process.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	spy := stopSpy{pr, make(chan market.InstanceID, 10)}
	h := start(t, dir, c, spy)
	c.set(run("i-1", 1, "sleep 30"))
	c.waitReport(t, "i-1 running", hasState("i-1", market.ObservedRunning, nil))

	c.mu.Lock()
	c.reportsDown = true
	c.mu.Unlock()
	h.clock.Advance(31 * time.Second)
	c.set(run("i-1", 1, "sleep 30")) // a poll answers after the jump
	select {
	case id := <-spy.stopped:
		if id != "i-1" {
			t.Errorf("stopped %s, want i-1", id)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the agent did not stop its workload while its reports failed")
	}
}

func TestRegisterRetries(t *testing.T) {
	c := newFakeCoord()
	c.registerFails = 3
	start(t, t.TempDir(), c, nil)
	c.waitReport(t, "a first report", func(market.Report) bool { return true })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.registers != 4 {
		t.Errorf("Register called %d times, want 4", c.registers)
	}
}

func TestCancelBeforeRegister(t *testing.T) {
	c := newFakeCoord()
	c.setDown(true)
	h := start(t, t.TempDir(), c, nil)
	h.stop(t) // returns nil without ever registering
}
