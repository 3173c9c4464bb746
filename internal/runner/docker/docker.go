// Package docker runs assignments as Docker containers through the Engine
// API. Each instance gets one container, named after the instance and
// labelled with its instance ID and generation, so that a runner started
// after an agent restart finds (adopts) the containers of the previous one
// and the daemon itself refuses a second container for an instance.
//
// Containers are hardened by default: not privileged, every capability
// dropped, no-new-privileges, private network/PID/IPC namespaces, no mounts,
// a pids limit, an init process that forwards signals, and the memory and
// CPU limits of Options. GPUs are passed by UUID as a device request for the
// nvidia driver, never "all".
//
// It imports only internal/market of gpumarket.
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Labels put on every container the runner creates.
const (
	LabelNamespace  = "io.gpumarket.namespace"
	LabelInstance   = "io.gpumarket.instance"
	LabelGeneration = "io.gpumarket.generation"
)

// Log limits: a chunk holds at most maxChunk bytes, and at most maxBuffered
// bytes wait for Drain; output beyond that is dropped (and said so).
const (
	maxChunk    = 64 << 10
	maxBuffered = 8 << 20
)

// Defaults of Options.
const (
	DefaultNamespace   = "gpumarket"
	DefaultPidsLimit   = 4096
	DefaultPullTimeout = 10 * time.Minute
)

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Options configures a Runner. Zero values take the defaults noted.
type Options struct {
	// Host is the daemon's address (unix:///var/run/docker.sock,
	// tcp://...); "" uses DOCKER_HOST, else the default socket.
	Host string
	// Namespace tells apart the containers of several agents (or test
	// runs) on one daemon; a runner only sees its own. Default "gpumarket".
	Namespace string
	// MemoryBytes limits each container's memory, without swap; 0 = no limit.
	MemoryBytes int64
	// NanoCPUs limits each container's CPU time (1e9 = one core); 0 = no limit.
	NanoCPUs int64
	// PidsLimit bounds the processes of a container (fork bombs); default 4096.
	PidsLimit int64
	// ShmBytes is the size of /dev/shm; 0 is Docker's default (64 MiB).
	ShmBytes int64
	// NoGPUDevices runs containers without GPU devices even when the
	// assignment has GPUs: for simulated GPUs and tests.
	NoGPUDevices bool
	// CapAdd are capabilities given back after dropping all; none by
	// default. (An SSH server needs CHOWN, SETUID, SETGID and SYS_CHROOT.)
	CapAdd []string
	// PullTimeout bounds an image pull; default 10 minutes.
	PullTimeout time.Duration
	Logger      *slog.Logger // nil discards
}

// Runner runs assignments as containers. It is safe for concurrent use.
// Create it with New and release it with Close.
type Runner struct {
	cli    *client.Client
	opt    Options
	nvidia bool // the daemon has the nvidia runtime
	log    *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	insts    map[market.InstanceID]*inst
	logs     []market.LogChunk
	logBytes int
	dropped  int
	closed   bool
	wg       sync.WaitGroup // log followers
}

// inst is what the runner knows of one instance. The daemon is the source
// of truth for containers; this adds what it cannot say (a start that
// failed before a container existed, a stop that was asked for).
type inst struct {
	id        market.InstanceID
	gen       int64
	container string // ID; "" while being created or when none was made
	state     market.ObservedState
	exitCode  *int
	message   string
	final     bool // ended and inspected: the state no longer changes
	stopAsked bool
	killed    bool // SIGKILLed after its grace

	cancelLogs context.CancelFunc
	logsDone   chan struct{} // closed when the log follower has ended
}

