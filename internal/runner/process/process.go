// Package process runs assignments as plain child processes on the host, for
// development machines and hosts without Docker. Each instance gets its own
// process group, working directory and log files under a state directory,
// and a record of its pid and start time, so that a runner started after an
// agent crash finds the children of the previous one.
//
// It is Linux-only (it reads /proc) and imports only internal/market.
package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Log limits. A chunk holds at most maxChunk bytes; one Drain reads at most
// maxDrain bytes per stream so that a chatty instance cannot blow up a report.
const (
	maxChunk = 64 << 10
	maxDrain = 256 << 10
)

// pollInterval is how often Stop checks whether an adopted process (not our
// child, so we cannot wait for it) has ended.
const pollInterval = 50 * time.Millisecond

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Runner runs assignments as process groups. It is safe for concurrent use.
type Runner struct {
	dir string
	now func() time.Time

	mu    sync.Mutex
	procs map[market.InstanceID]*proc
}

// record is what the state directory keeps about an instance.
type record struct {
	Instance   market.InstanceID    `json:"instance"`
	Generation int64                `json:"generation"`
	Pid        int                  `json:"pid,omitempty"`
	StartTicks uint64               `json:"start_ticks,omitempty"` // field 22 of /proc/<pid>/stat
	StartedAt  time.Time            `json:"started_at"`
	State      market.ObservedState `json:"state"`
	ExitCode   *int                 `json:"exit_code,omitempty"`
	Message    string               `json:"message,omitempty"`
	StopAsked  bool                 `json:"stop_asked,omitempty"`
	Offsets    [2]int64             `json:"offsets"` // bytes of stdout, stderr already drained
}

type proc struct {
	rec  record
	done chan struct{} // closed when the process has ended (own children only)
	own  bool          // started by this runner; false for adopted ones
}

var streams = [2]string{"stdout", "stderr"}

