// Package docker runs assignments as Docker containers through the Engine
// API. Each instance gets one container, named after the instance and
// labelled with its instance ID and generation, so that a runner started
// after an agent restart finds (adopts) the containers of the previous one
// and the daemon itself refuses a second container for an instance.
//
// Containers are hardened by default: not privileged, every capability
// dropped (an instance with SSH keys gets back the few sshd needs, see
// SSHCaps), no-new-privileges, the default seccomp profile, private PID and
// IPC namespaces, a network of its own per instance (a user-defined
// bridge, created and removed with the container), no host mounts and
// never the Docker socket, a pids limit, an init process that forwards
// signals, and the CPU, memory, shared-memory and (where the storage driver
// can) disk limits of the assignment. Published ports get host ports from
// Options.PortRange. GPUs are passed by UUID, never "all": as CDI devices
// (nvidia.com/gpu=UUID) when the host has an NVIDIA CDI spec and the daemon
// reads CDI specs, else as a device request for the nvidia driver. GPU
// workloads are refused while the NVIDIA Container Toolkit has a known
// container-escape flaw (see CheckToolkit).
//
// The renter's SSH public keys are copied into the container before it
// starts, at market.SSHKeysPath (/etc/gpumarket/authorized_keys, mode 0444,
// owned by root), and that path is made read-only (a read-only bind of the
// file onto itself, which the container cannot undo without CAP_SYS_ADMIN).
// An image's sshd reads it with "AuthorizedKeysFile
// /etc/gpumarket/authorized_keys"; the ssh and pytorch templates do.
//
// It imports only internal/market of gpumarket.
package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
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
	// CapAdd are capabilities given back to every container after
	// dropping all; none by default. Instances with SSH keys get SSHCaps.
	CapAdd []string
	// PullTimeout bounds an image pull; default 10 minutes.
	PullTimeout time.Duration
	// PortRange is the host ports that container ports are published on;
	// without one, an instance that asks for ports fails to start.
	PortRange market.PortRange
	// PublicHost is the address renters reach published ports at; it is
	// reported with each port binding ("" leaves it to the coordinator).
	PublicHost string
	// CDIDirs are where an NVIDIA CDI spec (nvidia.yaml or nvidia.json) is
	// looked for; default DefaultCDIDirs.
	CDIDirs []string
	// ToolkitVersion reads the installed NVIDIA Container Toolkit version
	// (the output of nvidia-ctk --version); nil runs the real commands. It
	// is asked only when GPUs are passed through.
	ToolkitVersion func(ctx context.Context) (string, error)
	Logger         *slog.Logger // nil discards

	// sharedBridge puts containers on Docker's default bridge instead of
	// a network each: only for the benchmark that measures what the
	// networks cost.
	sharedBridge bool
}

// DefaultCDIDirs are the usual places of CDI specs.
var DefaultCDIDirs = []string{"/etc/cdi", "/var/run/cdi"}