// New connects to the Docker daemon (negotiating the API version), and
// adopts the containers of the namespace that an earlier runner left:
// running ones are watched again, ended ones are reported, and those that
// were created but never started are removed.
func New(ctx context.Context, opt Options) (*Runner, error) {
	if opt.Namespace == "" {
		opt.Namespace = DefaultNamespace
	}
	if !validID.MatchString(opt.Namespace) {
		return nil, fmt.Errorf("docker runner: namespace %q is not a valid container name prefix", opt.Namespace)
	}
	if opt.PidsLimit <= 0 {
		opt.PidsLimit = DefaultPidsLimit
	}
	if opt.PullTimeout <= 0 {
		opt.PullTimeout = DefaultPullTimeout
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	copts := []client.Opt{client.FromEnv}
	if opt.Host != "" {
		copts = append(copts, client.WithHost(opt.Host))
	}
	cli, err := client.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("docker runner: %w", err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker runner: no Docker daemon answers at %s: %w", cli.DaemonHost(), err)
	}
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker runner: read daemon info: %w", err)
	}
	_, nvidia := info.Info.Runtimes["nvidia"]
	r := &Runner{
		cli: cli, opt: opt, nvidia: nvidia, log: opt.Logger, now: time.Now,
		insts: map[market.InstanceID]*inst{},
	}
	if err := r.adopt(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close stops following logs and closes the connection to the daemon. It
// leaves containers as they are: stopping them is the agent's decision.
func (r *Runner) Close() error {
	r.mu.Lock()
	r.closed = true
	for _, in := range r.insts {
		if in.cancelLogs != nil {
			in.cancelLogs()
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	return r.cli.Close()
}

// NvidiaRuntime reports whether the daemon has the nvidia runtime, which
// GPU device requests need.
func (r *Runner) NvidiaRuntime() bool { return r.nvidia }

// APIVersion is the Engine API version negotiated with the daemon.
func (r *Runner) APIVersion() string { return r.cli.ClientVersion() }

func (r *Runner) name(id market.InstanceID) string { return r.opt.Namespace + "-" + string(id) }

// containers lists the namespace's containers, running or not.
func (r *Runner) containers(ctx context.Context) ([]container.Summary, error) {
	res, err := r.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelNamespace+"="+r.opt.Namespace),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return res.Items, nil
}

func (r *Runner) adopt(ctx context.Context) error {
	cs, err := r.containers(ctx)
	if err != nil {
		return fmt.Errorf("docker runner: %w", err)
	}
	for _, c := range cs {
		id := market.InstanceID(c.Labels[LabelInstance])
		gen, _ := strconv.ParseInt(c.Labels[LabelGeneration], 10, 64)
		if !validID.MatchString(string(id)) {
			r.log.Warn("container with a bad instance label; leaving it alone", "container", c.ID, "label", id)
			continue
		}
		if c.State == container.StateCreated {
			// Created but never started by an agent that then died:
			// nothing ran, so it goes, and the agent starts it anew.
			if _, err := r.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				return fmt.Errorf("docker runner: remove never-started container of %s: %w", id, err)
			}
			r.log.Info("removed a container that never started", "instance", id)
			continue
		}
		in := &inst{id: id, gen: gen, container: c.ID, state: market.ObservedRunning}
		r.mu.Lock()
		r.insts[id] = in
		if isUp(c.State) {
			// Output from before the restart was sent (or lost) by the
			// previous agent; follow what comes from now on.
			r.follow(in, r.now())
		} else {
			in.state = market.ObservedExited
		}
		r.mu.Unlock()
		r.log.Info("adopted container", "instance", id, "generation", gen, "state", c.State)
	}
	return nil
}

func isUp(s container.ContainerState) bool {
	return s == container.StateRunning || s == container.StatePaused || s == container.StateRestarting
}

func running(s market.ObservedState) bool {
	return s == market.ObservedStarting || s == market.ObservedRunning
}

// Start creates and starts a container for a, pulling its image first if
// the host does not have it. A running instance is left alone (nil); a
// finished one must be forgotten first (Conflict). One that cannot start
// is recorded as failed, so List reports it, and its error is returned.
func (r *Runner) Start(ctx context.Context, a market.Assignment) error {
	const op = "start instance"
	if !validID.MatchString(string(a.Instance)) {
		return market.Errorf(op, market.Invalid, "instance ID %q is not a valid container name", a.Instance)
	}
	r.mu.Lock()
	if in, ok := r.insts[a.Instance]; ok {
		st := in.state
		r.mu.Unlock()
		if running(st) {
			return nil
		}
		return market.Errorf(op, market.Conflict, "instance %s already ran (state %s); forget it before starting it again", a.Instance, st)
	}
	in := &inst{id: a.Instance, gen: a.Generation, state: market.ObservedStarting}
	r.insts[a.Instance] = in
	r.mu.Unlock()

	cid, err := r.create(ctx, in, a)
	if err == nil {
		_, err = r.cli.ContainerStart(ctx, cid, client.ContainerStartOptions{})
		if err != nil {
			err = market.Errorf("", market.Invalid, "cannot start the container: %s", daemonMessage(err))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	in.container = cid
	if err != nil {
		in.state, in.message, in.final = market.ObservedFailed, market.Message(err), true
		return market.Errorf(op, market.KindOf(err), "%s: %w", a.Instance, err)
	}
	in.state = market.ObservedRunning
	r.follow(in, time.Time{})
	return nil
}

// create makes sure the image is here and creates the container.
func (r *Runner) create(ctx context.Context, in *inst, a market.Assignment) (string, error) {
	if a.Image == "" {
		return "", market.Errorf("", market.Invalid, "this machine runs container images and the instance has none; give an image")
	}
	spec, err := Spec(a, r.opt, r.nvidia)
	if err != nil {
		return "", err
	}
	if err := r.ensureImage(ctx, a.Instance, a.Image); err != nil {
		return "", err
	}
	res, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: r.name(a.Instance), Config: spec.Config, HostConfig: spec.HostConfig,
	})
	if cerrdefs.IsConflict(err) {
		// The name is taken: a container for this instance exists that
		// we did not know of. Never make a second one.
		return "", market.Errorf("", market.Conflict, "a container named %s already exists; not starting a second one", r.name(a.Instance))
	}
	if err != nil {
		return "", market.Errorf("", market.Invalid, "cannot create the container: %s", daemonMessage(err))
	}
	for _, w := range res.Warnings {
		r.log.Warn("docker warns about a container", "instance", a.Instance, "warning", w)
	}
	return res.ID, nil
}

// ensureImage pulls ref unless the host has it, reporting progress in the
// instance's "system" log stream.
func (r *Runner) ensureImage(ctx context.Context, id market.InstanceID, ref string) error {
	_, err := r.cli.ImageInspect(ctx, ref)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return market.Errorf("", market.Unavailable, "inspect image %s: %s", ref, daemonMessage(err))
	}
	r.system(id, "pulling image %s", ref)
	pctx, cancel := context.WithTimeout(ctx, r.opt.PullTimeout)
	defer cancel()
	perr := r.pull(pctx, id, ref)
	if perr == nil {
		r.system(id, "pulled image %s", ref)
		return nil
	}
	if errors.Is(perr, context.DeadlineExceeded) {
		perr = fmt.Errorf("no progress within %s", r.opt.PullTimeout)
	}
	msg := fmt.Sprintf("image not found: %s (it is not on this host and pulling it failed: %s)", ref, daemonMessage(perr))
	r.system(id, "%s", msg)
	return market.Errorf("", market.Invalid, "%s", msg)
}

func (r *Runner) pull(ctx context.Context, id market.InstanceID, ref string) error {
	resp, err := r.cli.ImagePull(ctx, ref, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer resp.Close()
	last := map[string]string{} // layer -> last status reported
	for m, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return err
		}
		if m.Error != nil {
			return m.Error
		}
		if m.Status == "" || last[m.ID] == m.Status {
			continue // byte-level progress would flood the logs
		}
		last[m.ID] = m.Status
		if m.ID != "" {
			r.system(id, "pull %s: %s %s", ref, m.ID, m.Status)
		} else {
			r.system(id, "pull %s: %s", ref, m.Status)
		}
	}
	return ctx.Err()
}

