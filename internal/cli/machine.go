package cli

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

type machineCmd struct {
	List        machineListCmd     `cmd:"" help:"List your machines."`
	Show        machineShowCmd     `cmd:"" help:"Show a machine and its GPUs."`
	Set         machineSetCmd      `cmd:"" help:"Change a machine's price or region."`
	ListForRent machineListOnCmd   `cmd:"" name:"list-for-rent" help:"Offer a machine for rent."`
	Unlist      machineUnlistCmd   `cmd:"" help:"Take a machine off the market; running instances go on."`
	Verify      machineVerifyCmd   `cmd:"" help:"Verify a machine now: a compute challenge to its GPUs (see docs/verification.md)."`
	Bond        machineBondCmd     `cmd:"" help:"Bond tokens per GPU on a machine: ranks it higher, slashed to renters on failed checks and downtime."`
	SelfTest    machineSelfTestCmd `cmd:"" name:"self-test" help:"Run the verification challenge on this machine's GPUs, locally: would each pass, and how fast?"`
}

type machineListCmd struct {
	All bool `help:"List every machine (admins only)."`
}

func (c *machineListCmd) Help() string {
	return `Examples:
  gpumarket machine list
  gpumarket machine list --all -o json`
}

func (c *machineListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	ms, err := api.Machines(ctx, c.All)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(ms)
	}
	t := newTable(env.Stdout, "ID", "STATUS", "GPUS", "FREE", "PRICE/GPU/H", "REGION", "HOSTNAME", "LAST SEEN")
	for _, m := range ms {
		t.row(string(m.ID), string(m.Status), gpuSummary(m.GPUs),
			fmt.Sprintf("%d/%d", len(m.FreeGPUs()), len(m.GPUs)),
			money(m.PricePerGPUHour, ""), dash(m.Region), dash(m.Hostname), env.time(m.LastSeenAt))
	}
	return t.flush()
}

type machineShowCmd struct {
	ID string `arg:"" help:"Machine ID (m-...)."`
}

func (c *machineShowCmd) Help() string {
	return `Shows the machine, its GPUs, its reliability score with the formula's
terms, the performance its checks measured (perf_score in offer search), and
every verification check with its result.

Example:
  gpumarket machine show m-0a1b2c3d4e5f`
}

func (c *machineShowCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	m, err := api.Machine(ctx, market.MachineID(c.ID))
	if err != nil {
		return err
	}
	// An older coordinator has no verification: show the machine anyway.
	v, verr := api.MachineVerification(ctx, m.ID)
	if env.JSON() {
		out := machineShowJSON{Machine: m}
		if verr == nil {
			out.Verification = &v
		}
		return env.printJSON(out)
	}
	if err := printMachine(env, m); err != nil {
		return err
	}
	if verr != nil {
		fmt.Fprintf(env.Stdout, "\nVerification: not available (%v)\n", verr)
		return nil
	}
	printVerification(env, v) // checks and reliability terms (verify.go)
	return nil
}

func printMachine(env *Env, m market.Machine) error {
	t := newTable(env.Stdout)
	t.row("ID:", string(m.ID))
	t.row("Status:", string(m.Status))
	t.row("Owner:", string(m.Owner))
	t.row("Hostname:", dash(m.Hostname))
	t.row("Region:", dash(m.Region))
	t.row("Datacenter:", dash(m.DataCenter))
	t.row("Price:", money(m.PricePerGPUHour, "")+" per GPU-hour")
	t.row("GPUs:", fmt.Sprintf("%s, %d free", gpuSummary(m.GPUs), len(m.FreeGPUs())))
	t.row("CPU / RAM / disk:", fmt.Sprintf("%d cores / %s / %d GiB", m.CPUCores, mib(m.RAMMiB), m.DiskGiB))
	t.row("Driver / CUDA:", dash(m.DriverVersion)+" / "+dash(m.CUDAVersion))
	t.row("Runner:", dash(m.Runner))
	if m.PortRange.Size() > 0 {
		t.row("Host ports:", m.PortRange.String()+" (for renters' published ports)")
	}
	t.row("Last seen:", env.time(m.LastSeenAt))
	if err := t.flush(); err != nil {
		return err
	}
	if len(m.GPUs) == 0 {
		return nil
	}
	fmt.Fprintln(env.Stdout)
	g := newTable(env.Stdout, "INDEX", "MODEL", "VRAM", "POWER W (MIN-MAX)", "IN USE", "UUID")
	used := map[int]bool{}
	for _, i := range m.UsedGPUs {
		used[i] = true
	}
	for _, gpu := range m.GPUs {
		inUse := "no"
		if used[gpu.Index] {
			inUse = "yes"
		}
		g.row(strconv.Itoa(gpu.Index), gpu.Model, mib(gpu.VRAMMiB),
			fmt.Sprintf("%d-%d", gpu.MinPowerW, gpu.MaxPowerW), inUse, gpu.UUID)
	}
	return g.flush()
}

