package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/auction"
	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

type bidCmd struct {
	Create bidCreateCmd `cmd:"" help:"Place a spot bid on a machine."`
	List   bidListCmd   `cmd:"" help:"List your bids."`
	Change bidChangeCmd `cmd:"" help:"Change the price of an open bid."`
	Cancel bidCancelCmd `cmd:"" help:"Cancel a bid; its running instance gets notice."`
}

type bidCreateCmd struct {
	Machine    string        `arg:"" help:"Machine ID (m-...), from 'gpumarket offer search' or the market snapshot."`
	Price      string        `name:"price-per-day" required:"" placeholder:"TOKENS" help:"What you pay per GPU per day, in tokens; billed per minute while you win."`
	PowerLimit int           `name:"power-limit" required:"" placeholder:"W" help:"Power limit applied to each GPU, in W (required)."`
	GPUs       int           `name:"gpus" placeholder:"N" help:"Number of GPUs (default: all of the machine's)."`
	CoreLock   []int         `name:"core-lock" sep:"," placeholder:"MHz[,MHz...]" help:"Lock the core clock, within the machine's allowed range: one value for all GPUs, or one per GPU separated by commas."`
	MemLock    []int         `name:"mem-lock" sep:"," placeholder:"MHz[,MHz...]" help:"Lock the memory clock: one value, or one per GPU."`
	CoreOffset []int         `name:"core-offset" sep:"," placeholder:"MHz[,MHz...]" help:"Core clock offset: one value, or one per GPU."`
	MemOffset  []int         `name:"mem-offset" sep:"," placeholder:"MHz[,MHz...]" help:"Memory clock offset: one value, or one per GPU."`
	Image      string        `name:"image" placeholder:"IMAGE" help:"Container image (machines with the docker runner)."`
	Env        []string      `name:"env" sep:"none" placeholder:"KEY=VALUE" help:"Environment variable for the command; repeat for more."`
	Notice     time.Duration `name:"notice" placeholder:"DURATION" help:"Notice you want before SIGTERM turns into SIGKILL when outbid, such as 120s."`
	Lifetime   time.Duration `name:"lifetime" placeholder:"DURATION" help:"How long the bid stays in the book (default 480h, 20 days)."`
	Webhook    string        `name:"webhook" placeholder:"URL" help:"URL told before your instance is preempted."`
	Command    []string      `arg:"" optional:"" passthrough:"" help:"Command and arguments, after --."`
}

func (c *bidCreateCmd) Help() string {
	return `Each clearing interval the GPUs not rented on demand go to the bids with the
largest host profit (price minus the host's energy cost at your power limit).
You pay as bid, per minute, while you win; when outbid you get a notice file
($GPUMARKET_NOTICE_FILE), then SIGTERM, then SIGKILL after your notice.

Examples:
  gpumarket bid create m-0a1b2c3d4e5f --price-per-day 6 --power-limit 300 -- python train.py
  gpumarket bid create m-0a1b2c3d4e5f --price-per-day 8 --power-limit 250 --gpus 2 --core-lock 1800 --notice 120s -- ./job.sh
  gpumarket bid create m-0a1b2c3d4e5f --price-per-day 8 --power-limit 250 --gpus 2 --core-lock 1800,1950 -- ./job.sh`
}

func (c *bidCreateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	price, err := market.ParseMoney(c.Price)
	if err != nil {
		return usagef("--price-per-day: %v", err)
	}
	if c.Notice < 0 || c.Lifetime < 0 {
		return usagef("--notice and --lifetime must not be negative")
	}
	cmd := c.Command
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	req := market.CreateBidRequest{Machine: market.MachineID(c.Machine), GPUs: c.GPUs, PricePerGPUDay: price, PowerLimitW: c.PowerLimit,
		Image: c.Image, Command: cmd, Webhook: c.Webhook,
		NoticeSeconds: int((c.Notice + time.Second - 1) / time.Second), LifetimeSeconds: int64(c.Lifetime / time.Second)}
	if req.Command == nil {
		req.Command = []string{}
	}
	clocks, err := bidClocks(c.CoreLock, c.MemLock, c.CoreOffset, c.MemOffset)
	if err != nil {
		return err
	}
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
	b, err := api.CreateBid(ctx, req)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(b)
	}
	fmt.Fprintf(env.Stdout, "Placed bid %s on %s: %d GPUs at %s per GPU-day, %d W; it takes part in the next clearing round.\n",
		b.ID, b.Machine, b.GPUs, money(b.PricePerGPUDay, ""), b.PowerLimitW)
	fmt.Fprintf(env.Stdout, "Watch it with: gpumarket bid list, gpumarket auction rounds --machine %s\n", b.Machine)
	return nil
}