// daemonMessage is err's text without the client's "Error response from
// daemon: " prefix.
func daemonMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "Error response from daemon: ")
}

// ContainerSpec is what Spec builds for the daemon.
type ContainerSpec struct {
	Config     *container.Config
	HostConfig *container.HostConfig
}

// Spec returns the container configuration of an assignment: its image,
// command and environment, the labels that tie it to the instance, the
// hardening and limits, and its GPUs as a device request by UUID when the
// host has the nvidia runtime. An assignment with GPUs on a host without it
// is refused unless opt.NoGPUDevices.
func Spec(a market.Assignment, opt Options, nvidia bool) (ContainerSpec, error) {
	ns := opt.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	pids := opt.PidsLimit
	if pids <= 0 {
		pids = DefaultPidsLimit
	}
	gpus := len(a.GPUUUIDs) > 0 && !opt.NoGPUDevices
	if gpus && !nvidia {
		return ContainerSpec{}, market.Errorf("", market.Unavailable,
			"the instance has %d GPUs but this host's Docker has no nvidia runtime; install the NVIDIA Container Toolkit and restart the agent", len(a.GPUUUIDs))
	}
	env := map[string]string{}
	maps.Copy(env, a.Env)
	idx := make([]string, len(a.GPUs))
	for i, g := range a.GPUs {
		idx[i] = strconv.Itoa(g)
	}
	// The nvidia hook reads NVIDIA_VISIBLE_DEVICES; CUDA images set it to
	// "all", which a default nvidia runtime would honour. The runner's
	// value always wins.
	env["NVIDIA_VISIBLE_DEVICES"] = "void"
	if gpus {
		env["NVIDIA_VISIBLE_DEVICES"] = strings.Join(a.GPUUUIDs, ",")
	}
	env["GPUMARKET_GPU_UUIDS"] = strings.Join(a.GPUUUIDs, ",")
	env["GPUMARKET_GPU_INDICES"] = strings.Join(idx, ",")
	env["GPUMARKET_INSTANCE"] = string(a.Instance)
	envList := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		envList = append(envList, k+"="+env[k])
	}

	cfg := &container.Config{
		Image: a.Image,
		Cmd:   slices.Clone(a.Command),
		Env:   envList,
		Labels: map[string]string{
			LabelNamespace:  ns,
			LabelInstance:   string(a.Instance),
			LabelGeneration: strconv.FormatInt(a.Generation, 10),
		},
	}
	useInit := true
	host := &container.HostConfig{
		NetworkMode:   "bridge",
		IpcMode:       container.IPCModePrivate,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		LogConfig:     container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "32m", "max-file": "2"}},
		Privileged:    false,
		CapDrop:       []string{"ALL"},
		CapAdd:        slices.Clone(opt.CapAdd),
		SecurityOpt:   []string{"no-new-privileges:true"},
		ShmSize:       opt.ShmBytes,
		// An init as PID 1 forwards SIGTERM to the workload (the kernel
		// drops signals a PID 1 has no handler for) and reaps zombies.
		Init: &useInit,
		Resources: container.Resources{
			Memory:    opt.MemoryBytes,
			NanoCPUs:  opt.NanoCPUs,
			PidsLimit: &pids,
		},
	}
	if opt.MemoryBytes > 0 {
		host.Resources.MemorySwap = opt.MemoryBytes // no swap on top
	}
	if gpus {
		host.Resources.DeviceRequests = []container.DeviceRequest{{
			Driver:       "nvidia",
			DeviceIDs:    slices.Clone(a.GPUUUIDs),
			Capabilities: [][]string{{"gpu"}},
		}}
	}
	return ContainerSpec{Config: cfg, HostConfig: host}, nil
}

