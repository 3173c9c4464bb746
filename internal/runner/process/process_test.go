package process

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gpumarket/gpumarket/internal/market"
)

func assignment(id string, script string) market.Assignment {
	return market.Assignment{
		Instance: market.InstanceID(id), Generation: 1, Desired: market.DesiredRun,
		GPUs: []int{0, 2}, GPUUUIDs: []string{"GPU-a", "GPU-c"},
		Command: []string{"/bin/sh", "-c", script}, Env: map[string]string{"FOO": "bar", "CUDA_VISIBLE_DEVICES": "sneaky"},
	}
}

// logsUntil drains r until the output of id contains want.
// Output drained for other instances and streams is kept for later calls.
var drained = map[*Runner]map[string]*strings.Builder{}

func logsUntil(t *testing.T, r *Runner, id market.InstanceID, stream, want string) string {
	t.Helper()
	if drained[r] == nil {
		drained[r] = map[string]*strings.Builder{}
	}
	buf := func(id market.InstanceID, stream string) *strings.Builder {
		k := string(id) + "/" + stream
		if drained[r][k] == nil {
			drained[r][k] = &strings.Builder{}
		}
		return drained[r][k]
	}
	got := buf(id, stream)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		chunks, err := r.Drain(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			buf(c.Instance, c.Stream).WriteString(c.Data)
		}
		if strings.Contains(got.String(), want) {
			return got.String()
		}
		<-tick.C
	}
	t.Fatalf("%s of %s = %q, want it to contain %q", stream, id, got.String(), want)
	return ""
}

func state(t *testing.T, r *Runner, id market.InstanceID) market.InstanceReport {
	t.Helper()
	l, err := r.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range l {
		if rep.Instance == id {
			return rep
		}
	}
	t.Fatalf("List has no %s: %+v", id, l)
	return market.InstanceReport{}
}

func waitDone(t *testing.T, r *Runner, id market.InstanceID) {
	t.Helper()
	r.mu.Lock()
	p := r.procs[id]
	r.mu.Unlock()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not end", id)
	}
}

func ptr(i int) *int { return &i }

func TestRunExitAndLogs(t *testing.T) {
	r, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := assignment("i-1", `echo "cuda=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES idx=$GPUMARKET_GPU_INDICES foo=$FOO user=${USER:-unset} pwd=$PWD"; echo oops >&2; exit 3`)
	t.Setenv("USER", "host-user")
	if err := r.Start(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	out := logsUntil(t, r, "i-1", "stdout", "\n")
	want := "cuda=GPU-a,GPU-c nv=GPU-a,GPU-c idx=0,2 foo=bar user=unset pwd=" + filepath.Join(r.dir, "instances", "i-1", "work") + "\n"
	if out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	logsUntil(t, r, "i-1", "stderr", "oops\n")
	waitDone(t, r, "i-1")
	got := state(t, r, "i-1")
	if diff := cmp.Diff(market.InstanceReport{Instance: "i-1", Generation: 1, State: market.ObservedExited, ExitCode: ptr(3)}, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if err := r.Start(t.Context(), a); !market.IsKind(err, market.Conflict) {
		t.Errorf("Start of a finished instance: %v, want Conflict", err)
	}
	if err := r.Forget(t.Context(), "i-1"); err != nil {
		t.Fatal(err)
	}
	if l, _ := r.List(t.Context()); len(l) != 0 {
		t.Errorf("List after Forget = %+v, want empty", l)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "instances", "i-1")); !os.IsNotExist(err) {
		t.Errorf("instance dir still there after Forget: %v", err)
	}
}

func TestStartFailures(t *testing.T) {
	r, _ := New(t.TempDir())
	for _, tt := range []struct {
		id, want string
		cmd      []string
	}{
		{"i-empty", "has no command", nil},
		{"i-missing", "no-such-binary", []string{"/no-such-binary"}},
	} {
		a := market.Assignment{Instance: market.InstanceID(tt.id), Generation: 4, Command: tt.cmd}
		err := r.Start(t.Context(), a)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Start(%v) = %v, want an error containing %q", tt.cmd, err, tt.want)
		}
		got := state(t, r, a.Instance)
		if got.State != market.ObservedFailed || !strings.Contains(got.Message, tt.want) {
			t.Errorf("List %s = %+v, want failed with a message containing %q", tt.id, got, tt.want)
		}
	}
	if err := r.Start(t.Context(), market.Assignment{Instance: "../etc", Command: []string{"true"}}); !market.IsKind(err, market.Invalid) {
		t.Errorf("Start with a path-like ID: %v, want Invalid", err)
	}
}