// New returns a runner that keeps its state under dir, creating it if
// needed, and adopts the instances recorded there by an earlier runner.
func New(dir string) (*Runner, error) {
	r := &Runner{dir: dir, now: time.Now, procs: map[market.InstanceID]*proc{}}
	if err := os.MkdirAll(filepath.Join(dir, "instances"), 0o700); err != nil {
		return nil, fmt.Errorf("process runner: %w", err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "instances"))
	if err != nil {
		return nil, fmt.Errorf("process runner: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "instances", e.Name(), "state.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue // crashed before the first write; nothing ran
		}
		if err != nil {
			return nil, fmt.Errorf("process runner: read state of %s: %w", e.Name(), err)
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil || rec.Instance == "" {
			return nil, fmt.Errorf("process runner: bad state file for %s: %v", e.Name(), err)
		}
		p := &proc{rec: rec, done: make(chan struct{})}
		if running(rec.State) && !alive(rec.Pid, rec.StartTicks) {
			r.ended(p, nil, "")
		}
		if !running(p.rec.State) {
			close(p.done)
		}
		r.procs[rec.Instance] = p
	}
	return r, nil
}

func running(s market.ObservedState) bool {
	return s == market.ObservedStarting || s == market.ObservedRunning
}

func (r *Runner) instDir(id market.InstanceID) string {
	return filepath.Join(r.dir, "instances", string(id))
}

// Start runs a's command unless the instance is already known: a running
// instance is left alone (nil), a finished one must be forgotten first
// (Conflict). A command that cannot start is recorded as failed, so List
// reports it, and its error is returned.
func (r *Runner) Start(ctx context.Context, a market.Assignment) error {
	const op = "start instance"
	if !validID.MatchString(string(a.Instance)) {
		return market.Errorf(op, market.Invalid, "instance ID %q is not a safe directory name", a.Instance)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.procs[a.Instance]; ok {
		if running(p.rec.State) {
			return nil
		}
		return market.Errorf(op, market.Conflict, "instance %s already ran (state %s); forget it before starting it again", a.Instance, p.rec.State)
	}
	p := &proc{rec: record{Instance: a.Instance, Generation: a.Generation, StartedAt: r.now()}, done: make(chan struct{}), own: true}
	r.procs[a.Instance] = p
	err := r.spawn(p, a)
	if err != nil {
		p.rec.State = market.ObservedFailed
		p.rec.Message = err.Error()
		close(p.done)
	}
	if werr := r.save(p); werr != nil && err == nil {
		// The child runs but a new runner would not find it: stop it
		// rather than risk an orphan nobody accounts for.
		_ = syscall.Kill(-p.rec.Pid, syscall.SIGKILL)
		err = werr
	}
	if err != nil {
		return market.Errorf(op, market.KindOf(err), "%s: %w", a.Instance, err)
	}
	return nil
}

func (r *Runner) spawn(p *proc, a market.Assignment) error {
	if len(a.Command) == 0 {
		return market.Errorf("", market.Invalid, "the assignment has no command")
	}
	dir := r.instDir(a.Instance)
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	var files [2]*os.File
	for i, s := range streams {
		f, err := os.OpenFile(filepath.Join(dir, s+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close() // the child has its own copy
		files[i] = f
	}
	// Not CommandContext: the process must outlive the call, and the
	// agent (not a context) decides when it stops.
	cmd := exec.Command(a.Command[0], a.Command[1:]...)
	cmd.Dir = work
	cmd.Env = append(Env(a), "GPUMARKET_NOTICE_FILE="+r.noticePath(a.Instance))
	cmd.Stdout, cmd.Stderr = files[0], files[1]
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return market.Errorf("", market.Invalid, "run %q: %v", a.Command[0], err)
	}
	p.rec.Pid = cmd.Process.Pid
	p.rec.StartTicks, _ = startTicks(p.rec.Pid) // the child exists until we reap it
	p.rec.State = market.ObservedRunning
	go r.wait(p, cmd)
	return nil
}

// wait reaps an own child and records how it ended.
func (r *Runner) wait(p *proc, cmd *exec.Cmd) {
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	msg := ""
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		msg = err.Error()
	}
	r.mu.Lock()
	r.ended(p, &code, msg)
	_ = r.save(p)
	r.mu.Unlock()
	close(p.done)
}

// ended records that p's process is gone. r.mu is held (or p not shared).
func (r *Runner) ended(p *proc, code *int, msg string) {
	if !running(p.rec.State) {
		return
	}
	p.rec.State = market.ObservedExited
	if p.rec.StopAsked {
		p.rec.State = market.ObservedStopped
	}
	p.rec.ExitCode = code
	if code == nil && msg == "" {
		msg = "the process ended while no agent watched it; its exit code is unknown"
	}
	p.rec.Message = msg
}

// Env is the environment of an assignment's process: the host's PATH and
// HOME, the assignment's variables, and the GPU selection, which the
// assignment cannot override.
func Env(a market.Assignment) []string {
	env := map[string]string{}
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for k, v := range a.Env {
		env[k] = v
	}
	idx := make([]string, len(a.GPUs))
	for i, g := range a.GPUs {
		idx[i] = strconv.Itoa(g)
	}
	devices := strings.Join(a.GPUUUIDs, ",")
	if len(a.GPUUUIDs) == 0 {
		devices = strings.Join(idx, ",")
	}
	env["CUDA_VISIBLE_DEVICES"] = devices // "" hides every GPU
	env["NVIDIA_VISIBLE_DEVICES"] = devices
	if devices == "" {
		env["NVIDIA_VISIBLE_DEVICES"] = "void"
	}
	env["GPUMARKET_GPU_INDICES"] = strings.Join(idx, ",")
	env["GPUMARKET_INSTANCE"] = string(a.Instance)
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// Stop ends an instance: SIGTERM to its process group, SIGKILL after grace
// (or at once when ctx ends), and returns when the process has ended. An
// unknown or finished instance is not an error.
func (r *Runner) Stop(ctx context.Context, id market.InstanceID, grace time.Duration) error {
	r.mu.Lock()
	p, ok := r.procs[id]
	if !ok || !running(p.rec.State) {
		r.mu.Unlock()
		return nil
	}
	p.rec.StopAsked = true
	_ = r.save(p)
	r.writeNotice(p, grace)
	r.signal(p, syscall.SIGTERM)
	r.mu.Unlock()

	if !r.waitEnd(ctx, p, grace) {
		r.mu.Lock()
		r.signal(p, syscall.SIGKILL)
		r.mu.Unlock()
		if !r.waitEnd(context.WithoutCancel(ctx), p, 30*time.Second) {
			return market.Errorf("stop instance", market.Internal, "%s: process %d survived SIGKILL", id, p.rec.Pid)
		}
	}
	// Members of the group that outlived the leader (a TERM-ignoring
	// grandchild) go too; the leader's pid cannot be reused while they
	// hold its group ID.
	_ = syscall.Kill(-p.rec.Pid, syscall.SIGKILL)
	return nil
}

// Exec runs cmd for a running instance of a, as a child process with the
// instance's environment and working directory, and returns its exit code
// (128+N when killed by signal N). Its output is discarded. When ctx ends
// first, its process group is killed and ctx's error returned.
func (r *Runner) Exec(ctx context.Context, a market.Assignment, cmd []string) (int, error) {
	const op = "exec in instance"
	r.mu.Lock()
	p, ok := r.procs[a.Instance]
	run := ok && running(p.rec.State)
	r.mu.Unlock()
	switch {
	case !run:
		return 0, market.Errorf(op, market.NotFound, "instance %s is not running here", a.Instance)
	case len(cmd) == 0:
		return 0, market.Errorf(op, market.Invalid, "no command to run")
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Dir = filepath.Join(r.instDir(a.Instance), "work")
	c.Env = append(Env(a), "GPUMARKET_NOTICE_FILE="+r.noticePath(a.Instance))
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = time.Second // a grandchild holding no pipe cannot hold Wait up
	err := c.Run()
	if ctx.Err() != nil {
		return 0, fmt.Errorf("%s: %s: %w", op, a.Instance, ctx.Err())
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	case err != nil:
		return 0, market.Errorf(op, market.Invalid, "run %q: %v", cmd[0], err)
	}
	return 0, nil
}

// noticePath is the file an instance finds in $GPUMARKET_NOTICE_FILE: it
// appears, just before SIGTERM, when the instance is told to stop.
func (r *Runner) noticePath(id market.InstanceID) string {
	return filepath.Join(r.instDir(id), "notice")
}

// writeNotice tells p's process that it is about to stop: SIGTERM follows
// at once and SIGKILL after grace. It is best effort; the signals follow
// whatever happens. r.mu is held.
func (r *Runner) writeNotice(p *proc, grace time.Duration) {
	now := r.now().UTC()
	b, _ := json.Marshal(struct {
		Instance market.InstanceID `json:"instance"`
		TermAt   time.Time         `json:"sigterm_at"`
		KillAt   time.Time         `json:"sigkill_at"`
	}{p.rec.Instance, now, now.Add(grace)})
	path := r.noticePath(p.rec.Instance)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err == nil {
		_ = os.Rename(tmp, path) // whole or absent, never half written
	}
}

// signal sends sig to p's process group if p still runs and is the process
// we started. r.mu is held, so an own child cannot be reaped meanwhile.
func (r *Runner) signal(p *proc, sig syscall.Signal) {
	if p.rec.Pid <= 0 || !running(p.rec.State) {
		return
	}
	if !p.own && !alive(p.rec.Pid, p.rec.StartTicks) {
		r.ended(p, nil, "")
		_ = r.save(p)
		return
	}
	_ = syscall.Kill(-p.rec.Pid, sig)
}

// waitEnd waits up to d for p to end and reports whether it did.
func (r *Runner) waitEnd(ctx context.Context, p *proc, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	var tick <-chan time.Time
	if !p.own {
		t := time.NewTicker(pollInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		if r.finished(p) {
			return true
		}
		select {
		case <-p.done:
			return true
		case <-tick:
		case <-timer.C:
			return r.finished(p)
		case <-ctx.Done():
			return r.finished(p)
		}
	}
}

// finished reports whether p has ended, checking /proc for adopted ones.
func (r *Runner) finished(p *proc) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if running(p.rec.State) && !p.own && !alive(p.rec.Pid, p.rec.StartTicks) {
		r.ended(p, nil, "")
		_ = r.save(p)
	}
	return !running(p.rec.State)
}

// List returns every known instance, ordered by ID.
func (r *Runner) List(ctx context.Context) ([]market.InstanceReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]market.InstanceReport, 0, len(r.procs))
	for _, p := range r.procs {
		if running(p.rec.State) && !p.own && !alive(p.rec.Pid, p.rec.StartTicks) {
			r.ended(p, nil, "")
			_ = r.save(p)
		}
		rep := market.InstanceReport{Instance: p.rec.Instance, Generation: p.rec.Generation, State: p.rec.State, Message: p.rec.Message}
		if p.rec.ExitCode != nil {
			c := *p.rec.ExitCode
			rep.ExitCode = &c
		}
		out = append(out, rep)
	}
	slices.SortFunc(out, func(a, b market.InstanceReport) int { return strings.Compare(string(a.Instance), string(b.Instance)) })
	return out, nil
}

// Drain returns the output written since the last Drain, in chunks.
func (r *Runner) Drain(ctx context.Context) ([]market.LogChunk, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []market.LogChunk
	var errs []error
	ids := make([]market.InstanceID, 0, len(r.procs))
	for id := range r.procs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := r.procs[id]
		moved := false
		for i, s := range streams {
			data, err := readFrom(filepath.Join(r.instDir(id), s+".log"), p.rec.Offsets[i], maxDrain)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s of %s: %w", s, id, err))
				continue
			}
			if len(data) == 0 {
				continue
			}
			p.rec.Offsets[i] += int64(len(data))
			moved = true
			at := r.now()
			for len(data) > 0 {
				n := min(len(data), maxChunk)
				out = append(out, market.LogChunk{Instance: id, Stream: s, Data: string(data[:n]), At: at})
				data = data[n:]
			}
		}
		if moved {
			if err := r.save(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return out, errors.Join(errs...)
}

func readFrom(path string, off int64, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, limit)
	n, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return buf[:n], nil
}

// Forget removes a finished instance and its files. Forgetting a running
// instance is a Conflict; an unknown one is not an error.
func (r *Runner) Forget(ctx context.Context, id market.InstanceID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.procs[id]
	if !ok {
		return nil
	}
	if running(p.rec.State) {
		return market.Errorf("forget instance", market.Conflict, "instance %s still runs; stop it first", id)
	}
	delete(r.procs, id)
	if err := os.RemoveAll(r.instDir(id)); err != nil {
		return fmt.Errorf("forget instance %s: %w", id, err)
	}
	return nil
}

// save writes p's record atomically. r.mu is held.
func (r *Runner) save(p *proc) error {
	b, err := json.MarshalIndent(p.rec, "", "  ")
	if err != nil {
		return err
	}
	dir := r.instDir(p.rec.Instance)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save state of %s: %w", p.rec.Instance, err)
	}
	tmp := filepath.Join(dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save state of %s: %w", p.rec.Instance, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "state.json")); err != nil {
		return fmt.Errorf("save state of %s: %w", p.rec.Instance, err)
	}
	return nil
}

// alive reports whether pid is still the process that started at ticks and
// has not ended (zombies count as ended). A pid that was reused by another
// process has a different start time.
func alive(pid int, ticks uint64) bool {
	if pid <= 0 || ticks == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	state, got, err := parseStat(b)
	return err == nil && got == ticks && state != "Z" && state != "X"
}

func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	_, t, err := parseStat(b)
	return t, err
}

// parseStat returns the state (field 3) and start time (field 22) of a
// /proc/<pid>/stat line. The command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (state string, ticks uint64, err error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("bad /proc stat %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 { // fields 3..22
		return "", 0, fmt.Errorf("bad /proc stat %q", s)
	}
	ticks, err = strconv.ParseUint(f[19], 10, 64)
	return f[0], ticks, err
}