// follow streams in's container output into the log buffer, from since
// (zero: from the start). r.mu is held.
func (r *Runner) follow(in *inst, since time.Time) {
	if r.closed || in.container == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	in.cancelLogs, in.logsDone = cancel, done
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true}
	if !since.IsZero() {
		opts.Since = since.UTC().Format(time.RFC3339Nano)
	}
	id, cid := in.id, in.container
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		defer cancel()
		rc, err := r.cli.ContainerLogs(ctx, cid, opts)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("follow container logs", "instance", id, "err", err)
			}
			return
		}
		defer rc.Close()
		_, err = stdcopy.StdCopy(logWriter{r, id, "stdout"}, logWriter{r, id, "stderr"}, rc)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("read container logs", "instance", id, "err", err)
		}
	}()
}

type logWriter struct {
	r      *Runner
	id     market.InstanceID
	stream string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	w.r.addLog(w.id, w.stream, p)
	return len(p), nil
}

// addLog appends output to the buffer. r.mu is held.
func (r *Runner) addLog(id market.InstanceID, stream string, p []byte) {
	if r.logBytes+len(p) > maxBuffered {
		r.dropped += len(p)
		return
	}
	r.logBytes += len(p)
	at := r.now()
	for len(p) > 0 {
		if n := len(r.logs); n > 0 {
			last := &r.logs[n-1]
			if last.Instance == id && last.Stream == stream && len(last.Data) < maxChunk {
				k := min(len(p), maxChunk-len(last.Data))
				last.Data += string(p[:k])
				p = p[k:]
				continue
			}
		}
		k := min(len(p), maxChunk)
		r.logs = append(r.logs, market.LogChunk{Instance: id, Stream: stream, Data: string(p[:k]), At: at})
		p = p[k:]
	}
}

