package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/gpu/cuda"
	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/gpu/nvidiasmi"
	"github.com/gpumarket/gpumarket/internal/gpu/nvml"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/docker"
	"github.com/gpumarket/gpumarket/internal/runner/process"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// Guards: the adapters wired here satisfy what the agent declares.
var (
	_ agent.Coordinator = (*apiclient.Client)(nil)
	_ agent.Runner      = (*process.Runner)(nil)
	_ agent.Runner      = (*docker.Runner)(nil)
	_ agent.Sampler     = (*fake.Control)(nil)
	_ agent.Sampler     = nvidiasmi.Control{}
	_ agent.Sampler     = (*nvml.Lib)(nil)
	_ agent.GPUControl  = nvidiasmi.Control{}
	_ agent.GPUControl  = (*nvml.Lib)(nil)
)

type agentCmd struct {
	FakeGPUs          string        `name:"fake-gpus" placeholder:"SPEC" help:"Simulate GPUs instead of discovering them, e.g. \"4xRTX 4090\" or \"2xH100 80GB,1xRTX 3090\"."`
	StateDir          string        `type:"path" placeholder:"DIR" help:"Where the agent keeps its machine ID and workload state (default: the user cache dir)."`
	Region            string        `help:"Region this machine is in (for example eu, us); shown to renters."`
	DataCenter        string        `name:"datacenter" help:"Data center name; shown to renters."`
	HeartbeatInterval time.Duration `default:"10s" help:"Longest time between reports to the coordinator."`
	Runner            string        `default:"auto" enum:"auto,docker,process" help:"How workloads run: docker (containers), process (plain host processes, for development), or auto: docker when a Docker daemon answers, else process."`
	DockerHost        string        `placeholder:"URL" help:"Docker daemon address (default: DOCKER_HOST, else the local socket)."`
	OnExit            string        `name:"on-exit" enum:",leave,stop" default:"" placeholder:"leave|stop" help:"What happens to running workloads when the agent exits (SIGTERM, restart, upgrade). leave (the default with the docker runner): containers keep running, and the next agent on this --state-dir and Docker daemon adopts them and removes those the coordinator ended meanwhile; if it stays down past the coordinator's lost deadline (60s by default), the instances fail and stop being billed, and their containers are removed when the agent is back. stop (the default, and the only choice, with the process runner): each workload is stopped with its grace period, so every rental ends."`
	ContainerMemory   int64         `name:"container-memory-mib" placeholder:"MIB" help:"Memory limit of each container in MiB, without swap (0: no limit)."`
	ContainerPids     int64         `name:"container-pids" default:"4096" help:"Most processes and threads a container may have, when the instance does not say."`
	PortRange         string        `name:"port-range" default:"40000-40999" placeholder:"FIRST-LAST" help:"Host ports that renters' published container ports are mapped to (docker runner; default 40000-40999); \"\" publishes none."`
	PublicAddress     string        `name:"public-address" placeholder:"HOST" help:"Address renters reach this machine's published ports at (default: the hostname)."`
	MetricsAddr       string        `name:"metrics-addr" placeholder:"HOST:PORT" help:"Serve Prometheus metrics (per-GPU gauges) at http://HOST:PORT/metrics, e.g. 127.0.0.1:9400."`
	QueueAddr         string        `name:"queue-addr" default:"auto" placeholder:"HOST:PORT" help:"Where workloads report their queue length (given to each as $GPUMARKET_QUEUE_URL) for deployments that scale on it. auto: a free port on the Docker bridge's gateway with the docker runner (what containers reach), on 127.0.0.1 with plain processes; \"\" turns it off."`
	LogFormat         string        `default:"text" enum:"json,text" help:"Log format: json or text."`
	Verbose           bool          `short:"v" help:"Log debug messages."`
}

func (c *agentCmd) Help() string {
	return `Runs the host agent on this machine: discovers its GPUs (NVML, else
nvidia-smi, or --fake-gpus), registers the machine with the coordinator under the host
account of --token, long-polls for work, runs it and reports back.

NVML is used when this binary was built with cgo and the driver's
libnvidia-ml is installed; GPU metrics are sent with each report. Spot
winners' power limits and clocks are set with NVML then (clock offsets
need it), else with nvidia-smi; either needs the agent to run as root.

Workloads run as hardened Docker containers when a Docker daemon answers
(--runner docker), else as plain processes (--runner process); the machine
advertises which, and renters can give images, ports, SSH keys and
templates only to docker machines. Container ports that renters publish
get host ports from --port-range, shown to them with --public-address.
GPU workloads are refused while the NVIDIA Container Toolkit has a known
container-escape flaw (CVE-2024-0132, CVE-2025-23266): install 1.17.8 or
later.

With the docker runner, restarting or upgrading the agent leaves the
containers running (--on-exit leave): the next agent adopts them. Keep it
down no longer than the coordinator's lost deadline, or the rentals fail
and their containers are removed when it is back. --on-exit stop ends
every rental when the agent exits.

Examples:
  gpumarket agent --coordinator https://market.example.com --token gmk_...
  gpumarket agent --fake-gpus "2xRTX 4090" --region eu --runner process`
}