// SSHCaps are the capabilities a container with SSH keys gets back, which
// an OpenSSH server needs: CHOWN (its pty), SETUID and SETGID (becoming the
// user), SYS_CHROOT (privilege separation), KILL (ending sessions of other
// users) and AUDIT_WRITE (login records).
var SSHCaps = []string{"CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// defaultReadonlyPaths are Docker's own read-only paths, kept when the
// runner adds the SSH keys file (setting any replaces Docker's list).
var defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// HostInfo is what Spec needs to know of the host and of this container's
// place on it.
type HostInfo struct {
	Nvidia     bool   // the daemon has the nvidia runtime (the toolkit is installed)
	CDI        bool   // the host has an NVIDIA CDI spec and the daemon reads CDI specs
	DiskQuota  bool   // the storage driver enforces a per-container size
	GPUBlocked string // why GPU workloads are refused; "" when they are not
	Network    string // the network the container joins; "" is Docker's default bridge
	// HostPorts maps each container port to publish ("8888/tcp") to its
	// host port.
	HostPorts map[string]int
}

// Runner runs assignments as containers. It is safe for concurrent use.
// Create it with New and release it with Close.
type Runner struct {
	cli     *client.Client
	opt     Options
	host    HostInfo // what the daemon and host offer; Network and HostPorts unset
	storage string   // the daemon's storage driver
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	ports    map[int]market.InstanceID // host ports held by the namespace's containers
	nextPort int                       // where the search for a free host port starts
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
	// A start that pulls runs in the background: cancelStart ends it and
	// startDone is closed when it has.
	cancelStart context.CancelFunc
	startDone   chan struct{}
	ports       []market.PortBinding // where its ports are published, once it runs

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
	if len(opt.CDIDirs) == 0 {
		opt.CDIDirs = DefaultCDIDirs
	}
	_, nvidia := info.Info.Runtimes["nvidia"]
	r := &Runner{
		cli: cli, opt: opt, log: opt.Logger, now: time.Now,
		storage: info.Info.Driver,
		insts:   map[market.InstanceID]*inst{},
		ports:   map[int]market.InstanceID{},
	}
	r.host = HostInfo{
		Nvidia: nvidia,
		// A daemon that reads CDI specs lists their directories (API 1.46+).
		CDI:       len(info.Info.CDISpecDirs) > 0 && HasNvidiaCDISpec(append(slices.Clone(info.Info.CDISpecDirs), opt.CDIDirs...)),
		DiskQuota: diskQuota(info.Info.Driver, info.Info.DriverStatus),
	}
	if !opt.NoGPUDevices && (r.host.Nvidia || r.host.CDI) {
		read := opt.ToolkitVersion
		if read == nil {
			read = ToolkitVersion
		}
		if err := CheckToolkit(ctx, read); err != nil {
			r.host.GPUBlocked = err.Error()
			r.log.Error("GPU workloads refused", "err", err)
		}
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
		if in.cancelStart != nil {
			in.cancelStart()
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	return r.cli.Close()
}

// NvidiaRuntime reports whether the daemon has the nvidia runtime, which
// GPU device requests need.
func (r *Runner) NvidiaRuntime() bool { return r.Host().Nvidia }

// Host returns what the runner found of the host: nvidia runtime, CDI,
// disk quotas, and why GPU workloads are refused, if they are.
func (r *Runner) Host() HostInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.host
}

// StorageDriver is the daemon's storage driver (overlay2, ...).
func (r *Runner) StorageDriver() string { return r.storage }

// diskQuota reports whether a storage driver enforces the "size" storage
// option: overlay2 only on xfs (mounted with pquota, which the daemon
// cannot tell; create then fails and the runner goes on without it),
// btrfs, zfs and devicemapper always.
func diskQuota(driver string, status [][2]string) bool {
	switch driver {
	case "btrfs", "zfs", "devicemapper":
		return true
	case "overlay2":
		for _, kv := range status {
			if kv[0] == "Backing Filesystem" && kv[1] == "xfs" {
				return true
			}
		}
	}
	return false
}

// HasNvidiaCDISpec reports whether one of dirs holds an NVIDIA CDI spec
// (nvidia.yaml or nvidia.json, as nvidia-ctk cdi generate writes).
func HasNvidiaCDISpec(dirs []string) bool {
	for _, d := range dirs {
		for _, name := range []string{"nvidia.yaml", "nvidia.json"} {
			if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode().IsRegular() {
				return true
			}
		}
	}
	return false
}

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
		in := &inst{id: id, gen: gen, container: c.ID, state: market.ObservedRunning, ports: r.bindings(c.Ports)}
		r.mu.Lock()
		r.insts[id] = in
		for _, b := range in.ports {
			r.ports[b.HostPort] = id
		}
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
	return r.removeOrphanNetworks(ctx)
}

// removeOrphanNetworks removes the namespace's networks whose instance has
// no container: left by an agent that died between creating the network
// and the container, or after removing the container.
func (r *Runner) removeOrphanNetworks(ctx context.Context) error {
	res, err := r.cli.NetworkList(ctx, client.NetworkListOptions{
		Filters: make(client.Filters).Add("label", LabelNamespace+"="+r.opt.Namespace),
	})
	if err != nil {
		return fmt.Errorf("docker runner: list networks: %w", err)
	}
	r.mu.Lock()
	known := make(map[market.InstanceID]bool, len(r.insts))
	for id := range r.insts {
		known[id] = true
	}
	r.mu.Unlock()
	for _, n := range res.Items {
		if known[market.InstanceID(n.Labels[LabelInstance])] {
			continue
		}
		if _, err := r.cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			r.log.Warn("remove orphaned network", "network", n.Name, "err", err)
			continue
		}
		r.log.Info("removed orphaned network", "network", n.Name)
	}
	return nil
}