// spot prints the spot market snapshot, filtered by --gpu-name and --gpus.
func (c *offerSearchCmd) spot(ctx context.Context, env *Env, api *apiclient.Client) error {
	if len(c.Query) > 0 {
		return usagef("--spot takes --gpu-name and --gpus, not a query")
	}
	snap, err := api.Snapshot(ctx)
	if err != nil {
		return err
	}
	var ms []market.SnapshotMachine
	for _, m := range snap.Machines {
		if m.SpotGPUs < max(c.GPUs, 1) || (c.GPUName != "" && !strings.Contains(match.NormModel(m.GPUModel), match.NormModel(c.GPUName))) {
			continue
		}
		ms = append(ms, m)
	}
	if env.JSON() {
		snap.Machines = ms
		return env.printJSON(snap)
	}
	if len(ms) == 0 {
		fmt.Fprintln(env.Stdout, "No machine has spot capacity that matches.")
		return nil
	}
	fmt.Fprintf(env.Stdout, "Spot market at %s; rounds every %s. Host profit = price x GPUs x interval - energy x power x GPUs x interval.\n\n", env.time(snap.At), snap.Interval)
	t := newTable(env.Stdout, "MACHINE", "GPU", "SPOT GPUS", "RESERVE/GPU/DAY", "ENERGY/KWH", "POWER W", "BIDS", "BEST BID/GPU/DAY", "REGION")
	for _, m := range ms {
		best := "-"
		if len(m.Bids) > 0 {
			top := slices.MaxFunc(m.Bids, func(a, b market.SnapshotBid) int { return cmp.Compare(a.PricePerGPUDay, b.PricePerGPUDay) })
			best = money(top.PricePerGPUDay, "")
		}
		t.row(string(m.Machine), m.GPUModel, fmt.Sprintf("%d/%d", m.SpotGPUs, m.TotalGPUs), money(m.Terms.ReservePerGPUDay, ""),
			money(m.Terms.EnergyPerKWh, ""), fmt.Sprintf("%d-%d", m.MinPowerW, m.MaxPowerW), strconv.Itoa(len(m.Bids)), best, dash(m.Region))
	}
	return t.flush()
}

type machineSetCmd struct {
	ID              string  `arg:"" help:"Machine ID (m-...)."`
	PricePerGPUHour string  `name:"price-per-gpu-hour" placeholder:"TOKENS" help:"On-demand price of one GPU for one hour, in tokens (up to 6 decimals)."`
	Region          *string `help:"Region the machine is in, such as eu or us-east."`
	Datacenter      *string `help:"Datacenter the machine is in."`
	SpotReserve     string  `name:"spot-reserve" placeholder:"TOKENS" help:"Lowest spot bid accepted, per GPU-day, in tokens."`
	EnergyPrice     string  `name:"energy-price" placeholder:"TOKENS" help:"Your energy cost per kWh, in tokens; spot bids win on price minus energy at their power limit."`
	MaxPower        *int    `name:"max-power" placeholder:"W" help:"Highest power limit per GPU a spot bid or an instance may ask, in W (0: the cards' maximum)."`
	CoreLockRange   string  `name:"core-lock-range" placeholder:"MIN..MAX" help:"Core clock locks spot bids and instances may ask, in MHz, like 300..2500 (none: no locks)."`
	MemLockRange    string  `name:"mem-lock-range" placeholder:"MIN..MAX" help:"Memory clock locks spot bids and instances may ask, in MHz."`
	CoreOffsetRange string  `name:"core-offset-range" placeholder:"MIN..MAX" help:"Core clock offsets spot bids and instances may ask, in MHz, like -200..200."`
	MemOffsetRange  string  `name:"mem-offset-range" placeholder:"MIN..MAX" help:"Memory clock offsets spot bids and instances may ask, in MHz."`
	Pool            *string `placeholder:"POOL" help:"Offer the machine to a capacity pool that is open to hosts, and earn its rewards (none: leave the pool)."`
}

// parseClockRange reads "MIN..MAX" (MHz, either may be negative) or "none".
func parseClockRange(flag, v string) (*market.ClockRange, error) {
	if v == "" {
		return nil, nil
	}
	if v == "none" {
		return &market.ClockRange{}, nil
	}
	lo, hi, ok := strings.Cut(v, "..")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil {
		return nil, usagef("%s %q: write MIN..MAX in MHz, like 300..2500, or none", flag, v)
	}
	return &market.ClockRange{Min: a, Max: b}, nil
}