func TestStopGraceAndKill(t *testing.T) {
	r, _ := New(t.TempDir())
	ctx := t.Context()
	if err := r.Start(ctx, assignment("i-term", "echo up; sleep 30")); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, assignment("i-trap", `trap "" TERM; echo up; sleep 30`)); err != nil {
		t.Fatal(err)
	}
	logsUntil(t, r, "i-term", "stdout", "up")
	logsUntil(t, r, "i-trap", "stdout", "up")
	if err := r.Start(ctx, assignment("i-term", "echo second")); err != nil {
		t.Errorf("Start of a running instance: %v, want nil (left alone)", err)
	}
	if err := r.Forget(ctx, "i-term"); !market.IsKind(err, market.Conflict) {
		t.Errorf("Forget of a running instance: %v, want Conflict", err)
	}

	if err := r.Stop(ctx, "i-term", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := state(t, r, "i-term"); got.State != market.ObservedStopped || got.ExitCode == nil || *got.ExitCode != 128+15 {
		t.Errorf("after SIGTERM: %+v, want stopped with exit code 143", got)
	}
	start := time.Now()
	if err := r.Stop(ctx, "i-trap", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := state(t, r, "i-trap"); got.State != market.ObservedStopped || got.ExitCode == nil || *got.ExitCode != 128+9 {
		t.Errorf("after SIGKILL: %+v, want stopped with exit code 137", got)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Stop of a TERM-ignoring process returned after %v, before its grace", d)
	}
	if err := r.Stop(ctx, "i-unknown", time.Second); err != nil {
		t.Errorf("Stop of an unknown instance: %v, want nil", err)
	}
}

// A new runner on the same directory finds the children of the previous
// one, does not start them twice and can stop them.
func TestAdoptAfterCrash(t *testing.T) {
	dir := t.TempDir()
	old, _ := New(dir)
	ctx := t.Context()
	if err := old.Start(ctx, assignment("i-orphan", `trap "" TERM; echo up; sleep 30`)); err != nil {
		t.Fatal(err)
	}
	if err := old.Start(ctx, assignment("i-done", "exit 7")); err != nil {
		t.Fatal(err)
	}
	logsUntil(t, old, "i-orphan", "stdout", "up")
	waitDone(t, old, "i-done")

	r, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := r.List(ctx)
	want := []market.InstanceReport{
		{Instance: "i-done", Generation: 1, State: market.ObservedExited, ExitCode: ptr(7)},
		{Instance: "i-orphan", Generation: 1, State: market.ObservedRunning},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("adopted List (-want +got):\n%s", diff)
	}
	if err := r.Start(ctx, assignment("i-orphan", "echo twice >> ../started")); err != nil {
		t.Errorf("Start of an adopted running instance: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "instances", "i-orphan", "started")); !os.IsNotExist(err) {
		t.Errorf("a second process ran for i-orphan")
	}
	if err := r.Stop(ctx, "i-orphan", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitDone(t, old, "i-orphan") // the old runner is still its parent in this test
	rep := state(t, r, "i-orphan")
	if rep.State != market.ObservedStopped || rep.ExitCode != nil {
		t.Errorf("adopted instance after Stop = %+v, want stopped with unknown exit code", rep)
	}
}

// A recorded pid that now belongs to another process is never signalled.
func TestReusedPidNotKilled(t *testing.T) {
	dir := t.TempDir()
	other := exec.Command("sleep", "30")
	other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	ticks, err := startTicks(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	rec := record{Instance: "i-old", Generation: 2, Pid: other.Process.Pid, StartTicks: ticks + 1, State: market.ObservedRunning}
	b, _ := json.Marshal(rec)
	os.MkdirAll(filepath.Join(dir, "instances", "i-old"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "instances", "i-old", "state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(t.Context(), "i-old", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if rep := state(t, r, "i-old"); rep.State != market.ObservedExited {
		t.Errorf("instance with a reused pid = %+v, want exited", rep)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the unrelated process was killed: %v", err)
	}
	if !alive(other.Process.Pid, ticks) {
		t.Errorf("the unrelated process is gone")
	}
}

func TestParseStat(t *testing.T) {
	line := "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100\n"
	st, ticks, err := parseStat([]byte(line))
	if err != nil || st != "S" || ticks != 98765 {
		t.Errorf("parseStat = %q, %d, %v; want S, 98765, nil", st, ticks, err)
	}
	if _, _, err := parseStat([]byte("1 (x) S 1")); err == nil {
		t.Errorf("parseStat of a short line: nil error")
	}
}

var _ = context.Background