// bindings turns the daemon's port list into what the renter sees, one
// binding per container port (the daemon lists IPv4 and IPv6 apart).
func (r *Runner) bindings(ps []container.PortSummary) []market.PortBinding {
	var out []market.PortBinding
	for _, p := range ps {
		if p.PublicPort == 0 {
			continue
		}
		port := fmt.Sprintf("%d/%s", p.PrivatePort, p.Type)
		if slices.ContainsFunc(out, func(b market.PortBinding) bool { return b.Port == port }) {
			continue
		}
		out = append(out, market.PortBinding{Port: port, Host: r.opt.PublicHost, HostPort: int(p.PublicPort)})
	}
	slices.SortFunc(out, func(a, b market.PortBinding) int { return strings.Compare(a.Port, b.Port) })
	return out
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

	if a.Image != "" && r.mustPull(ctx, a.Image) {
		// A pull can take minutes; the agent's loop must go on reporting
		// meanwhile (or the coordinator takes the machine for lost). The
		// instance stays starting, and List says how it ended.
		if _, err := Spec(a, r.opt, r.Host()); err != nil { // refuse before pulling
			r.mu.Lock()
			in.state, in.message, in.final = market.ObservedFailed, market.Message(err), true
			r.mu.Unlock()
			return market.Errorf(op, market.KindOf(err), "%s: %w", a.Instance, err)
		}
		sctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			cancel()
			return market.Errorf(op, market.Unavailable, "the runner is closed")
		}
		in.cancelStart, in.startDone = cancel, done
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			defer close(done)
			defer cancel()
			if err := r.finishStart(sctx, in, a); err != nil {
				r.log.Warn("start instance failed", "instance", a.Instance, "err", err)
			}
		}()
		return nil
	}
	return r.finishStart(ctx, in, a)
}

// mustPull reports whether the host lacks image ref. An error other than
// "not found" counts as lacking it: the pull then says what is wrong.
func (r *Runner) mustPull(ctx context.Context, ref string) bool {
	_, err := r.cli.ImageInspect(ctx, ref)
	return err != nil
}