// system adds a line of the runner's own (pull progress, failures) to an
// instance's "system" stream.
func (r *Runner) system(id market.InstanceID, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLog(id, "system", []byte(fmt.Sprintf(format, args...)+"\n"))
}

// Drain returns the output produced since the last Drain.
func (r *Runner) Drain(ctx context.Context) ([]market.LogChunk, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.logs
	r.logs, r.logBytes = nil, 0
	if r.dropped > 0 {
		r.log.Warn("container output came faster than it was reported; dropped some", "bytes", r.dropped)
		r.dropped = 0
	}
	return out, nil
}

// List returns every instance the runner knows, ordered by ID, with the
// daemon's view of their containers. An ended container is reported once
// its output has been read to the end, so that its last lines come no
// later than its final state.
func (r *Runner) List(ctx context.Context) ([]market.InstanceReport, error) {
	cs, err := r.containers(ctx)
	if err != nil {
		return nil, market.Errorf("list instances", market.Unavailable, "docker: %w", err)
	}
	byID := make(map[string]container.Summary, len(cs))
	for _, c := range cs {
		byID[c.ID] = c
	}
	r.mu.Lock()
	var ended []*inst
	for _, in := range r.insts {
		if in.final || in.container == "" {
			continue
		}
		c, ok := byID[in.container]
		switch {
		case !ok:
			in.state, in.final = market.ObservedExited, true
			in.message = "the container was removed outside the agent; its exit code is unknown"
			if in.stopAsked {
				in.state = market.ObservedStopped
			}
		case isUp(c.State), c.State == container.StateCreated:
			// Created: our Start is between create and start.
		default:
			ended = append(ended, in)
		}
	}
	r.mu.Unlock()
	for _, in := range ended {
		r.settle(ctx, in)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]market.InstanceReport, 0, len(r.insts))
	for _, in := range r.insts {
		rep := market.InstanceReport{Instance: in.id, Generation: in.gen, State: in.state, Message: in.message}
		if in.exitCode != nil {
			c := *in.exitCode
			rep.ExitCode = &c
		}
		out = append(out, rep)
	}
	slices.SortFunc(out, func(a, b market.InstanceReport) int { return strings.Compare(string(a.Instance), string(b.Instance)) })
	return out, nil
}

// settle records how an ended container ended, after waiting (briefly) for
// its log follower to read the last output.
func (r *Runner) settle(ctx context.Context, in *inst) {
	r.mu.Lock()
	done, cid := in.logsDone, in.container
	r.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
	}
	res, err := r.cli.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
	r.mu.Lock()
	defer r.mu.Unlock()
	if in.final {
		return
	}
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			in.state, in.final = market.ObservedExited, true
			in.message = "the container was removed outside the agent; its exit code is unknown"
		}
		return
	}
	st := res.Container.State
	if st == nil || isUp(st.Status) {
		return
	}
	code := st.ExitCode
	in.exitCode, in.final = &code, true
	in.state = market.ObservedExited
	if in.stopAsked {
		in.state = market.ObservedStopped
	}
	in.message = exitMessage(code, st.OOMKilled, in.killed, st.Error)
}

