package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

type instanceCmd struct {
	Create instanceCreateCmd `cmd:"" help:"Rent GPUs of a machine and run a command on them."`
	List   instanceListCmd   `cmd:"" help:"List your instances."`
	Show   instanceShowCmd   `cmd:"" help:"Show an instance."`
	Logs   instanceLogsCmd   `cmd:"" help:"Print an instance's output."`
	Stop   instanceStopCmd   `cmd:"" help:"Stop an instance; billing ends now."`

	Templates instanceTemplatesCmd `cmd:"" help:"List the instance templates (--template of instance create)."`
}

type instanceCreateCmd struct {
	Machine string        `arg:"" optional:"" help:"Machine ID (m-...), from 'gpumarket offer search'; leave out with --auto."`
	Auto    string        `name:"auto" placeholder:"QUERY" help:"Pick the best-ranked offer matching this offer query instead of naming a machine, e.g. 'gpu_name=RTX_4090 price_per_gpu_hour<0.8'."`
	Region  string        `name:"region" help:"Your region, to rank nearby offers higher with --auto."`
	GPUs    int           `name:"gpus" required:"" placeholder:"N" help:"Number of GPUs to rent."`
	Env     []string      `name:"env" sep:"none" placeholder:"KEY=VALUE" help:"Environment variable for the command; repeat for more."`
	Grace   time.Duration `name:"grace" help:"Time between SIGTERM and SIGKILL when the instance stops, such as 10s (default: the coordinator's)."`
	Image   string        `name:"image" placeholder:"IMAGE" help:"Container image (machines with the docker runner)."`

	Template string   `name:"template" placeholder:"NAME" help:"Start from a template that sets image, ports and command: pytorch, jupyter or ssh (see 'gpumarket instance templates'); --image, --port and a command replace its own."`
	Ports    []string `name:"port" placeholder:"PORT/PROTO" help:"Container port to publish, such as 8888/tcp; repeat for more. 'instance show' prints the host port it got."`
	SSHKeys  []string `name:"ssh-key" sep:"none" placeholder:"FILE" help:"SSH public key file (such as ~/.ssh/id_ed25519.pub), or the key itself; repeat for more. Put read-only at /etc/gpumarket/authorized_keys in the container."`
	CPUs     float64  `name:"cpus" placeholder:"N" help:"CPU cores the instance may use, such as 2.5 (default: its GPU share of the machine's cores)."`
	Memory   string   `name:"memory" placeholder:"SIZE" help:"Memory limit, such as 16GiB or 512MiB (default: its GPU share of the machine's memory)."`
	Shm      string   `name:"shm" placeholder:"SIZE" help:"Size of /dev/shm, such as 8GiB (default: a quarter of the memory limit)."`
	Pids     int64    `name:"pids" placeholder:"N" help:"Most processes and threads (default 4096)."`
	Disk     string   `name:"disk" placeholder:"SIZE" help:"Disk limit of the container's writable layer, such as 100GiB (default: its GPU share of the machine's disk; enforced only where the host's storage driver can)."`

	PowerLimit int   `name:"power-limit" placeholder:"W" help:"Power limit applied to each GPU, in W, within the machine's range (default: the card's own)."`
	CoreLock   []int `name:"core-lock" sep:"," placeholder:"MHz[,MHz...]" help:"Lock the core clock, within the machine's allowed range: one value for all GPUs, or one per GPU separated by commas."`
	MemLock    []int `name:"mem-lock" sep:"," placeholder:"MHz[,MHz...]" help:"Lock the memory clock: one value, or one per GPU."`
	CoreOffset []int `name:"core-offset" sep:"," placeholder:"MHz[,MHz...]" help:"Core clock offset: one value, or one per GPU."`
	MemOffset  []int `name:"mem-offset" sep:"," placeholder:"MHz[,MHz...]" help:"Memory clock offset: one value, or one per GPU."`

	Command []string `arg:"" optional:"" passthrough:"" help:"Command and arguments, after --."`
}

