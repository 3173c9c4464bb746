package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

type adminPoolCmd struct {
	Create   adminPoolCreateCmd   `cmd:"" help:"Create a capacity pool with a share of the pooled machines' GPUs, optionally paying its hosts a project token."`
	Set      adminPoolSetCmd      `cmd:"" help:"Change a pool's share, description, openness to hosts or reward."`
	List     adminPoolListCmd     `cmd:"" help:"List pools with their quota and use."`
	Show     adminPoolShowCmd     `cmd:"" help:"Show one pool's quota and use."`
	Assign   adminPoolAssignCmd   `cmd:"" help:"Assign machines to a pool."`
	Unassign adminPoolUnassignCmd `cmd:"" help:"Take machines out of pools."`
	Delete   adminPoolDeleteCmd   `cmd:"" help:"Delete a pool no machine is assigned to."`
}

// parseShare reads "45%", "45" or "12.5%" as basis points.
func parseShare(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "%")
	whole, frac, _ := strings.Cut(t, ".")
	if len(frac) > 2 {
		return 0, fmt.Errorf("share %q has more than two decimals", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w < 0 || w > 100 {
		return 0, fmt.Errorf("share %q is not a percentage between 0%% and 100%%, like 45%%", s)
	}
	f := int64(0)
	if frac != "" {
		if f, err = strconv.ParseInt((frac + "0")[:2], 10, 64); err != nil {
			return 0, fmt.Errorf("share %q is not a percentage like 12.5%%", s)
		}
	}
	bp := w*100 + f
	if bp > 10000 {
		return 0, fmt.Errorf("share %q is above 100%%", s)
	}
	return bp, nil
}

// poolRewardFlags set the reward a pool pays its hosts (DePIN rewards).
type poolRewardFlags struct {
	RewardAsset      string `name:"reward-asset" placeholder:"ASSET" help:"Project asset the pool pays its hosts, such as DPN (gpumarket admin asset create)."`
	RewardPerGPUHour string `name:"reward-per-gpu-hour" placeholder:"TOKENS" help:"Reward per GPU-hour rented on the pool's machines, in the reward asset (up to 6 decimals)."`
	RewardFrom       string `name:"reward-from" placeholder:"EMAIL" help:"The project's account (email or ID) whose available balance in the asset pays the rewards."`
}

// reward returns the reward the flags set, nil when none is given, and
// an error when only some are.
func (f poolRewardFlags) reward() (*market.PoolReward, error) {
	if f.RewardAsset == "" && f.RewardPerGPUHour == "" && f.RewardFrom == "" {
		return nil, nil
	}
	if f.RewardAsset == "" || f.RewardPerGPUHour == "" || f.RewardFrom == "" {
		return nil, usagef("a reward needs --reward-asset, --reward-per-gpu-hour and --reward-from together")
	}
	rate, err := market.ParseMoney(f.RewardPerGPUHour)
	if err != nil {
		return nil, usagef("--reward-per-gpu-hour: %v", err)
	}
	return &market.PoolReward{Asset: market.Asset(strings.ToUpper(f.RewardAsset)), PerGPUHour: rate, From: market.AccountID(f.RewardFrom)}, nil
}

const poolHelp = `Pools split the GPUs of the machines assigned to pools (any pool) by share;
the shares add up to at most 100%. Deployments name a pool with --pool; a pool
may borrow idle GPUs beyond its quota and gives them back by preemption (with
the instance's notice) when another pool needs its quota.

Hosts put their own machines in an open pool (--open) with 'gpumarket machine
set MACHINE --pool NAME': opening a pool is the operator's approval of every
host. Machines of closed pools are assigned by an admin (admin pool assign).

A reward (DePIN rewards) pays the hosts of the pool's machines in a project
asset: every minute billed of an instance on a machine that is in the pool
earns its host the rate per GPU-hour / 60 for each GPU rented (spread so 60
minutes add up to the rate exactly), paid from the funding account's available
balance in that asset, once per minute. When the funding account cannot pay,
rewards stop (those minutes are not owed), an event tells the funding account,
and 'admin pool list' shows it; they resume once it is funded again.

Examples:
  gpumarket admin pool create leasing --share 50%
  gpumarket admin pool create depin --share 45% --open --description "DePIN projects" \
      --reward-asset DPN --reward-per-gpu-hour 2 --reward-from project@example.com
  gpumarket admin pool create incubation --share 5%
  gpumarket admin pool set depin --share 40%
  gpumarket admin pool set depin --reward-per-gpu-hour 2.5 --reward-asset DPN --reward-from project@example.com
  gpumarket admin pool set depin --no-reward --closed`

type adminPoolCreateCmd struct {
	Name        string `arg:"" help:"Pool name, such as leasing, depin or incubation."`
	Share       string `name:"share" required:"" placeholder:"PERCENT" help:"The pool's quota: its share of every GPU on online pooled machines, such as 45%."`
	Description string `name:"description" placeholder:"TEXT" help:"What the pool is for."`
	Open        bool   `name:"open" help:"Let hosts put their own machines in the pool (gpumarket machine set --pool)."`
	poolRewardFlags
}

func (c *adminPoolCreateCmd) Help() string { return poolHelp }

func (c *adminPoolCreateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	bp, err := parseShare(c.Share)
	if err != nil {
		return usagef("--share: %v", err)
	}
	rw, err := c.reward()
	if err != nil {
		return err
	}
	return putPool(ctx, env, api, market.Pool{Name: c.Name, ShareBP: bp, Description: c.Description, Open: c.Open, Reward: rw})
}

type adminPoolSetCmd struct {
	Name        string  `arg:"" help:"Pool name."`
	Share       string  `name:"share" placeholder:"PERCENT" help:"The pool's quota: its share of every GPU on online pooled machines, such as 45%."`
	Description *string `name:"description" placeholder:"TEXT" help:"What the pool is for."`
	Open        bool    `name:"open" xor:"open" help:"Let hosts put their own machines in the pool."`
	Closed      bool    `name:"closed" xor:"open" help:"Only admins assign machines to the pool (machines already in it stay)."`
	NoReward    bool    `name:"no-reward" help:"Stop paying the pool's reward."`
	poolRewardFlags
}

func (c *adminPoolSetCmd) Help() string { return poolHelp }

func (c *adminPoolSetCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	ps, err := api.Pools(ctx)
	if err != nil {
		return err
	}
	var p *market.Pool
	for i := range ps {
		if ps[i].Name == c.Name {
			p = &ps[i].Pool
		}
	}
	if p == nil {
		return fmt.Errorf("pool %q not found; create it with: gpumarket admin pool create %s --share PERCENT", c.Name, c.Name)
	}
	if c.Share != "" {
		if p.ShareBP, err = parseShare(c.Share); err != nil {
			return usagef("--share: %v", err)
		}
	}
	if c.Description != nil {
		p.Description = *c.Description
	}
	p.Open = (p.Open || c.Open) && !c.Closed
	rw, err := c.reward()
	switch {
	case err != nil:
		return err
	case rw != nil && c.NoReward:
		return usagef("--no-reward and a reward contradict each other")
	case rw != nil:
		p.Reward = rw
	case c.NoReward:
		p.Reward = nil
	}
	return putPool(ctx, env, api, *p)
}

func putPool(ctx context.Context, env *Env, api *apiclient.Client, p market.Pool) error {
	p, err := api.PutPool(ctx, p)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(p)
	}
	open := "admins assign machines"
	if p.Open {
		open = "open to hosts"
	}
	fmt.Fprintf(env.Stdout, "Pool %s: %s of the pooled GPUs, %s. Assign machines with: gpumarket admin pool assign %s MACHINE...\n", p.Name, share(p.ShareBP), open, p.Name)
	if p.Reward != nil {
		fmt.Fprintf(env.Stdout, "Reward: %s %s per GPU-hour rented, paid by %s.\n", p.Reward.PerGPUHour, p.Reward.Asset, p.Reward.From)
	}
	return nil
}