// finishStart pulls, creates and starts in's container and records the
// outcome. A start cancelled by Stop ends as stopped.
func (r *Runner) finishStart(ctx context.Context, in *inst, a market.Assignment) error {
	const op = "start instance"
	var cid string
	var err error
	for attempt := 1; ; attempt++ {
		cid, err = r.create(ctx, in, a)
		if err != nil {
			break
		}
		_, err = r.cli.ContainerStart(ctx, cid, client.ContainerStartOptions{})
		if err == nil {
			break
		}
		if portTaken(err) && attempt < 5 {
			// Something outside the agent took a host port between the
			// check and the start: try other ports.
			r.log.Warn("host port taken; retrying with others", "instance", a.Instance, "err", err)
			_, _ = r.cli.ContainerRemove(ctx, cid, client.ContainerRemoveOptions{Force: true})
			r.releasePorts(a.Instance)
			continue
		}
		err = market.Errorf("", market.Invalid, "cannot start the container: %s", daemonMessage(err))
		break
	}
	var ports []market.PortBinding
	if err == nil && len(a.Ports) > 0 {
		if res, ierr := r.cli.ContainerInspect(ctx, cid, client.ContainerInspectOptions{}); ierr == nil && res.Container.NetworkSettings != nil {
			ports = r.inspectBindings(res.Container.NetworkSettings.Ports)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	in.container = cid
	if err != nil {
		in.state, in.message, in.final = market.ObservedFailed, market.Message(err), true
		if in.stopAsked {
			in.state, in.message = market.ObservedStopped, "stopped before it started"
		}
		return market.Errorf(op, market.KindOf(err), "%s: %w", a.Instance, err)
	}
	in.state = market.ObservedRunning
	in.ports = ports
	r.follow(in, time.Time{})
	return nil
}

// portTaken reports whether a start failed because a host port is in use.
func portTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")
}

// inspectBindings is bindings for an inspected container's port map.
func (r *Runner) inspectBindings(pm network.PortMap) []market.PortBinding {
	var ps []container.PortSummary
	for p, bs := range pm {
		for _, b := range bs {
			n, err := strconv.Atoi(b.HostPort)
			if err != nil || n <= 0 || n > 65535 {
				continue
			}
			ps = append(ps, container.PortSummary{PrivatePort: p.Num(), PublicPort: uint16(n), Type: string(p.Proto())})
		}
	}
	return r.bindings(ps)
}

// allocPorts picks a free host port of the range for each container port,
// holding them for id. Ports held by the namespace's containers are
// skipped, and so are those something else on the host listens on (when
// the daemon runs on this host, which is what the check can see).
func (r *Runner) allocPorts(id market.InstanceID, ports []string) (map[string]int, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	pr := r.opt.PortRange
	if pr.Size() == 0 {
		return nil, market.Errorf("", market.Unavailable, "the instance publishes %s but this host's agent runs without --port-range", strings.Join(ports, ", "))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	if r.nextPort < pr.First || r.nextPort > pr.Last {
		r.nextPort = pr.First
	}
	for _, p := range ports {
		found := 0
		for tries := 0; tries < pr.Size() && found == 0; tries++ {
			n := r.nextPort
			r.nextPort++
			if r.nextPort > pr.Last {
				r.nextPort = pr.First
			}
			if _, held := r.ports[n]; held || !portFree(n, strings.HasSuffix(p, "/udp")) {
				continue
			}
			found = n
		}
		if found == 0 {
			for _, n := range out {
				delete(r.ports, n)
			}
			return nil, market.Errorf("", market.Unavailable, "no free host port left in %s for %s; the host must widen --port-range", pr, p)
		}
		r.ports[found] = id
		out[p] = found
	}
	return out, nil
}

// portFree reports whether nothing on this host listens on port n.
func portFree(n int, udp bool) bool {
	addr := ":" + strconv.Itoa(n)
	if udp {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// releasePorts gives back the host ports held for id.
func (r *Runner) releasePorts(id market.InstanceID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, owner := range r.ports {
		if owner == id {
			delete(r.ports, n)
		}
	}
}

// create makes sure the image is here and creates the container.
func (r *Runner) create(ctx context.Context, in *inst, a market.Assignment) (string, error) {
	if a.Image == "" {
		return "", market.Errorf("", market.Invalid, "this machine runs container images and the instance has none; give an image")
	}
	host := r.Host()
	if _, err := Spec(a, r.opt, host); err != nil { // refuse before pulling
		return "", err
	}
	if err := r.ensureImage(ctx, a.Instance, a.Image); err != nil {
		return "", err
	}
	if a.Limits.DiskGiB > 0 && !host.DiskQuota {
		r.system(a.Instance, "disk limit of %d GiB not enforced: the storage driver %s of this host does not support per-container size limits", a.Limits.DiskGiB, r.storage)
	}
	if !r.opt.sharedBridge {
		netw, err := r.ensureNetwork(ctx, a.Instance)
		if err != nil {
			return "", err
		}
		host.Network = netw
	}
	var err error
	if host.HostPorts, err = r.allocPorts(a.Instance, a.Ports); err != nil {
		return "", err
	}
	spec, err := Spec(a, r.opt, host)
	if err != nil {
		return "", err
	}
	res, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: r.name(a.Instance), Config: spec.Config, HostConfig: spec.HostConfig,
	})
	if err != nil && spec.HostConfig.StorageOpt != nil && strings.Contains(err.Error(), "storage-opt") {
		// overlay2 on xfs without pquota: go on without a disk limit.
		r.mu.Lock()
		r.host.DiskQuota = false
		r.mu.Unlock()
		r.system(a.Instance, "disk limit of %d GiB not enforced: %s", a.Limits.DiskGiB, daemonMessage(err))
		spec.HostConfig.StorageOpt = nil
		res, err = r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Name: r.name(a.Instance), Config: spec.Config, HostConfig: spec.HostConfig,
		})
	}
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
	if len(a.SSHKeys) > 0 {
		if _, err := r.cli.CopyToContainer(ctx, res.ID, client.CopyToContainerOptions{DestinationPath: "/", Content: sshKeysTar(a.SSHKeys)}); err != nil {
			_, _ = r.cli.ContainerRemove(ctx, res.ID, client.ContainerRemoveOptions{Force: true})
			return "", market.Errorf("", market.Invalid, "cannot put the SSH keys into the container: %s", daemonMessage(err))
		}
	}
	return res.ID, nil
}