// exitMessage says how a container ended, for the renter.
func exitMessage(code int, oom, killed bool, daemonErr string) string {
	var msg string
	switch {
	case oom:
		msg = fmt.Sprintf("exited %d (out of memory)", code)
	case killed:
		msg = fmt.Sprintf("exited %d (killed: it did not stop within its grace period)", code)
	case code != 0:
		msg = fmt.Sprintf("exited %d", code)
	}
	if daemonErr != "" {
		msg = strings.TrimSpace(msg + ": " + daemonErr)
	}
	return msg
}

// Stop sends SIGTERM to the instance's container (to its init, which passes
// it on), SIGKILL after grace or when ctx ends, and returns when the
// container has ended. An unknown or finished instance is not an error.
func (r *Runner) Stop(ctx context.Context, id market.InstanceID, grace time.Duration) error {
	const op = "stop instance"
	cid, ok := r.stopTarget(ctx, id)
	if !ok {
		return nil
	}
	if r.signalAndWait(ctx, cid, "SIGTERM", grace) {
		return nil
	}
	r.mu.Lock()
	if in := r.insts[id]; in != nil {
		in.killed = true
	}
	r.mu.Unlock()
	if r.signalAndWait(context.WithoutCancel(ctx), cid, "SIGKILL", 30*time.Second) {
		return nil
	}
	return market.Errorf(op, market.Internal, "%s: container %.12s survived SIGKILL for 30s", id, cid)
}

// stopTarget marks id as asked to stop and returns its container, waiting
// for a Start in progress to create it.
func (r *Runner) stopTarget(ctx context.Context, id market.InstanceID) (string, bool) {
	for {
		r.mu.Lock()
		in, ok := r.insts[id]
		if !ok || !running(in.state) {
			r.mu.Unlock()
			return "", false
		}
		in.stopAsked = true
		cid := in.container
		r.mu.Unlock()
		if cid != "" {
			return cid, true
		}
		select { // Start is pulling or creating
		case <-ctx.Done():
			return "", false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// signalAndWait sends sig to the container and reports whether it ended
// within d.
func (r *Runner) signalAndWait(ctx context.Context, cid, sig string, d time.Duration) bool {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	// Wait first, so that an exit right after the signal is not missed.
	w := r.cli.ContainerWait(wctx, cid, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	if _, err := r.cli.ContainerKill(ctx, cid, client.ContainerKillOptions{Signal: sig}); err != nil {
		if cerrdefs.IsNotFound(err) {
			return true
		}
		// Conflict: it is not running (any more); the wait says so.
		if !cerrdefs.IsConflict(err) {
			r.log.Warn("signal container", "container", cid, "signal", sig, "err", err)
		}
	}
	select {
	case <-w.Result:
		return true
	case err := <-w.Error:
		if cerrdefs.IsNotFound(err) {
			return true
		}
		return r.ended(context.WithoutCancel(ctx), cid)
	}
}

// ended reports whether the container is gone or not running.
func (r *Runner) ended(ctx context.Context, cid string) bool {
	res, err := r.cli.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return true
	}
	return err == nil && res.Container.State != nil && !isUp(res.Container.State.Status)
}

// Forget removes a finished instance's container. Forgetting a running
// instance is a Conflict; an unknown one is not an error.
func (r *Runner) Forget(ctx context.Context, id market.InstanceID) error {
	const op = "forget instance"
	r.mu.Lock()
	in, ok := r.insts[id]
	if !ok {
		r.mu.Unlock()
		return nil
	}
	st, cid := in.state, in.container
	r.mu.Unlock()
	if st == market.ObservedStarting || (cid != "" && !r.ended(ctx, cid)) {
		return market.Errorf(op, market.Conflict, "instance %s still runs; stop it first", id)
	}
	if cid != "" {
		_, err := r.cli.ContainerRemove(ctx, cid, client.ContainerRemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("forget instance %s: remove container: %w", id, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if in.cancelLogs != nil {
		in.cancelLogs()
	}
	if r.insts[id] == in {
		delete(r.insts, id)
	}
	return nil
}