func (c *machineSetCmd) Help() string {
	return `Examples:
  gpumarket machine set m-0a1b2c3d4e5f --price-per-gpu-hour 0.5
  gpumarket machine set m-0a1b2c3d4e5f --price-per-gpu-hour 0.45 --region eu
  gpumarket machine set m-0a1b2c3d4e5f --spot-reserve 5 --energy-price 0.12 --max-power 350
  gpumarket machine set m-0a1b2c3d4e5f --core-lock-range 300..2500 --core-offset-range -200..200
  gpumarket machine set m-0a1b2c3d4e5f --pool depin

--pool offers the machine to a capacity pool; your operator tells you which
pools exist. Hosts may join and leave only pools the operator marked open
(admin pool set NAME --open): that mark is the operator's approval of every
host. A machine in a closed pool, or one to put in a
closed pool, is moved by an operator (gpumarket admin pool assign). While
the machine is in a pool with a reward, every minute of its GPUs rented
earns you the pool's project token, shown by 'gpumarket earnings'.`
}

func (c *machineSetCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	upd := market.MachineUpdate{Region: c.Region, DataCenter: c.Datacenter}
	if c.PricePerGPUHour != "" {
		p, err := market.ParseMoney(c.PricePerGPUHour)
		if err != nil {
			return usagef("--price-per-gpu-hour: %v", err)
		}
		if p < 0 {
			return usagef("--price-per-gpu-hour %s is negative; a price is 0 or more", c.PricePerGPUHour)
		}
		upd.PricePerGPUHour = &p
	}
	for _, f := range []struct {
		flag, v string
		dst     **market.Money
	}{{"--spot-reserve", c.SpotReserve, &upd.SpotReservePerGPUDay}, {"--energy-price", c.EnergyPrice, &upd.EnergyPerKWh}} {
		if f.v == "" {
			continue
		}
		p, err := market.ParseMoney(f.v)
		if err != nil {
			return usagef("%s: %v", f.flag, err)
		}
		*f.dst = &p
	}
	upd.MaxPowerW = c.MaxPower
	upd.Pool = c.Pool
	for _, r := range []struct {
		flag, v string
		dst     **market.ClockRange
	}{
		{"--core-lock-range", c.CoreLockRange, &upd.CoreLockMHz}, {"--mem-lock-range", c.MemLockRange, &upd.MemLockMHz},
		{"--core-offset-range", c.CoreOffsetRange, &upd.CoreOffsetMHz}, {"--mem-offset-range", c.MemOffsetRange, &upd.MemOffsetMHz},
	} {
		cr, err := parseClockRange(r.flag, r.v)
		if err != nil {
			return err
		}
		*r.dst = cr
	}
	if upd == (market.MachineUpdate{}) {
		return usagef("nothing to change; pass --price-per-gpu-hour, --region, --datacenter, --spot-reserve, --energy-price, --max-power, a clock range or --pool")
	}
	m, err := api.UpdateMachine(ctx, market.MachineID(c.ID), upd)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(m)
	}
	fmt.Fprintf(env.Stdout, "Machine %s: price %s per GPU-hour, region %s.\n", m.ID, money(m.PricePerGPUHour, ""), dash(m.Region))
	if c.Pool != nil {
		if p := strings.TrimSpace(*c.Pool); p == "" || p == "none" {
			fmt.Fprintf(env.Stdout, "Machine %s left its pool.\n", m.ID)
		} else {
			fmt.Fprintf(env.Stdout, "Machine %s is in pool %s.\n", m.ID, p)
		}
	}
	return nil
}

type machineListOnCmd struct {
	ID string `arg:"" help:"Machine ID (m-...)."`
}

func (c *machineListOnCmd) Help() string {
	return `Example:
  gpumarket machine list-for-rent m-0a1b2c3d4e5f`
}

func (c *machineListOnCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	m, err := api.ListMachine(ctx, market.MachineID(c.ID))
	return machineStatusDone(env, m, err)
}

type machineUnlistCmd struct {
	ID string `arg:"" help:"Machine ID (m-...)."`
}

func (c *machineUnlistCmd) Help() string {
	return `Example:
  gpumarket machine unlist m-0a1b2c3d4e5f`
}

func (c *machineUnlistCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	m, err := api.UnlistMachine(ctx, market.MachineID(c.ID))
	return machineStatusDone(env, m, err)
}

func machineStatusDone(env *Env, m market.Machine, err error) error {
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(m)
	}
	listed := "not listed"
	if m.Listed {
		listed = "listed for rent"
	}
	fmt.Fprintf(env.Stdout, "Machine %s is %s (status %s).\n", m.ID, listed, m.Status)
	return nil
}

type offerCmd struct {
	Search offerSearchCmd `cmd:"" help:"Search listed machines with free GPUs."`
}