// sshKeysTar is a tar of market.SSHKeysPath holding keys, one per line,
// owned by root and read-only, in a directory only root may change.
func sshKeysTar(keys []string) *bytes.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte(strings.Join(keys, "\n") + "\n")
	dir := strings.TrimPrefix(filepath.Dir(market.SSHKeysPath), "/")
	mt := time.Unix(0, 0)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mt})
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(market.SSHKeysPath, "/"), Mode: 0o444, Size: int64(len(body)), ModTime: mt})
	_, _ = tw.Write(body)
	_ = tw.Close()
	return bytes.NewReader(buf.Bytes())
}

// ensureNetwork creates the instance's own bridge network, or finds the
// one an earlier attempt created, and returns its name (its ID if an old
// daemon, which allows two networks of one name, has made a second).
func (r *Runner) ensureNetwork(ctx context.Context, id market.InstanceID) (string, error) {
	have, err := r.networksOf(ctx, id)
	if err != nil {
		return "", market.Errorf("", market.Unavailable, "cannot list the instance's networks: %s", daemonMessage(err))
	}
	switch {
	case len(have) == 1:
		return r.name(id), nil
	case len(have) > 1:
		return have[0], nil // the name is ambiguous; the ID is not
	}
	res, err := r.cli.NetworkCreate(ctx, r.name(id), client.NetworkCreateOptions{
		Driver: "bridge",
		Labels: map[string]string{LabelNamespace: r.opt.Namespace, LabelInstance: string(id)},
		// One container per network: nothing to talk to but the outside.
		Options: map[string]string{"com.docker.network.bridge.enable_icc": "false"},
	})
	if err != nil {
		hint := ""
		if strings.Contains(err.Error(), "address pool") {
			// Docker's default pools hold about 30 bridge networks.
			hint = "; the host must give Docker more networks (smaller subnets in default-address-pools of /etc/docker/daemon.json)"
		}
		return "", market.Errorf("", market.Unavailable, "cannot create the instance's network: %s%s", daemonMessage(err), hint)
	}
	for _, w := range res.Warning {
		r.log.Warn("docker warns about a network", "instance", id, "warning", w)
	}
	return r.name(id), nil
}

// networksOf returns the IDs of the instance's networks (one, unless an
// old daemon let a retry make a second of the same name).
func (r *Runner) networksOf(ctx context.Context, id market.InstanceID) ([]string, error) {
	res, err := r.cli.NetworkList(ctx, client.NetworkListOptions{
		Filters: make(client.Filters).Add("label", LabelNamespace+"="+r.opt.Namespace).Add("label", LabelInstance+"="+string(id)),
	})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(res.Items))
	for _, n := range res.Items {
		ids = append(ids, n.ID)
	}
	return ids, nil
}