func (c *instanceCreateCmd) Help() string {
	return `Examples:
  gpumarket instance create m-0a1b2c3d4e5f --gpus 1 -- nvidia-smi
  gpumarket instance create m-0a1b2c3d4e5f --gpus 2 --env EPOCHS=3 --grace 30s -- python train.py --lr 3e-4
  gpumarket instance create m-0a1b2c3d4e5f --gpus 1 --image pytorch/pytorch -- python -c 'import torch'
  gpumarket instance create --auto 'gpu_name=RTX_4090 price_per_gpu_hour<0.8' --gpus 1 -- nvidia-smi
  gpumarket instance create m-0a1b2c3d4e5f --gpus 1 --template pytorch --ssh-key ~/.ssh/id_ed25519.pub
  gpumarket instance create m-0a1b2c3d4e5f --gpus 2 --template jupyter --memory 64GiB --shm 16GiB
  gpumarket instance create m-0a1b2c3d4e5f --gpus 1 --image myorg/server:1 --port 8080/tcp --cpus 8 --disk 200GiB
  gpumarket instance create m-0a1b2c3d4e5f --gpus 2 --power-limit 300 --core-lock 1800,1950 -- python train.py

Images, ports, SSH keys, templates and limits need a machine with the docker
runner (RUNNER in 'gpumarket offer search'). Limits left out are the
instance's GPU share of the machine. A power limit and clocks are set on
the instance's GPUs before it starts and reset after it ends; values outside
the cards' or the host's ranges are refused, with the range.`
}

func (c *instanceCreateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	if c.GPUs < 1 {
		return usagef("--gpus %d: rent at least 1 GPU", c.GPUs)
	}
	if c.Grace < 0 {
		return usagef("--grace %v is negative", c.Grace)
	}
	cmd := c.Command
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	machine := c.Machine
	if c.Auto != "" && machine != "" && !strings.HasPrefix(machine, market.MachinePrefix) {
		// With --auto there is no machine argument: the first word was the
		// command's.
		cmd, machine = append([]string{machine}, cmd...), ""
	}
	if c.Auto == "" && machine == "" {
		return usagef("name the machine to rent (from 'gpumarket offer search'), or pick one with --auto 'QUERY'")
	}
	req := market.CreateInstanceRequest{Machine: market.MachineID(machine), Auto: c.Auto, Region: c.Region, GPUs: c.GPUs, Image: c.Image,
		Command: cmd, GraceSeconds: int((c.Grace + time.Second - 1) / time.Second)}
	if req.Command == nil {
		req.Command = []string{}
	}
	if err := c.container(&req); err != nil {
		return err
	}
	if c.PowerLimit < 0 {
		return usagef("--power-limit %d W is negative", c.PowerLimit)
	}
	clocks, err := bidClocks(c.CoreLock, c.MemLock, c.CoreOffset, c.MemOffset)
	if err != nil {
		return err
	}
	req.PowerLimitW = c.PowerLimit
	if len(clocks) == 1 {
		req.Clocks = clocks[0]
	} else {
		req.GPUClocks = clocks
	}
	for _, kv := range c.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usagef("--env %q: write it as KEY=VALUE", kv)
		}
		if req.Env == nil {
			req.Env = map[string]string{}
		}
		req.Env[k] = v
	}
	// One key per invocation: the client's retries and failover reuse it,
	// so a create that reached a coordinator is not made twice.
	inst, err := api.CreateInstanceOnce(ctx, req, "cli-"+market.RandomToken(16))
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(inst)
	}
	fmt.Fprintf(env.Stdout, "Created instance %s on %s (GPUs %s) at %s per hour; %s held in escrow.\n",
		inst.ID, inst.Machine, ints(inst.GPUs), money(inst.PricePerHour, ""), money(inst.Escrow, ""))
	fmt.Fprintf(env.Stdout, "Follow its output with: gpumarket instance logs %s -f\n", inst.ID)
	if len(inst.Ports) > 0 {
		fmt.Fprintf(env.Stdout, "Its ports (%s) and SSH command show in: gpumarket instance show %s\n", strings.Join(inst.Ports, ", "), inst.ID)
	}
	return nil
}

