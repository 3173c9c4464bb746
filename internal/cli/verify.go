package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

type machineVerifyCmd struct {
	ID   string        `arg:"" help:"Machine ID (m-...)."`
	Wait time.Duration `default:"0s" help:"Wait up to this long for the check to finish (0: return at once with the pending check)."`
}

func (c *machineVerifyCmd) Help() string {
	return `Asks the coordinator to verify the machine now: its agent gets a compute
challenge for each idle GPU (all GPUs when the machine is held off the
market), commits to the results and proves the tiles the coordinator picks.
A machine that fails stays off the market until a check passes. If a check
is pending already, that one is shown.

Examples:
  gpumarket machine verify m-0a1b2c3d4e5f
  gpumarket machine verify m-0a1b2c3d4e5f --wait 30s -o json`
}

func (c *machineVerifyCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	if c.Wait < 0 {
		return usagef("--wait %s must not be negative", c.Wait)
	}
	id := market.MachineID(c.ID)
	check, err := api.VerifyMachine(ctx, id)
	if err != nil {
		return err
	}
	if deadline := time.Now().Add(c.Wait); c.Wait > 0 {
		for check.State == market.CheckPending && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			v, err := api.MachineVerification(ctx, id)
			if err != nil {
				return err
			}
			for _, ch := range v.Checks {
				if ch.ID == check.ID {
					check = ch
				}
			}
		}
	}
	if env.JSON() {
		return env.printJSON(check)
	}
	printCheck(env, check)
	if check.State == market.CheckPending {
		fmt.Fprintf(env.Stdout, "\nThe agent answers within seconds; see the result with: gpumarket machine show %s\n", id)
	}
	return nil
}

// machineShowJSON is machine show -o json: the machine's fields with its
// verification beside them.
type machineShowJSON struct {
	market.Machine
	Verification *market.MachineVerification `json:"verification,omitempty"`
}

// printVerification prints a machine's reliability terms and checks for
// machine show.
func printVerification(env *Env, v market.MachineVerification) {
	w := env.Stdout
	r := v.Reliability
	fmt.Fprintln(w)
	state := "not verified yet"
	switch {
	case v.Unverified:
		state = "held off the market until a check passes"
	case v.Verified:
		state = "verified (the latest check passed)"
	}
	t := newTable(w)
	t.row("Verification:", state)
	if v.Review != "" {
		t.row("Flagged for review:", v.Review)
	}
	t.row("Reliability:", fmt.Sprintf("%.4f over %s to %s", r.Score, env.time(r.WindowStart), env.time(r.WindowEnd)))
	t.row("  coverage:", fmt.Sprintf("%.4f = %s online of %s listed", r.Coverage, time.Duration(r.OnlineSecs)*time.Second, time.Duration(r.ListedSecs)*time.Second))
	t.row("  fault factor:", fmt.Sprintf("%.4f = 1 - %d host faults / (%d completed + %d host faults)", r.FaultFactor, r.HostFaults, r.Completed, r.HostFaults))
	t.row("  not counted:", fmt.Sprintf("%d renter faults; checks in window: %d passed, %d failed", r.RenterFaults, r.ChecksPassed, r.ChecksFailed))
	t.row("  formula:", r.Formula)
	perf := "none yet: no passed check measured a GPU"
	if v.PerfScore > 0 {
		perf = fmt.Sprintf("%.4g trillion multiply-adds per second per GPU, measured by the newest passed check (search: perf_score)", v.PerfScore)
	}
	t.row("Performance:", perf)
	t.row("Bond:", fmt.Sprintf("%s per GPU (%s in all; %s slashed to renters so far)", money(v.Bond.PerGPU, ""), money(v.Bond.Total, ""), money(v.Bond.Slashed, "")))
	_ = t.flush()
	fmt.Fprintln(w)
	if len(v.Checks) == 0 {
		fmt.Fprintln(w, "No checks yet.")
		return
	}
	c := newTable(w, "CHECK", "CAUSE", "STATE", "CREATED", "GPUS", "RATE (MUL-ADD/S)", "TIME", "RESULT")
	for _, ch := range v.Checks {
		var rates, times []string
		for _, g := range ch.GPUs {
			if g.Rate > 0 {
				rates = append(rates, fmt.Sprintf("%.3g", g.Rate))
				times = append(times, (time.Duration(g.ElapsedMS) * time.Millisecond).String())
			}
		}
		c.row(string(ch.ID), ch.Cause, string(ch.State), env.time(ch.CreatedAt), fmt.Sprint(len(ch.GPUs)),
			dash(strings.Join(rates, ",")), dash(strings.Join(times, ",")), dash(ch.Failure))
	}
	_ = c.flush()
}

// printCheck prints one check with its per-GPU evidence.
func printCheck(env *Env, c market.Check) {
	t := newTable(env.Stdout)
	t.row("Check:", string(c.ID))
	t.row("Machine:", string(c.Machine))
	t.row("Cause:", c.Cause)
	t.row("State:", string(c.State))
	if c.Failure != "" {
		t.row("Failure:", c.Failure)
	}
	t.row("Created:", env.time(c.CreatedAt))
	t.row("Issued / deadline:", env.timePtr(c.IssuedAt)+" / "+env.timePtr(c.Deadline))
	_ = t.flush()
	fmt.Fprintln(env.Stdout)
	g := newTable(env.Stdout, "GPU", "MODEL", "TASK", "ENVELOPE (MUL-ADD/S)", "MEASURED", "TIME", "PROVED TILES", "RESULT")
	for _, cg := range c.GPUs {
		result := "pending"
		switch {
		case cg.Failure != "":
			result = cg.Failure
		case cg.Passed:
			result = "passed"
		}
		measured := "-"
		if cg.Rate > 0 {
			measured = fmt.Sprintf("%.3g", cg.Rate)
		}
		g.row(fmt.Sprint(cg.Index), cg.Model, fmt.Sprintf("%d tiles of %d^3", cg.Tiles, cg.TileSize),
			fmt.Sprintf("%.3g-%.3g", cg.MinRate, cg.MaxRate), measured, (time.Duration(cg.ElapsedMS) * time.Millisecond).String(),
			ints(cg.SampleTiles), result)
	}
	_ = g.flush()
}

type machineBondCmd struct {
	ID     string `arg:"" help:"Machine ID (m-...)."`
	PerGPU string `name:"per-gpu" required:"" placeholder:"TOKENS" help:"Tokens to bond per GPU (0 returns the bond)."`
}

func (c *machineBondCmd) Help() string {
	return `Moves tokens from your available balance into the machine's bond, so
that it holds PER-GPU times its GPUs; lowering the bond returns the
difference, but only while no instance runs on the machine. A bond ranks
the machine higher in offer search. When a check of the machine fails, 10%
of the bond goes to the renters of its running instances; when it goes
offline under rentals, 5% goes to those renters (docs/verification.md).

Examples:
  gpumarket machine bond m-0a1b2c3d4e5f --per-gpu 25
  gpumarket machine bond m-0a1b2c3d4e5f --per-gpu 0 -o json`
}

func (c *machineBondCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	per, err := market.ParseMoney(c.PerGPU)
	if err != nil {
		return usagef("--per-gpu %q: %v", c.PerGPU, err)
	}
	b, err := api.SetBond(ctx, market.MachineID(c.ID), market.BondRequest{PerGPU: per})
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(b)
	}
	fmt.Fprintf(env.Stdout, "Machine %s bonds %s per GPU (%s in all; %s slashed to renters so far).\n",
		b.Machine, money(b.PerGPU, ""), money(b.Total, ""), money(b.Slashed, ""))
	return nil
}