// removeNetwork removes the instance's networks; none is fine.
func (r *Runner) removeNetwork(ctx context.Context, id market.InstanceID) error {
	ids, err := r.networksOf(ctx, id)
	if err != nil {
		return fmt.Errorf("list networks of %s: %w", id, err)
	}
	for _, n := range ids {
		if _, err := r.cli.NetworkRemove(ctx, n, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove network of %s: %w", id, err)
		}
	}
	return nil
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
	msg := pullFailure(ref, perr)
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

// pullFailure says why an image could not be had: "image not found" when
// the registry says it has no such image (or denies it, as registries do
// for private images), else "pull failed".
func pullFailure(ref string, err error) string {
	m := daemonMessage(err)
	low := strings.ToLower(m)
	for _, s := range []string{"not found", "manifest unknown", "does not exist", "pull access denied", "repository name must", "invalid reference"} {
		if strings.Contains(low, s) {
			return fmt.Sprintf("image not found: %s (it is not on this host and the registry does not have it: %s)", ref, m)
		}
	}
	return fmt.Sprintf("pull failed: %s (%s)", ref, m)
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
// hardening and limits, its network and published ports, and its GPUs by
// UUID (see GPUDevices). An assignment with GPUs on a host that cannot pass
// them through, or whose toolkit is unsafe, is refused unless
// opt.NoGPUDevices.
func Spec(a market.Assignment, opt Options, host HostInfo) (ContainerSpec, error) {
	ns := opt.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	gpus := len(a.GPUUUIDs) > 0 && !opt.NoGPUDevices
	switch {
	case gpus && !host.Nvidia && !host.CDI:
		return ContainerSpec{}, market.Errorf("", market.Unavailable,
			"the instance has %d GPUs but this host's Docker has no nvidia runtime and no NVIDIA CDI spec; install the NVIDIA Container Toolkit and restart the agent", len(a.GPUUUIDs))
	case gpus && host.GPUBlocked != "":
		return ContainerSpec{}, market.Errorf("", market.Unavailable, "%s", host.GPUBlocked)
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
	if len(a.SSHKeys) > 0 {
		env["GPUMARKET_SSH_KEYS"] = market.SSHKeysPath
	}
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
	l := limits(a.Limits, opt)
	useInit := true
	hc := &container.HostConfig{
		NetworkMode:   "bridge",
		IpcMode:       container.IPCModePrivate,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		LogConfig:     container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "32m", "max-file": "2"}},
		Privileged:    false,
		CapDrop:       []string{"ALL"},
		CapAdd:        slices.Clone(opt.CapAdd),
		SecurityOpt:   []string{"no-new-privileges:true"},
		ShmSize:       l.ShmMiB << 20,
		// An init as PID 1 forwards SIGTERM to the workload (the kernel
		// drops signals a PID 1 has no handler for) and reaps zombies.
		Init: &useInit,
		Resources: container.Resources{
			Memory:    l.MemoryMiB << 20,
			NanoCPUs:  l.CPUMillis * 1e6,
			PidsLimit: &l.Pids,
		},
	}
	if host.Network != "" {
		hc.NetworkMode = container.NetworkMode(host.Network)
	}
	if l.MemoryMiB > 0 {
		hc.Resources.MemorySwap = l.MemoryMiB << 20 // no swap on top
	}
	if l.DiskGiB > 0 && host.DiskQuota {
		hc.StorageOpt = map[string]string{"size": strconv.FormatInt(l.DiskGiB, 10) + "G"}
	}
	if len(a.SSHKeys) > 0 {
		for _, c := range SSHCaps {
			if !slices.Contains(hc.CapAdd, c) {
				hc.CapAdd = append(hc.CapAdd, c)
			}
		}
		hc.ReadonlyPaths = append(slices.Clone(defaultReadonlyPaths), market.SSHKeysPath)
	}
	if len(a.Ports) > 0 {
		cfg.ExposedPorts = network.PortSet{}
		hc.PortBindings = network.PortMap{}
		for _, ps := range a.Ports {
			p, err := network.ParsePort(ps)
			if err != nil {
				return ContainerSpec{}, market.Errorf("", market.Invalid, "port %q: %v", ps, err)
			}
			cfg.ExposedPorts[p] = struct{}{}
			if hp := host.HostPorts[ps]; hp > 0 {
				hc.PortBindings[p] = []network.PortBinding{{HostPort: strconv.Itoa(hp)}}
			}
		}
	}
	if gpus {
		hc.Resources.DeviceRequests = GPUDevices(a.GPUUUIDs, host.CDI)
	}
	return ContainerSpec{Config: cfg, HostConfig: hc}, nil
}

// limits are the assignment's limits, each zero one taken from opt.
func limits(l market.Limits, opt Options) market.Limits {
	if l.CPUMillis == 0 {
		l.CPUMillis = opt.NanoCPUs / 1e6
	}
	if l.MemoryMiB == 0 {
		l.MemoryMiB = opt.MemoryBytes >> 20
	}
	if l.Pids <= 0 {
		l.Pids = opt.PidsLimit
	}
	if l.Pids <= 0 {
		l.Pids = DefaultPidsLimit
	}
	if l.ShmMiB == 0 {
		l.ShmMiB = opt.ShmBytes >> 20
	}
	return l
}

// GPUDevices is how a container gets exactly the GPUs uuids: CDI device
// names (nvidia.com/gpu=UUID) when the host has an NVIDIA CDI spec, else a
// device request for the nvidia driver naming the UUIDs. Never "all", and
// never a count, which would let the driver choose.
func GPUDevices(uuids []string, cdi bool) []container.DeviceRequest {
	if len(uuids) == 0 {
		return nil
	}
	if cdi {
		ids := make([]string, len(uuids))
		for i, u := range uuids {
			ids[i] = "nvidia.com/gpu=" + u
		}
		return []container.DeviceRequest{{Driver: "cdi", DeviceIDs: ids}}
	}
	return []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: slices.Clone(uuids), Capabilities: [][]string{{"gpu"}}}}
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
		if running(in.state) {
			rep.Ports = slices.Clone(in.ports)
		}
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

