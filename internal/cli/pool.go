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
	Create   adminPoolSetCmd      `cmd:"" help:"Create a capacity pool with a share of the pooled machines' GPUs."`
	Set      adminPoolSetCmd      `cmd:"" help:"Change a pool's share or description."`
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

type adminPoolSetCmd struct {
	Name        string `arg:"" help:"Pool name, such as leasing, depin or incubation."`
	Share       string `name:"share" required:"" placeholder:"PERCENT" help:"The pool's quota: its share of every GPU on online pooled machines, such as 45%."`
	Description string `name:"description" placeholder:"TEXT" help:"What the pool is for."`
}

func (c *adminPoolSetCmd) Help() string {
	return `Pools split the GPUs of the machines assigned to pools (any pool) by share;
the shares add up to at most 100%. Deployments name a pool with --pool; a pool
may borrow idle GPUs beyond its quota and gives them back by preemption (with
the instance's notice) when another pool needs its quota.

Examples:
  gpumarket admin pool create leasing --share 50%
  gpumarket admin pool create depin --share 45% --description "DePIN projects"
  gpumarket admin pool create incubation --share 5%
  gpumarket admin pool set depin --share 40%`
}

func (c *adminPoolSetCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	bp, err := parseShare(c.Share)
	if err != nil {
		return usagef("--share: %v", err)
	}
	p, err := api.PutPool(ctx, market.Pool{Name: c.Name, ShareBP: bp, Description: c.Description})
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(p)
	}
	fmt.Fprintf(env.Stdout, "Pool %s: %s of the pooled GPUs. Assign machines with: gpumarket admin pool assign %s MACHINE...\n", p.Name, share(p.ShareBP), p.Name)
	return nil
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
	t := newTable(env.Stdout, "POOL", "SHARE", "MACHINES", "QUOTA GPUS", "USED GPUS", "BORROWED", "DEPLOYMENTS", "DESCRIPTION")
	for _, p := range ps {
		t.row(p.Name, share(p.ShareBP), strconv.Itoa(p.Machines), strconv.Itoa(p.QuotaGPUs), strconv.Itoa(p.UsedGPUs),
			strconv.Itoa(p.BorrowedGPU), strconv.Itoa(p.Deployments), dash(p.Description))
	}
	return t.flush()
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