// container fills the container fields of req from the flags, checking
// them here so that a typo is caught before anything is rented.
func (c *instanceCreateCmd) container(req *market.CreateInstanceRequest) error {
	if c.Template != "" {
		if _, err := market.LookupTemplate(c.Template); err != nil {
			return usagef("--template: %v", err)
		}
		req.Template = c.Template
	}
	ports, err := market.CheckPorts(c.Ports)
	if err != nil {
		return usagef("--port: %v", err)
	}
	if len(ports) > 0 {
		req.Ports = ports
	}
	for _, k := range c.SSHKeys {
		key, err := readSSHKey(k)
		if err != nil {
			return err
		}
		req.SSHKeys = append(req.SSHKeys, key)
	}
	if c.CPUs < 0 || c.Pids < 0 {
		return usagef("--cpus and --pids cannot be negative")
	}
	req.Limits.CPUMillis = int64(c.CPUs*1000 + 0.5)
	req.Limits.Pids = c.Pids
	for _, f := range []struct {
		flag, v string
		unit    int64
		to      *int64
	}{{"--memory", c.Memory, 1 << 20, &req.Limits.MemoryMiB}, {"--shm", c.Shm, 1 << 20, &req.Limits.ShmMiB}, {"--disk", c.Disk, 1 << 30, &req.Limits.DiskGiB}} {
		if f.v == "" {
			continue
		}
		b, err := parseSize(f.v)
		if err != nil {
			return usagef("%s %q: %v", f.flag, f.v, err)
		}
		if *f.to = b / f.unit; *f.to == 0 {
			return usagef("%s %s is less than 1 %s", f.flag, f.v, map[int64]string{1 << 20: "MiB", 1 << 30: "GiB"}[f.unit])
		}
	}
	return nil
}

// readSSHKey reads a public key from a file, or takes arg as the key
// itself when it looks like one.
func readSSHKey(arg string) (string, error) {
	key := arg
	if !strings.HasPrefix(arg, "ssh-") && !strings.HasPrefix(arg, "ecdsa-") && !strings.HasPrefix(arg, "sk-") {
		path := arg
		if rest, ok := strings.CutPrefix(path, "~/"); ok {
			if home, err := os.UserHomeDir(); err == nil {
				path = filepath.Join(home, rest)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", usagef("--ssh-key %s: %v; give a public key file such as ~/.ssh/id_ed25519.pub", arg, err)
		}
		key = strings.TrimSpace(string(b))
	}
	k, err := market.ParseSSHKey(key)
	if err != nil {
		return "", usagef("--ssh-key %s: %v", arg, err)
	}
	return k, nil
}

// parseSize reads "16GiB", "512MiB", "1.5G", "2TiB" or a plain number of
// bytes, in binary units.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}[unit]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || v < 0 || v*mult > 1<<62 {
		return 0, fmt.Errorf("write a size such as 512MiB, 16GiB or 2TiB")
	}
	return int64(v * mult), nil
}

type instanceListCmd struct{}

func (c *instanceListCmd) Help() string {
	return `Examples:
  gpumarket instance list
  gpumarket instance list -o json`
}

func (c *instanceListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	list, err := api.Instances(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(list)
	}
	t := newTable(env.Stdout, "ID", "MACHINE", "GPUS", "STATE", "PRICE/H", "CHARGED", "CREATED", "COMMAND")
	for _, i := range list {
		t.row(string(i.ID), string(i.Machine), ints(i.GPUs), string(i.State), money(i.PricePerHour, ""),
			money(i.Charged, ""), env.time(i.CreatedAt), commandString(i))
	}
	return t.flush()
}

func commandString(i market.Instance) string {
	s := strings.Join(i.Command, " ")
	if i.Image != "" {
		s = strings.TrimSpace(i.Image + " " + s)
	}
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return dash(s)
}

type instanceShowCmd struct {
	ID string `arg:"" help:"Instance ID (i-...)."`
}

func (c *instanceShowCmd) Help() string {
	return `Example:
  gpumarket instance show i-0a1b2c3d4e5f`
}