// Exec runs cmd in the running container of a's instance (docker exec,
// as the container's user with its environment) and returns its exit
// code; its output is discarded. When ctx ends first it kills the command
// (killExec) and returns ctx's error.
func (r *Runner) Exec(ctx context.Context, a market.Assignment, cmd []string) (int, error) {
	const op = "exec in instance"
	r.mu.Lock()
	cid := ""
	if in := r.insts[a.Instance]; in != nil && running(in.state) {
		cid = in.container
	}
	r.mu.Unlock()
	switch {
	case cid == "":
		return 0, market.Errorf(op, market.NotFound, "instance %s has no running container here", a.Instance)
	case len(cmd) == 0:
		return 0, market.Errorf(op, market.Invalid, "no command to run")
	}
	cr, err := r.cli.ExecCreate(ctx, cid, client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, fmt.Errorf("%s %s: %s", op, a.Instance, daemonMessage(err))
	}
	att, err := r.cli.ExecAttach(ctx, cr.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("%s %s: %s", op, a.Instance, daemonMessage(err))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, att.Reader) // ends when the command does
	}()
	select {
	case <-done:
		att.Close()
	case <-ctx.Done():
		att.Close()
		<-done
		if err := r.killExec(cr.ID, cid); err != nil {
			r.log.Warn("a command run in the instance outlived its deadline and runs on", "instance", a.Instance, "command", cmd, "err", err)
		}
		return 0, fmt.Errorf("%s %s: %w", op, a.Instance, ctx.Err())
	}
	// The exit code is set just after the output ends.
	for {
		res, err := r.cli.ExecInspect(ctx, cr.ID, client.ExecInspectOptions{})
		if err != nil {
			return 0, fmt.Errorf("%s %s: %s", op, a.Instance, daemonMessage(err))
		}
		if !res.Running {
			return res.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s %s: %w", op, a.Instance, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// killExec kills the process of exec id in container cid. The Engine API
// cannot kill an exec, but the daemon reports the process's PID on this
// host: when the agent runs beside the daemon (the usual case) and may
// signal it, the process is sent SIGKILL, after checking through /proc
// that the PID still belongs to the container (it could have ended and
// its PID gone to another process).
func (r *Runner) killExec(id, cid string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := r.cli.ExecInspect(ctx, id, client.ExecInspectOptions{})
	switch {
	case err != nil:
		return fmt.Errorf("inspect the command: %s", daemonMessage(err))
	case !res.Running:
		return nil
	case res.PID <= 0:
		return errors.New("the daemon reports no process ID for it")
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", res.PID))
	if err != nil {
		return fmt.Errorf("process %d is not visible here (is the Docker daemon on another host or in another PID namespace?): %w", res.PID, err)
	}
	if !strings.Contains(string(cg), cid) {
		return fmt.Errorf("process %d is not in container %.12s (it ended and its PID was reused, or the daemon is elsewhere)", res.PID, cid)
	}
	if err := syscall.Kill(res.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill process %d: %w", res.PID, err)
	}
	return nil
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
		cid, cancel, done := in.container, in.cancelStart, in.startDone
		r.mu.Unlock()
		if cid != "" {
			return cid, true
		}
		if cancel != nil {
			// Pulling in the background: give up on the start and wait
			// for it to say so (or to have made a container after all).
			cancel()
			select {
			case <-done:
			case <-ctx.Done():
				return "", false
			}
			continue
		}
		select { // Start is creating
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
	if err := r.removeNetwork(ctx, id); err != nil {
		return fmt.Errorf("forget instance %s: %w", id, err)
	}
	r.releasePorts(id)
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
