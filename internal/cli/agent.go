package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/gpu/nvidiasmi"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/docker"
	"github.com/gpumarket/gpumarket/internal/runner/process"
)

// Guards: the adapters wired here satisfy what the agent declares.
var (
	_ agent.Coordinator = (*apiclient.Client)(nil)
	_ agent.Runner      = (*process.Runner)(nil)
	_ agent.Runner      = (*docker.Runner)(nil)
)

type agentCmd struct {
	FakeGPUs          string        `name:"fake-gpus" placeholder:"SPEC" help:"Simulate GPUs instead of discovering them, e.g. \"4xRTX 4090\" or \"2xH100 80GB,1xRTX 3090\"."`
	StateDir          string        `type:"path" placeholder:"DIR" help:"Where the agent keeps its machine ID and workload state (default: the user cache dir)."`
	Region            string        `help:"Region this machine is in (for example eu, us); shown to renters."`
	DataCenter        string        `name:"datacenter" help:"Data center name; shown to renters."`
	HeartbeatInterval time.Duration `default:"10s" help:"Longest time between reports to the coordinator."`
	Runner            string        `default:"auto" enum:"auto,docker,process" help:"How workloads run: docker (containers), process (plain host processes, for development), or auto: docker when a Docker daemon answers, else process."`
	DockerHost        string        `placeholder:"URL" help:"Docker daemon address (default: DOCKER_HOST, else the local socket)."`
	ContainerMemory   int64         `name:"container-memory-mib" placeholder:"MIB" help:"Memory limit of each container in MiB, without swap (0: no limit)."`
	ContainerPids     int64         `name:"container-pids" default:"4096" help:"Most processes and threads a container may have."`
	LogFormat         string        `default:"text" enum:"json,text" help:"Log format: json or text."`
	Verbose           bool          `short:"v" help:"Log debug messages."`
}

func (c *agentCmd) Help() string {
	return `Runs the host agent on this machine: discovers its GPUs (nvidia-smi, or
--fake-gpus), registers the machine with the coordinator under the host
account of --token, long-polls for work, runs it and reports back.

Workloads run as hardened Docker containers when a Docker daemon answers
(--runner docker), else as plain processes (--runner process); the machine
advertises which, and renters can give images only to docker machines.

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
	if c.Runner != "process" {
		run, err := c.dockerRunner(ctx, log)
		if err != nil {
			return err
		}
		if run != nil {
			defer run.Close()
			o.Runner, o.RunnerName = run, "docker"
		}
	}
	a, err := newAgent(ctx, o)
	if err != nil {
		return err
	}
	runner := o.RunnerName
	if runner == "" {
		runner = "process"
	}
	log.Info("agent starting", "coordinator", api.BaseURL(), "state_dir", dir, "runner", runner)
	return a.Run(ctx)
}

// dockerRunner connects to the Docker daemon. With --runner auto, a daemon
// that does not answer means the process runner: it returns nil, nil.
func (c *agentCmd) dockerRunner(ctx context.Context, log *slog.Logger) (*docker.Runner, error) {
	if c.ContainerMemory < 0 || c.ContainerPids < 0 {
		return nil, usagef("--container-memory-mib and --container-pids cannot be negative")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	run, err := docker.New(cctx, docker.Options{
		Host:        c.DockerHost,
		MemoryBytes: c.ContainerMemory << 20,
		PidsLimit:   c.ContainerPids,
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
	log.Info("docker runner ready", "api_version", run.APIVersion(), "nvidia_runtime", run.NvidiaRuntime())
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
	// Runner runs the workloads, and RunnerName is what the machine
	// advertises; nil is the process runner on StateDir.
	Runner     agent.Runner
	RunnerName string
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
	hw.Hostname, _ = os.Hostname()
	if o.FakeGPUs != "" {
		if hw.GPUs, err = fake.Parse(o.FakeGPUs, fp); err != nil {
			return nil, usagef("--fake-gpus: %s", market.Message(err))
		}
		hw.DriverVersion, hw.CUDAVersion = "fake", "fake"
	} else {
		info, err := nvidiasmi.Discover(ctx, nvidiasmi.Exec)
		if errors.Is(err, nvidiasmi.ErrNotFound) {
			return nil, usagef("no NVIDIA GPU found (nvidia-smi is not installed); pass --fake-gpus \"4xRTX 4090\" to simulate GPUs")
		}
		if err != nil {
			return nil, fmt.Errorf("discover GPUs: %w", err)
		}
		hw.GPUs, hw.DriverVersion, hw.CUDAVersion = info.GPUs, info.DriverVersion, info.CUDAVersion
	}
	run := o.Runner
	if run == nil {
		if run, err = process.New(filepath.Join(o.StateDir, "instances")); err != nil {
			return nil, fmt.Errorf("start process runner: %w", err)
		}
		hw.Runner = "process"
	}
	// Spot winners' power limits and clocks: simulated on fake GPUs, set
	// with nvidia-smi on real ones.
	var ctl agent.GPUControl = fake.NewControl(hw.GPUs)
	if o.FakeGPUs == "" {
		defaults := map[string]int{}
		for _, g := range hw.GPUs {
			defaults[g.UUID] = g.DefaultPowerW
		}
		ctl = nvidiasmi.Control{Exec: nvidiasmi.Exec, DefaultPowerW: defaults}
	}
	run = agent.WithGPUControl(run, ctl)
	return agent.New(agent.Config{
		Hardware:          hw,
		Coordinator:       o.Client,
		Runner:            run,
		Logger:            o.Logger,
		HeartbeatInterval: o.HeartbeatInterval,
		PollWait:          o.PollWait,
	}), nil
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