func (c *instanceShowCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	i, err := api.Instance(ctx, market.InstanceID(c.ID))
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(i)
	}
	t := newTable(env.Stdout)
	t.row("ID:", string(i.ID))
	t.row("State:", string(i.State))
	if i.Reason != "" {
		t.row("Reason:", i.Reason)
	}
	if i.ExitCode != nil {
		t.row("Exit code:", fmt.Sprint(*i.ExitCode))
	}
	t.row("Machine:", string(i.Machine))
	t.row("GPUs:", ints(i.GPUs))
	t.row("Kind:", string(i.Kind))
	if i.Template != "" {
		t.row("Template:", i.Template)
	}
	t.row("Image:", dash(i.Image))
	t.row("Command:", dash(strings.Join(i.Command, " ")))
	for n, line := range i.PortLines() {
		label := ""
		if n == 0 {
			label = "Ports:"
		}
		t.row(label, line)
	}
	if len(i.SSHKeys) > 0 {
		t.row("SSH keys:", fmt.Sprintf("%d (read-only at %s)", len(i.SSHKeys), market.SSHKeysPath))
	}
	if ssh := i.SSHCommand(); ssh != "" {
		t.row("SSH:", ssh)
	}
	if i.Limits != (market.Limits{}) {
		t.row("Limits:", limitsString(i.Limits))
	}
	t.row("Env:", envString(i.Env))
	t.row("Price:", money(i.PricePerHour, "")+" per hour")
	t.row("Charged:", fmt.Sprintf("%s for %d minutes", money(i.Charged, ""), i.BilledMins))
	t.row("Escrow:", money(i.Escrow, ""))
	t.row("Created:", env.time(i.CreatedAt))
	t.row("Started:", env.timePtr(i.StartedAt))
	t.row("Ended:", env.timePtr(i.EndedAt))
	if i.State == market.InstancePending || i.State == market.InstanceStarting {
		// While it starts, the agent's last word (image pull progress).
		if line := lastSystemLine(ctx, api, i.ID); line != "" {
			t.row("Progress:", line)
		}
	}
	if i.Active() {
		// The latest GPU readings; an older coordinator without metrics
		// just shows none.
		if m, err := api.InstanceMetrics(ctx, i.ID, time.Minute); err == nil {
			for _, g := range m.Latest {
				t.row(fmt.Sprintf("GPU %d:", g.Index), gpuReading(g)+", at "+env.time(g.At))
			}
		}
	}
	return t.flush()
}

// gpuReading is one GPU sample in a line.
func gpuReading(g market.GPUSample) string {
	return fmt.Sprintf("%.0f%% busy, %.1f GiB used, %.0f W, %.0f °C", g.UtilPct, float64(g.MemUsedMiB)/1024, g.PowerW, g.TempC)
}

// lastSystemLine is the last line the agent wrote about an instance
// (stream "system"), or "" when there is none or it cannot be read. It is
// asked only while the instance starts, when its log is short.
func lastSystemLine(ctx context.Context, api *apiclient.Client, id market.InstanceID) string {
	var last string
	after := int64(0)
	for range 20 { // at most 20 pages
		ch, err := api.Logs(ctx, id, after, logPage, 0)
		if err != nil || len(ch) == 0 {
			break
		}
		after = ch[len(ch)-1].Seq
		for _, c := range ch {
			if c.Stream == "system" {
				lines := strings.Split(strings.TrimRight(c.Data, "\n"), "\n")
				last = lines[len(lines)-1]
			}
		}
	}
	return last
}

// limitsString is an instance's resource limits in one line.
func limitsString(l market.Limits) string {
	var parts []string
	if l.CPUMillis > 0 {
		parts = append(parts, strconv.FormatFloat(float64(l.CPUMillis)/1000, 'f', -1, 64)+" CPUs")
	}
	if l.MemoryMiB > 0 {
		parts = append(parts, sizeMiB(l.MemoryMiB)+" memory")
	}
	if l.ShmMiB > 0 {
		parts = append(parts, sizeMiB(l.ShmMiB)+" /dev/shm")
	}
	if l.Pids > 0 {
		parts = append(parts, fmt.Sprintf("%d processes", l.Pids))
	}
	if l.DiskGiB > 0 {
		parts = append(parts, fmt.Sprintf("%d GiB disk", l.DiskGiB))
	}
	return strings.Join(parts, ", ")
}

func sizeMiB(m int64) string {
	if m >= 1024 && m%1024 == 0 {
		return fmt.Sprintf("%d GiB", m/1024)
	}
	return fmt.Sprintf("%d MiB", m)
}

type instanceLogsCmd struct {
	ID     string `arg:"" help:"Instance ID (i-...)."`
	Follow bool   `short:"f" help:"Keep printing new output until the instance ends."`
}