func openWord(open bool) string {
	if open {
		return "open"
	}
	return "closed"
}

func share(bp int64) string {
	if bp%100 == 0 {
		return fmt.Sprintf("%d%%", bp/100)
	}
	return fmt.Sprintf("%d.%02d%%", bp/100, bp%100)
}

type adminPoolListCmd struct{}

func (c *adminPoolListCmd) Help() string {
	return `Examples:
  gpumarket admin pool list
  gpumarket admin pool list -o json`
}

func (c *adminPoolListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	ps, err := api.Pools(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(ps)
	}
	t := newTable(env.Stdout, "POOL", "SHARE", "OPEN", "MACHINES", "QUOTA GPUS", "USED GPUS", "BORROWED", "DEPLOYMENTS", "REWARD/GPU-HOUR", "REWARDS PAID", "DESCRIPTION")
	var stopped []string
	for _, p := range ps {
		rate, paid := "-", "-"
		if rw := p.Reward; rw != nil {
			rate, paid = money(rw.PerGPUHour, rw.Asset), money(rw.Paid, rw.Asset)
			if rw.Stopped != "" {
				paid += " (stopped)"
				stopped = append(stopped, fmt.Sprintf("Rewards of pool %s stopped: %s", p.Name, rw.Stopped))
			}
		}
		t.row(p.Name, share(p.ShareBP), openWord(p.Open), strconv.Itoa(p.Machines), strconv.Itoa(p.QuotaGPUs), strconv.Itoa(p.UsedGPUs),
			strconv.Itoa(p.BorrowedGPU), strconv.Itoa(p.Deployments), rate, paid, dash(p.Description))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, s := range stopped {
		fmt.Fprintln(env.Stdout, s)
	}
	return nil
}

type adminPoolShowCmd struct {
	Name string `arg:"" help:"Pool name."`
}

func (c *adminPoolShowCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	ps, err := api.Pools(ctx)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.Name != c.Name {
			continue
		}
		if env.JSON() {
			return env.printJSON(p)
		}
		fmt.Fprintf(env.Stdout, "Pool %s: %s share, %d machines, quota %d GPUs, %d used (%d borrowed beyond the quota), %d deployments\n",
			p.Name, share(p.ShareBP), p.Machines, p.QuotaGPUs, p.UsedGPUs, p.BorrowedGPU, p.Deployments)
		if p.Description != "" {
			fmt.Fprintf(env.Stdout, "  %s\n", p.Description)
		}
		if p.Open {
			fmt.Fprintln(env.Stdout, "  Open to hosts: they add their machines with gpumarket machine set MACHINE --pool "+p.Name)
		}
		if rw := p.Reward; rw != nil {
			fmt.Fprintf(env.Stdout, "  Reward: %s per GPU-hour rented, paid by %s; %s paid so far\n", money(rw.PerGPUHour, rw.Asset), rw.From, money(rw.Paid, rw.Asset))
			if rw.Stopped != "" {
				fmt.Fprintf(env.Stdout, "  Rewards stopped: %s\n", rw.Stopped)
			}
		}
		return nil
	}
	return fmt.Errorf("pool %q not found (gpumarket admin pool list)", c.Name)
}