func (c *agentCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	if c.HeartbeatInterval < time.Second {
		return usagef("--heartbeat-interval %s is too short; use at least 1s", c.HeartbeatInterval)
	}
	dir := c.StateDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return usagef("cannot find a cache dir (%v); pass --state-dir", err)
		}
		dir = filepath.Join(base, "gpumarket", "agent")
	}
	level := slog.LevelInfo
	if c.Verbose {
		level = slog.LevelDebug
	}
	log := newLogger(c.LogFormat, level, env.Stderr)
	o := agentOptions{
		StateDir: dir, FakeGPUs: c.FakeGPUs, Region: c.Region, DataCenter: c.DataCenter,
		Client: api, Logger: log, HeartbeatInterval: c.HeartbeatInterval,
	}
	pr, err := market.ParsePortRange(c.PortRange)
	if err != nil {
		return usagef("--port-range: %v", err)
	}
	var drun *docker.Runner
	if c.Runner != "process" {
		run, err := c.dockerRunner(ctx, log, pr)
		if err != nil {
			return err
		}
		if run != nil {
			defer run.Close()
			o.Runner, o.RunnerName, o.PortRange = run, "docker", pr
			drun = run
		}
	}
	switch {
	case c.OnExit == "leave" && o.RunnerName != "docker":
		return usagef("--on-exit leave needs the docker runner: plain processes are not isolated from the agent and die with its service; use --on-exit stop or a Docker daemon")
	case c.OnExit == "leave", c.OnExit == "" && o.RunnerName == "docker":
		o.LeaveRunning = true
	}
	if c.MetricsAddr != "" {
		m, err := listenAgentMetrics(c.MetricsAddr)
		if err != nil {
			return err
		}
		o.GPUMetrics = m.gauges
		go m.serve(ctx, log)
		log.Info("serving metrics", "url", "http://"+m.ln.Addr().String()+"/metrics")
	}
	if c.QueueAddr != "" {
		var gw gatewayer
		if drun != nil {
			gw = drun
		}
		q, err := serveQueue(ctx, queueAddr(ctx, c.QueueAddr, gw, log), log) // deployment.go
		if err != nil {
			return err
		}
		o.Queue = q
	}
	a, err := newAgent(ctx, o)
	if err != nil {
		return err
	}
	runner := o.RunnerName
	if runner == "" {
		runner = "process"
	}
	onExit := "stop"
	if o.LeaveRunning {
		onExit = "leave"
	}
	log.Info("agent starting", "coordinator", api.BaseURL(), "state_dir", dir, "runner", runner, "on_exit", onExit)
	return a.Run(ctx)
}

// gatewayer is the docker runner's HostGateway.
type gatewayer interface {
	HostGateway(ctx context.Context) (netip.Addr, error)
}

// queueAddr resolves --queue-addr: "auto" is a free port on the Docker
// bridge's gateway when workloads run as containers (gw set), where they
// reach the host, else on 127.0.0.1; any other value stands as given.
func queueAddr(ctx context.Context, flag string, gw gatewayer, log *slog.Logger) string {
	if flag != "auto" {
		return flag
	}
	if gw == nil {
		return "127.0.0.1:0"
	}
	addr, err := gw.HostGateway(ctx)
	if err != nil {
		log.Warn("containers cannot report queue lengths: no address of this host that they reach; give one with --queue-addr", "err", err)
		return "127.0.0.1:0"
	}
	return netip.AddrPortFrom(addr, 0).String()
}