func (c *instanceLogsCmd) Help() string {
	return `Standard output and standard error of the instance go to the same streams here.
The agent's own lines (image pull progress, why a start failed) go to standard
error, marked [gpumarket]. With -o json, chunks are printed as a JSON list, or
with -f as one JSON object per line (stream stdout, stderr or system).

Examples:
  gpumarket instance logs i-0a1b2c3d4e5f
  gpumarket instance logs i-0a1b2c3d4e5f -f`
}

// logPage is how many chunks one request asks for.
const logPage = 500

func (c *instanceLogsCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	id := market.InstanceID(c.ID)
	if !c.Follow {
		var all []market.LogChunk
		after := int64(0)
		err := drainLogs(ctx, api, id, &after, func(ch []market.LogChunk) error {
			if env.JSON() {
				all = append(all, ch...)
				return nil
			}
			return writeChunks(env, ch)
		})
		if err != nil {
			return err
		}
		if env.JSON() {
			if all == nil {
				all = []market.LogChunk{}
			}
			return env.printJSON(all)
		}
		return nil
	}

	err := c.follow(ctx, env, api, id)
	if isCanceled(ctx, err) {
		return nil // Ctrl-C ends following; it is not a failure
	}
	return err
}

// follow long-polls for chunks, and checks the instance's state whenever a
// poll comes back empty; once it is terminal it prints what is left and ends.
func (c *instanceLogsCmd) follow(ctx context.Context, env *Env, api *apiclient.Client, id market.InstanceID) error {
	print := func(ch []market.LogChunk) error {
		if env.JSON() {
			for _, x := range ch {
				b, err := json.Marshal(x)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "%s\n", b)
			}
			return nil
		}
		return writeChunks(env, ch)
	}
	after := int64(0)
	for {
		ch, err := api.Logs(ctx, id, after, logPage, env.followWait)
		if err != nil {
			return err
		}
		if len(ch) > 0 {
			after = ch[len(ch)-1].Seq
			if err := print(ch); err != nil {
				return err
			}
			continue
		}
		inst, err := api.Instance(ctx, id)
		if err != nil {
			return err
		}
		if !inst.State.Terminal() {
			continue
		}
		// Logs are reported before or with the final state, so this drain
		// sees the last of them.
		if err := drainLogs(ctx, api, id, &after, print); err != nil {
			return err
		}
		if !env.JSON() {
			msg := fmt.Sprintf("instance %s is %s", inst.ID, inst.State)
			if inst.ExitCode != nil {
				msg += fmt.Sprintf(" (exit code %d)", *inst.ExitCode)
			}
			if inst.Reason != "" {
				msg += ": " + inst.Reason
			}
			fmt.Fprintln(env.Stderr, msg)
		}
		return nil
	}
}

// drainLogs fetches pages of chunks after *after until none are left.
func drainLogs(ctx context.Context, api *apiclient.Client, id market.InstanceID, after *int64, print func([]market.LogChunk) error) error {
	for {
		ch, err := api.Logs(ctx, id, *after, logPage, 0)
		if err != nil {
			return err
		}
		if len(ch) == 0 {
			return nil
		}
		*after = ch[len(ch)-1].Seq
		if err := print(ch); err != nil {
			return err
		}
	}
}

// writeChunks prints output chunks: the workload's stdout and stderr to
// ours, and the agent's own lines (image pull progress, why a start
// failed; stream "system") to stderr, marked, so they never mix with the
// workload's output.
func writeChunks(env *Env, ch []market.LogChunk) error {
	for _, x := range ch {
		w, data := env.Stdout, x.Data
		switch x.Stream {
		case "stderr":
			w = env.Stderr
		case "system":
			w = env.Stderr
			data = "[gpumarket] " + strings.ReplaceAll(strings.TrimSuffix(data, "\n"), "\n", "\n[gpumarket] ") + "\n"
		}
		if _, err := fmt.Fprint(w, data); err != nil {
			return err
		}
	}
	return nil
}

type instanceStopCmd struct {
	ID string `arg:"" help:"Instance ID (i-...)."`
}

func (c *instanceStopCmd) Help() string {
	return `Example:
  gpumarket instance stop i-0a1b2c3d4e5f`
}

func (c *instanceStopCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	i, err := api.StopInstance(ctx, market.InstanceID(c.ID))
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(i)
	}
	fmt.Fprintf(env.Stdout, "Instance %s is %s.\n", i.ID, i.State)
	return nil
}
