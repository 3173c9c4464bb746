package cli

import (
	"context"
	"encoding/json"
	"fmt"
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
}

type instanceCreateCmd struct {
	Machine string        `arg:"" optional:"" help:"Machine ID (m-...), from 'gpumarket offer search'; leave out with --auto."`
	Auto    string        `name:"auto" placeholder:"QUERY" help:"Pick the best-ranked offer matching this offer query instead of naming a machine, e.g. 'gpu_name=RTX_4090 price_per_gpu_hour<0.8'."`
	Region  string        `name:"region" help:"Your region, to rank nearby offers higher with --auto."`
	GPUs    int           `name:"gpus" required:"" placeholder:"N" help:"Number of GPUs to rent."`
	Env     []string      `name:"env" sep:"none" placeholder:"KEY=VALUE" help:"Environment variable for the command; repeat for more."`
	Grace   time.Duration `name:"grace" help:"Time between SIGTERM and SIGKILL when the instance stops, such as 10s (default: the coordinator's)."`
	Image   string        `name:"image" placeholder:"IMAGE" help:"Container image (machines with the docker runner)."`
	Command []string      `arg:"" optional:"" passthrough:"" help:"Command and arguments, after --."`
}

func (c *instanceCreateCmd) Help() string {
	return `Examples:
  gpumarket instance create m-0a1b2c3d4e5f --gpus 1 -- nvidia-smi
  gpumarket instance create m-0a1b2c3d4e5f --gpus 2 --env EPOCHS=3 --grace 30s -- python train.py --lr 3e-4
  gpumarket instance create m-0a1b2c3d4e5f --gpus 1 --image pytorch/pytorch -- python -c 'import torch'
  gpumarket instance create --auto 'gpu_name=RTX_4090 price_per_gpu_hour<0.8' --gpus 1 -- nvidia-smi`
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
	inst, err := api.CreateInstance(ctx, req)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(inst)
	}
	fmt.Fprintf(env.Stdout, "Created instance %s on %s (GPUs %s) at %s per hour; %s held in escrow.\n",
		inst.ID, inst.Machine, ints(inst.GPUs), money(inst.PricePerHour, ""), money(inst.Escrow, ""))
	fmt.Fprintf(env.Stdout, "Follow its output with: gpumarket instance logs %s -f\n", inst.ID)
	return nil
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
	t.row("Image:", dash(i.Image))
	t.row("Command:", dash(strings.Join(i.Command, " ")))
	t.row("Env:", envString(i.Env))
	t.row("Price:", money(i.PricePerHour, "")+" per hour")
	t.row("Charged:", fmt.Sprintf("%s for %d minutes", money(i.Charged, ""), i.BilledMins))
	t.row("Escrow:", money(i.Escrow, ""))
	t.row("Created:", env.time(i.CreatedAt))
	t.row("Started:", env.timePtr(i.StartedAt))
	t.row("Ended:", env.timePtr(i.EndedAt))
	return t.flush()
}

type instanceLogsCmd struct {
	ID     string `arg:"" help:"Instance ID (i-...)."`
	Follow bool   `short:"f" help:"Keep printing new output until the instance ends."`
}

func (c *instanceLogsCmd) Help() string {
	return `Standard output and standard error of the instance go to the same streams here.
With -o json, chunks are printed as a JSON list, or with -f as one JSON object per line.

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

func writeChunks(env *Env, ch []market.LogChunk) error {
	for _, x := range ch {
		w := env.Stdout
		if x.Stream == "stderr" {
			w = env.Stderr
		}
		if _, err := fmt.Fprint(w, x.Data); err != nil {
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