// dockerRunner connects to the Docker daemon. With --runner auto, a daemon
// that does not answer means the process runner: it returns nil, nil.
func (c *agentCmd) dockerRunner(ctx context.Context, log *slog.Logger, pr market.PortRange) (*docker.Runner, error) {
	if c.ContainerMemory < 0 || c.ContainerPids < 0 {
		return nil, usagef("--container-memory-mib and --container-pids cannot be negative")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	public := c.PublicAddress
	if public == "" {
		public, _ = os.Hostname()
	}
	run, err := docker.New(cctx, docker.Options{
		Host:        c.DockerHost,
		MemoryBytes: c.ContainerMemory << 20,
		PidsLimit:   c.ContainerPids,
		PortRange:   pr,
		PublicHost:  public,
		// Simulated GPUs have no devices to pass through.
		NoGPUDevices: c.FakeGPUs != "",
		Logger:       log,
	})
	if err != nil {
		if c.Runner == "auto" {
			log.Warn("no usable Docker daemon; running workloads as plain processes (--runner process)", "err", err)
			return nil, nil
		}
		return nil, fmt.Errorf("--runner docker: %w", err)
	}
	h := run.Host()
	log.Info("docker runner ready", "api_version", run.APIVersion(), "nvidia_runtime", h.Nvidia, "cdi", h.CDI,
		"storage_driver", run.StorageDriver(), "disk_limits", h.DiskQuota, "port_range", pr.String())
	if !h.DiskQuota {
		log.Warn("this storage driver cannot limit a container's disk; instances' disk limits are not enforced", "storage_driver", run.StorageDriver())
	}
	switch {
	case c.FakeGPUs != "":
	case !h.Nvidia && !h.CDI:
		log.Error("GPU workloads will be refused: this Docker has no nvidia runtime and the host no NVIDIA CDI spec; install the NVIDIA Container Toolkit 1.17.8 or later")
	case h.GPUBlocked != "":
		log.Error("GPU workloads will be refused", "reason", h.GPUBlocked)
	}
	return run, nil
}

type agentOptions struct {
	StateDir           string
	FakeGPUs           string // "" = discover; required when discovery finds none
	Region, DataCenter string
	Client             agent.Coordinator
	Logger             *slog.Logger
	HeartbeatInterval  time.Duration
	PollWait           time.Duration
	// GPUMetrics, when set, records each GPU reading for --metrics-addr.
	GPUMetrics *gpuGauges
	// Runner runs the workloads, and RunnerName is what the machine
	// advertises; nil is the process runner on StateDir.
	Runner     agent.Runner
	RunnerName string
	// PortRange is the host port range advertised with a docker runner.
	PortRange market.PortRange
	// Queue is where workloads report their queue length; nil: nowhere.
	Queue *agent.QueueServer
	// LeaveRunning leaves the workloads running when the agent exits, for
	// the next one to adopt (--on-exit leave).
	LeaveRunning bool
}

// newAgent discovers the hardware and builds an agent with o.Runner, or
// the process runner on StateDir.
func newAgent(ctx context.Context, o agentOptions) (*agent.Agent, error) {
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	fp, err := machineFingerprint(o.StateDir)
	if err != nil {
		return nil, err
	}
	hw := market.Hardware{
		Fingerprint: fp,
		Runner:      o.RunnerName,
		CPUCores:    runtime.NumCPU(),
		RAMMiB:      memTotalMiB(),
		DiskGiB:     diskGiB(o.StateDir),
		Region:      o.Region,
		DataCenter:  o.DataCenter,
	}
	if o.Runner != nil && o.RunnerName == "docker" {
		hw.PortRange = o.PortRange
	}
	hw.Hostname, _ = os.Hostname()
	var metrics agent.Sampler // NVML when it loaded, else the GPU control's own
	found, err := discoverGPUs(ctx, o.FakeGPUs, fp, o.Logger)
	if err != nil {
		return nil, err
	}
	hw.GPUs, hw.DriverVersion, hw.CUDAVersion = found.gpus, found.driver, found.cuda
	lib := found.nvml // nil when discovery did not use NVML
	if lib != nil {
		metrics = lib
	}
	run := o.Runner
	if run == nil {
		if run, err = process.New(filepath.Join(o.StateDir, "instances")); err != nil {
			return nil, fmt.Errorf("start process runner: %w", err)
		}
		hw.Runner = "process"
	}
	// Spot winners' power limits and clocks: simulated on fake GPUs, set
	// with NVML on real ones when discovery used it (it alone can set clock
	// offsets), else with nvidia-smi.
	var ctl agent.GPUControl = fake.NewControl(hw.GPUs)
	switch {
	case lib != nil:
		ctl = lib
	case o.FakeGPUs == "":
		defaults := map[string]int{}
		for _, g := range hw.GPUs {
			defaults[g.UUID] = g.DefaultPowerW
		}
		ctl = nvidiasmi.Control{Exec: nvidiasmi.Exec, DefaultPowerW: defaults}
	}
	run = agent.WithGPUControl(run, ctl)
	// GPU metrics for the coordinator's charts, from whichever GPU
	// adapter can read them.
	sampler, _ := ctl.(agent.Sampler)
	if metrics != nil {
		sampler = metrics
	}
	if o.GPUMetrics != nil {
		sampler = o.GPUMetrics.wrap(sampler)
	}
	return agent.New(agent.Config{
		Hardware:          hw,
		Solver:            challengeSolver(ctx, o.FakeGPUs != "", o.Logger),
		Coordinator:       o.Client,
		Runner:            run,
		Logger:            o.Logger,
		Sampler:           sampler,
		Queue:             o.Queue,
		LeaveRunning:      o.LeaveRunning,
		HeartbeatInterval: o.HeartbeatInterval,
		PollWait:          o.PollWait,
	}), nil
}

// discovered is what GPU discovery found.
type discovered struct {
	gpus         []market.GPU
	driver, cuda string
	nvml         *nvml.Lib // the library, when discovery used NVML
}

// discoverGPUs finds the machine's GPUs: made up from fakeSpec (seeded by
// fp) when given, else with NVML, else with nvidia-smi.
func discoverGPUs(ctx context.Context, fakeSpec, fp string, log *slog.Logger) (discovered, error) {
	if fakeSpec != "" {
		gs, err := fake.Parse(fakeSpec, fp)
		if err != nil {
			return discovered{}, usagef("--fake-gpus: %s", market.Message(err))
		}
		return discovered{gpus: gs, driver: "fake", cuda: "fake"}, nil
	}
	if l, nerr := nvml.Open(); nerr == nil {
		// NVML first: no process per reading, and it reads what
		// nvidia-smi reads, from the same library.
		info, err := l.Discover(ctx)
		if err != nil {
			l.Close()
			return discovered{}, fmt.Errorf("discover GPUs with NVML: %w", err)
		}
		if log != nil {
			log.Info("GPUs discovered with NVML", "gpus", len(info.GPUs), "driver", info.DriverVersion, "mig", info.MIG)
		}
		return discovered{gpus: info.GPUs, driver: info.DriverVersion, cuda: info.CUDAVersion, nvml: l}, nil
	} else if log != nil {
		log.Debug("NVML not available; using nvidia-smi", "err", nerr)
	}
	info, err := nvidiasmi.Discover(ctx, nvidiasmi.Exec)
	if errors.Is(err, nvidiasmi.ErrNotFound) {
		return discovered{}, usagef("no NVIDIA GPU found (no NVML, and nvidia-smi is not installed); pass --fake-gpus \"4xRTX 4090\" to simulate GPUs")
	}
	if err != nil {
		return discovered{}, fmt.Errorf("discover GPUs: %w", err)
	}
	return discovered{gpus: info.GPUs, driver: info.DriverVersion, cuda: info.CUDAVersion}, nil
}

// challengeSolver is the solver of verification challenges: on the GPUs
// themselves through CUDA when the driver loads and the kernels pass their
// self-test, else on the CPU (fake GPUs, and real ones the CUDA solver
// cannot take).
func challengeSolver(ctx context.Context, fakeGPUs bool, log *slog.Logger) verify.Solver {
	var solver verify.Solver = verify.CPUSolver{}
	if fakeGPUs {
		return solver
	}
	cs, err := cuda.Open(ctx, solver)
	if err != nil {
		logWarn(log, "verification challenges will run on the CPU, which is too slow for a real GPU's challenge: the CUDA driver cannot be used", "err", err)
		return solver
	}
	if log != nil {
		v, _ := cuda.DriverVersion()
		log.Info("verification challenges run on the GPUs through CUDA", "gpus", cs.GPUs(), "cuda_driver", v)
	}
	for uuid, err := range cs.Failed() {
		logWarn(log, "this GPU's verification challenges will run on the CPU", "gpu", uuid, "err", err)
	}
	return cs
}

func logWarn(l *slog.Logger, msg string, args ...any) {
	if l != nil {
		l.Warn(msg, args...)
	}
}

// machineFingerprint returns the machine's stable ID, creating it on first
// use, so a restarted agent registers the same machine.
func machineFingerprint(dir string) (string, error) {
	path := filepath.Join(dir, "machine-id")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read machine ID: %w", err)
	}
	id := market.RandomToken(16)
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write machine ID: %w", err)
	}
	return id, nil
}

// memTotalMiB reads MemTotal from /proc/meminfo; 0 where there is none.
func memTotalMiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb / 1024
		}
	}
	return 0
}

// diskGiB is the space available under dir.
func diskGiB(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize >> 30
}