type bidListCmd struct{}

func (c *bidListCmd) Help() string {
	return `Examples:
  gpumarket bid list
  gpumarket bid list -o json`
}

func (c *bidListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	bs, err := api.Bids(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(bs)
	}
	t := newTable(env.Stdout, "ID", "MACHINE", "GPUS", "PRICE/GPU/DAY", "POWER W", "STATE", "INSTANCE", "EXPIRES")
	for _, b := range bs {
		t.row(string(b.ID), string(b.Machine), fmt.Sprint(b.GPUs), money(b.PricePerGPUDay, ""), fmt.Sprint(b.PowerLimitW),
			string(b.State), dash(string(b.Instance)), env.time(b.ExpiresAt))
	}
	return t.flush()
}

type bidChangeCmd struct {
	ID    string `arg:"" help:"Bid ID (b-...)."`
	Price string `name:"price" required:"" placeholder:"TOKENS" help:"New price per GPU-day, in tokens."`
}

func (c *bidChangeCmd) Help() string {
	return `A winning bid's instance pays the new price from the next minute; the next
round weighs it against the others.

Example:
  gpumarket bid change b-0a1b2c3d4e5f --price 7.5`
}

func (c *bidChangeCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	p, err := market.ParseMoney(c.Price)
	if err != nil {
		return usagef("--price: %v", err)
	}
	b, err := api.ChangeBid(ctx, market.BidID(c.ID), market.BidChange{PricePerGPUDay: &p})
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(b)
	}
	fmt.Fprintf(env.Stdout, "Bid %s: %s per GPU-day (%s).\n", b.ID, money(b.PricePerGPUDay, ""), b.State)
	return nil
}

type bidCancelCmd struct {
	ID string `arg:"" help:"Bid ID (b-...)."`
}

func (c *bidCancelCmd) Help() string {
	return `Example:
  gpumarket bid cancel b-0a1b2c3d4e5f`
}

func (c *bidCancelCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	b, err := api.CancelBid(ctx, market.BidID(c.ID))
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(b)
	}
	fmt.Fprintf(env.Stdout, "Bid %s is %s.\n", b.ID, b.State)
	return nil
}

type auctionCmd struct {
	Rounds auctionRoundsCmd `cmd:"" help:"List spot clearing rounds, newest first."`
	Show   auctionShowCmd   `cmd:"" help:"Show a round: candidates, profits, drops, winners, preemptions."`
	Replay auctionReplayCmd `cmd:"" help:"Recompute a round from its stored inputs and compare."`
}

type auctionRoundsCmd struct {
	Machine string `name:"machine" placeholder:"ID" help:"Only rounds of this machine."`
	Limit   int    `name:"limit" default:"20" help:"At most this many rounds."`
}

func (c *auctionRoundsCmd) Help() string {
	return `Examples:
  gpumarket auction rounds
  gpumarket auction rounds --machine m-0a1b2c3d4e5f -o json`
}

func (c *auctionRoundsCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	rs, err := api.Rounds(ctx, apiclient.RoundQuery{Machine: market.MachineID(c.Machine), Limit: c.Limit})
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(rs)
	}
	t := newTable(env.Stdout, "ROUND", "AT", "MACHINE", "FREE", "BIDS", "WINNERS", "PREEMPTED", "PROFIT")
	for _, r := range rs {
		var md auction.MachineDecision
		if len(r.Decision.Machines) > 0 {
			md = r.Decision.Machines[0]
		}
		t.row(string(r.ID), env.time(r.At), string(r.Machine), fmt.Sprint(md.Free), fmt.Sprint(len(md.Candidates)),
			winnerList(md.Winners), fmt.Sprint(len(md.Preempted)), money(md.Profit, ""))
	}
	return t.flush()
}