type adminPoolAssignCmd struct {
	Pool     string   `arg:"" help:"Pool name."`
	Machines []string `arg:"" help:"Machine IDs (m-...)."`
}

func (c *adminPoolAssignCmd) Help() string {
	return `A machine belongs to at most one pool; assigning it again moves it. Pooled
machines serve deployments of pools only (they stay rentable directly).

Example:
  gpumarket admin pool assign depin m-0a1b2c3d4e5f m-1b2c3d4e5f6g`
}

func (c *adminPoolAssignCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	return assignPool(ctx, env, api, c.Pool, c.Machines)
}

type adminPoolUnassignCmd struct {
	Machines []string `arg:"" help:"Machine IDs (m-...)."`
}

func (c *adminPoolUnassignCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	return assignPool(ctx, env, api, "", c.Machines)
}

func assignPool(ctx context.Context, env *Env, api *apiclient.Client, pool string, machines []string) error {
	ids := make([]market.MachineID, len(machines))
	for i, m := range machines {
		ids[i] = market.MachineID(m)
	}
	if err := api.AssignPool(ctx, pool, ids); err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(market.PoolAssignment{Pool: pool, Machines: ids})
	}
	if pool == "" {
		fmt.Fprintf(env.Stdout, "Took %d machines out of pools.\n", len(ids))
	} else {
		fmt.Fprintf(env.Stdout, "Assigned %d machines to pool %s.\n", len(ids), pool)
	}
	return nil
}

type adminPoolDeleteCmd struct {
	Name string `arg:"" help:"Pool name."`
}

func (c *adminPoolDeleteCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	if err := api.DeletePool(ctx, c.Name); err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(map[string]string{"deleted": c.Name})
	}
	fmt.Fprintf(env.Stdout, "Deleted pool %s.\n", c.Name)
	return nil
}