type offerSearchCmd struct {
	Query     []string `arg:"" optional:"" help:"Filters of the offer query language, e.g. 'gpu_name=RTX_4090 num_gpus>=2 price_per_gpu_hour<0.8 region in [eu,us]' (fields below)."`
	Sort      string   `default:"score" help:"Order: score, price, or a numeric field; a leading - sorts largest first (-reliability)."`
	Limit     int      `default:"20" help:"Show at most this many offers."`
	Region    string   `help:"Your region, so that nearby machines rank higher."`
	Explain   bool     `help:"Say how many machines each filter removed and, for an empty result, which filter emptied it and what nearly matched."`
	Spot      bool     `help:"Show the spot market instead: machines with spot capacity, their terms and their books (bidders anonymised)."`
	GPUName   string   `name:"gpu-name" help:"Shorthand for gpu_name=... (case, spaces and _ ignored)."`
	GPUs      int      `name:"gpus" placeholder:"N" help:"Shorthand for num_gpus>=N."`
	MaxPrice  string   `name:"max-price" placeholder:"TOKENS" help:"Shorthand for price_per_gpu_hour<=TOKENS."`
	MinGPURAM int64    `name:"min-gpu-ram" placeholder:"GB" help:"Shorthand for gpu_ram>=GB."`
}

func (c *offerSearchCmd) Help() string {
	return `Operators: = != < <= > >= in notin. Strings may be quoted; numbers may carry
units (gpu_ram>=24GB, ram>=64GiB); lists are [a,b]. Offers are ranked by a
score of price, reliability, verified performance (perf_score), the host's
bond and latency from --region.

Examples:
  gpumarket offer search
  gpumarket offer search 'gpu_name=RTX_4090 num_gpus>=2 price_per_gpu_hour<0.8'
  gpumarket offer search 'gpu_ram>=40 region in [eu,us]' --sort price --limit 5
  gpumarket offer search 'gpu_name=H100 num_gpus>=8' --explain

Fields (name, type, unit of a bare number; other names accepted):
` + fieldsHelp()
}

// fieldsHelp lists the query fields for --help: each on a line of its own,
// its description wrapped under it. Every line is indented, so that the
// help printer keeps it as it is rather than running the list together as
// one paragraph.
func fieldsHelp() string {
	var b strings.Builder
	for _, f := range match.Fields() {
		head := "  " + f.Name + "  " + f.Type.String()
		if f.Unit != "" && f.Unit != f.Type.String() {
			head += ", " + f.Unit
		}
		if len(f.Aliases) > 0 {
			head += "  (also " + strings.Join(f.Aliases, ", ") + ")"
		}
		b.WriteString(head + "\n")
		line := "     "
		for _, w := range strings.Fields(f.Doc) {
			if len(line)+1+len(w) > 78 && len(line) > 5 {
				b.WriteString(line + "\n")
				line = "     "
			}
			line += " " + w
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func (c *offerSearchCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	f := market.OfferFilter{Query: strings.Join(c.Query, " "), Sort: c.Sort, Limit: c.Limit, Region: c.Region,
		GPUName: c.GPUName, MinGPUs: c.GPUs, MinGPURAMGB: c.MinGPURAM}
	if c.GPUs < 0 || c.MinGPURAM < 0 || c.Limit < 0 {
		return usagef("--gpus, --min-gpu-ram and --limit must not be negative")
	}
	if c.MaxPrice != "" {
		p, err := market.ParseMoney(c.MaxPrice)
		if err != nil {
			return usagef("--max-price: %v", err)
		}
		f.MaxPrice = p
	}
	if c.Spot {
		return c.spot(ctx, env, api)
	}
	if c.Explain {
		x, err := api.ExplainOffers(ctx, f)
		if err != nil {
			return err
		}
		if env.JSON() {
			return env.printJSON(x)
		}
		_, err = fmt.Fprint(env.Stdout, x.String())
		return err
	}
	offers, err := api.Offers(ctx, f)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(offers)
	}
	if len(offers) == 0 {
		fmt.Fprintln(env.Stdout, "No offers match. Add --explain to see which filter removed them.")
		return nil
	}
	t := newTable(env.Stdout, "MACHINE", "GPU", "VRAM", "FREE", "PRICE/GPU/H", "CPU", "RAM", "DISK", "REGION")
	for _, o := range offers {
		t.row(string(o.Machine), o.GPUModel, mib(o.GPURAMMiB), fmt.Sprintf("%d/%d", o.FreeGPUs, o.TotalGPUs),
			money(o.PricePerGPUHour, ""), strconv.Itoa(o.CPUCores), mib(o.RAMMiB),
			fmt.Sprintf("%d GiB", o.DiskGiB), dash(o.Region))
	}
	return t.flush()
}