func winnerList(ws []auction.Winner) string {
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = string(w.Bid)
	}
	return dash(strings.Join(ids, ","))
}

type auctionShowCmd struct {
	Round string `arg:"" help:"Round ID (r-...)."`
}

func (c *auctionShowCmd) Help() string {
	return `Example:
  gpumarket auction show r-0a1b2c3d4e5f`
}

func (c *auctionShowCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	r, err := api.Round(ctx, market.RoundID(c.Round))
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(r)
	}
	return printRound(env, r)
}

func printRound(env *Env, r coord.AuctionRound) error {
	t := newTable(env.Stdout)
	t.row("Round:", string(r.ID))
	t.row("At:", env.time(r.At))
	t.row("Machine:", string(r.Machine))
	t.row("Interval:", r.Input.Interval.String())
	if r.Decision.Error != "" {
		t.row("Error:", r.Decision.Error)
	}
	var md auction.MachineDecision
	if len(r.Decision.Machines) > 0 {
		md = r.Decision.Machines[0]
	}
	t.row("Free GPUs:", fmt.Sprint(md.Free))
	t.row("Incumbents:", string(md.Incumbency))
	t.row("Host profit:", money(md.Profit, ""))
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	winners := map[market.BidID]bool{}
	for _, w := range md.Winners {
		winners[w.Bid] = true
	}
	c := newTable(env.Stdout, "BID", "SEQ", "GPUS", "PROFIT", "OUTCOME")
	for _, cand := range md.Candidates {
		outcome := "lost"
		switch {
		case winners[cand.Bid]:
			outcome = "won"
		case !cand.Feasible():
			outcome = "dropped: " + cand.Message()
		}
		c.row(string(cand.Bid), fmt.Sprint(cand.Seq), fmt.Sprint(cand.GPUs), money(cand.Profit, ""), outcome)
	}
	if err := c.flush(); err != nil {
		return err
	}
	for _, p := range md.Preempted {
		fmt.Fprintf(env.Stdout, "Preempted %s (%s).\n", p.Bid, p.Reason)
	}
	return nil
}

type auctionReplayCmd struct {
	Round string `arg:"" help:"Round ID (r-...)."`
}

func (c *auctionReplayCmd) Help() string {
	return `Example:
  gpumarket auction replay r-0a1b2c3d4e5f`
}

func (c *auctionReplayCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	rep, err := api.ReplayRound(ctx, market.RoundID(c.Round))
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(rep)
	}
	if !rep.Match {
		return fmt.Errorf("round %s does NOT replay: the recomputed decision differs from the stored one (see -o json)", rep.Round)
	}
	fmt.Fprintf(env.Stdout, "Round %s replays: the recomputed decision matches the stored one.\n", rep.Round)
	return nil
}

// bidClocks turns the clock flags of a bid or an instance into one setting
// for all GPUs (a slice of one) or one per GPU: each flag gives one value
// or one per GPU.
func bidClocks(core, mem, coreOff, memOff []int) ([]market.Clocks, error) {
	n := max(len(core), len(mem), len(coreOff), len(memOff), 1)
	at := func(flag string, vs []int, i int) (int, error) {
		switch len(vs) {
		case 0:
			return 0, nil
		case 1:
			return vs[0], nil
		case n:
			return vs[i], nil
		}
		return 0, usagef("%s has %d values but another clock flag has %d; give one value for all GPUs or one per GPU", flag, len(vs), n)
	}
	out := make([]market.Clocks, n)
	for i := range out {
		var err error
		c := &out[i]
		for _, f := range []struct {
			flag string
			vs   []int
			dst  *int
		}{{"--core-lock", core, &c.CoreLockMHz}, {"--mem-lock", mem, &c.MemLockMHz}, {"--core-offset", coreOff, &c.CoreOffsetMHz}, {"--mem-offset", memOff, &c.MemOffsetMHz}} {
			if *f.dst, err = at(f.flag, f.vs, i); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
