package cli

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

type loadtestCmd struct {
	Agents         int           `default:"1000" help:"Simulated agents: each registers a machine with fake GPUs and heartbeats."`
	Renters        int           `default:"0" help:"Simulated renters: each searches offers and creates and stops instances in a loop."`
	Duration       time.Duration `default:"60s" help:"How long heartbeats and renters run, after registration."`
	Heartbeat      time.Duration `default:"10s" help:"Time between one agent's heartbeats; the agents' heartbeats are spread evenly over it."`
	Conns          int           `default:"32" help:"HTTP connections shared by the simulated agents' heartbeats and the renters. Registrations (and the reconnect storm) have as many of their own: each real agent has its own connection, so one registering never holds up another's heartbeat."`
	Register       int           `default:"16" help:"Registrations in flight at once."`
	PID            int           `name:"coordinator-pid" help:"Process ID of the coordinator, when it runs on this machine: its CPU and resident memory are reported."`
	Deposit        string        `default:"10000" help:"Tokens each renter gets (needs an admin: GPUMARKET_ADMIN_EMAIL and GPUMARKET_ADMIN_PASSWORD)."`
	Dispatch       int           `help:"During the timed run, create this many instances (one GPU each) through the API as fast as --creators allow, on the machines of the first --dispatch-agents agents, which run the agent protocol (long-poll the desired state, acknowledge each assignment with a report); prints creates per second and create-to-acknowledgement latencies. Needs an admin for the renter's deposit."`
	DispatchAgents int           `default:"1000" help:"How many agents take part in --dispatch; their machines have 16 GPUs each."`
	Creators       int           `default:"32" help:"Creates in flight at once during --dispatch."`
	Work           int           `help:"Before the timed run, give every agent's machine this many running one-GPU instances (at most 2, its GPUs), created through renters and acknowledged; its heartbeats then report them, unchanged, as a real agent's do. Needs an admin for the renters' deposits."`
	Storm          time.Duration `help:"After the timed run, every agent reconnects (registers again, as a restarted agent does) within this window, while heartbeats go on; 0: no storm."`
	Kill           float64       `help:"Then stop the heartbeats of this percentage of the agents and measure how long the coordinator takes to take them offline; 0: none."`
	Detect         time.Duration `default:"2m" help:"How long to wait for the killed agents' machines to go offline."`
}

func (c *loadtestCmd) Help() string {
	return `Simulates agents and renters against a running coordinator and prints a
progress line every second, then throughput and latency percentiles per
call kind, and how many simulated machines the coordinator counts offline
(a false "offline": they all heartbeat).

Agents are not goroutines each: a scheduler sends each agent's heartbeat
(an empty report, as a real agent sends when nothing changed) at its own
offset in the heartbeat period, over a small shared connection pool. With
--work, each machine first gets that many running instances, and its
heartbeats report them (running, unchanged), as a real agent's report
lists every workload it runs.

With --storm, after the timed run every agent registers again within the
window (a reconnect storm, as after a coordinator restart or a network
cut), heartbeats going on. With --kill, a percentage of the agents then
stop heartbeating; the tool watches the host's events for their machines
going offline, and prints the time from each one's last heartbeat to its
offline event, and any other machine taken offline (a false positive).

Examples:
  gpumarket serve --db /tmp/lt.db &
  gpumarket loadtest --coordinator http://127.0.0.1:8080 --agents 10000 --duration 2m --coordinator-pid $!
  gpumarket loadtest --agents 100000 --duration 60s --storm 5s --kill 1 --coordinator-pid $!
  GPUMARKET_ADMIN_EMAIL=ops@example.com GPUMARKET_ADMIN_PASSWORD=... gpumarket loadtest --agents 20000 --work 1 --coordinator-pid $!
  GPUMARKET_ADMIN_EMAIL=ops@example.com GPUMARKET_ADMIN_PASSWORD=... gpumarket loadtest --agents 1000 --renters 20`
}

// callKinds are the calls the load test measures.
var callKinds = []string{"register", "keepalive", "heartbeat", "search", "create", "stop", "reconnect"}

func (c *loadtestCmd) Run(ctx context.Context, env *Env) error {
	if c.Agents < 1 || c.Conns < 1 || c.Register < 1 || c.Heartbeat <= 0 || c.Duration <= 0 {
		return usagef("--agents, --conns, --register, --heartbeat and --duration must be positive")
	}
	if c.Dispatch < 0 || c.Dispatch > 0 && (c.DispatchAgents < 1 || c.DispatchAgents > c.Agents || c.Creators < 1) {
		return usagef("--dispatch must not be negative; with --dispatch, --creators must be positive and --dispatch-agents between 1 and --agents (%d)", c.Agents)
	}
	if c.Work < 0 || c.Work > 2 {
		return usagef("--work must be from 0 to 2 (each simulated machine has 2 GPUs); got %d", c.Work)
	}
	if c.Work > 0 && c.Dispatch > 0 {
		return usagef("--work cannot go with --dispatch: the dispatch gives its machines their instances")
	}
	if c.Work > 0 && (os.Getenv("GPUMARKET_ADMIN_EMAIL") == "" || os.Getenv("GPUMARKET_ADMIN_PASSWORD") == "") {
		return usagef("--work needs an admin for the renters' deposits: set GPUMARKET_ADMIN_EMAIL and GPUMARKET_ADMIN_PASSWORD")
	}
	if c.Dispatch > 16*c.DispatchAgents {
		return usagef("--dispatch %d needs at least %d --dispatch-agents (16 GPUs each)", c.Dispatch, (c.Dispatch+15)/16)
	}
	if c.Dispatch > 0 {
		// The renters create for the dispatch (one per creator), and run
		// no search-create-stop loop of their own.
		c.Renters = max(c.Renters, c.Creators)
	}
	if c.Storm < 0 || c.Kill < 0 || c.Kill > 100 || c.Detect <= 0 {
		return usagef("--storm must not be negative, --kill must be a percentage from 0 to 100, --detect positive")
	}
	base, err := env.Coordinator()
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     c.Conns,
		MaxIdleConnsPerHost: c.Conns,
		IdleConnTimeout:     90 * time.Second,
	}}
	stats := newLoadStats()
	// The progress line and the phases print from different goroutines.
	out := &lockedWriter{w: env.Stdout}
	run := market.NewID("")

	// A host account for all machines, one API key for all agents.
	host, err := loadtestAccount(ctx, base, hc, "loadtest-host-"+run+"@example.com", market.RoleHost)
	if err != nil {
		return err
	}
	registrar := host.WithHTTPClient(&http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     c.Conns,
		MaxIdleConnsPerHost: c.Conns,
		IdleConnTimeout:     90 * time.Second,
	}})
	fmt.Fprintf(out, "registering %d machines (%d at a time) at %s\n", c.Agents, c.Register, base)
	machines := make([]market.MachineID, c.Agents)
	regStart := time.Now()
	var next, regCount atomic.Int64
	var regErr error
	var regMu sync.Mutex
	var wg sync.WaitGroup
	// A registered agent heartbeats at once, as a real one does, while the
	// others still register: registering 100,000 takes minutes, longer
	// than the lost deadline.
	registered := make([]atomic.Bool, c.Agents)
	lastSent := make([]atomic.Int64, c.Agents) // unix nanos of the last timed heartbeat (or storm registration)
	silence := make([]atomic.Int64, c.Agents)  // nanos: the longest time between two of those
	stopKeep := sync.OnceFunc(c.keepAlive(ctx, host, machines, registered, lastSent, stats))
	defer stopKeep()
	for range c.Register {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= c.Agents || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				m, err := registrar.Register(ctx, c.hardware(run, i))
				if err == nil {
					price := market.Money(400_000 + 1000*int64(i%200))
					_, err = registrar.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price})
				}
				if err == nil {
					_, err = host.ListMachine(ctx, m.ID)
				}
				stats.record("register", t0, err)
				if err != nil {
					regMu.Lock()
					regErr = errors.Join(regErr, fmt.Errorf("register agent %d: %w", i, err))
					regMu.Unlock()
					return
				}
				machines[i] = m.ID
				registered[i].Store(true)
				regCount.Add(1)
			}
		})
	}
	// A progress line every 5 s: 100,000 registrations take minutes.
	regDone := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-regDone:
				return
			case <-t.C:
				n := regCount.Load()
				fmt.Fprintf(out, "  %5.0fs  registered %d of %d (%.0f/s)\n", time.Since(regStart).Seconds(), n, c.Agents, float64(n)/time.Since(regStart).Seconds())
			}
		}
	}()
	wg.Wait()
	close(regDone)
	if regErr != nil {
		return regErr
	}
	fmt.Fprintf(out, "registered %d machines in %s (%.0f/s)\n", c.Agents, time.Since(regStart).Round(time.Millisecond), float64(c.Agents)/time.Since(regStart).Seconds())

	renters, err := c.renters(ctx, env, base, hc, run)
	if err != nil {
		return err
	}
	// What each agent's heartbeat reports: nothing, or its work.
	reports := make([]market.Report, c.Agents)
	if c.Work > 0 {
		if reports, err = c.giveWork(ctx, env, out, base, hc, run, host, machines); err != nil {
			return err
		}
	}

	cpu0, cpuErr := procCPU(c.PID)
	wall0 := time.Now()
	// Heartbeats run until every phase is over; the timed run is the first
	// Duration of them.
	hbCtx, stopBeats := context.WithCancel(ctx)
	defer stopBeats()
	runCtx, stop := context.WithTimeout(hbCtx, c.Duration)
	defer stop()
	var late atomic.Int64
	killed := make([]atomic.Bool, len(machines))
	work := make(chan int, c.Conns*4)
	var workers, beaters sync.WaitGroup
	for range c.Conns * 2 {
		beaters.Go(func() {
			for i := range work {
				t0 := time.Now()
				res, err := host.Report(hbCtx, machines[i], reports[i])
				if hbCtx.Err() != nil {
					return
				}
				if err == nil && len(res.Rejected) > 0 {
					err = fmt.Errorf("instance reports rejected: %v", res.Rejected)
				}
				contact(&lastSent[i], &silence[i], t0.UnixNano())
				stats.record("heartbeat", t0, err)
			}
		})
	}
	// The scheduler: agent i beats at start + k*Heartbeat + i*Heartbeat/N.
	// Until its first timed heartbeat, keepAlive goes on beating it, so
	// that no agent falls silent at the switch; it stops after the first
	// round.
	beaters.Go(func() {
		defer close(work)
		start := time.Now()
		gap := c.Heartbeat / time.Duration(c.Agents)
		for k := 0; ; k++ {
			if k == 1 {
				go stopKeep() // it waits for a send that may wait for this loop
			}
			for i := range machines {
				if killed[i].Load() {
					continue
				}
				due := start.Add(time.Duration(k)*c.Heartbeat + time.Duration(i)*gap)
				if d := time.Until(due); d > time.Millisecond {
					select {
					case <-hbCtx.Done():
						return
					case <-time.After(d):
					}
				} else if d < -time.Second {
					late.Add(1)
				}
				select {
				case <-hbCtx.Done():
					return
				case work <- i:
				}
			}
		}
	})
	var dispatchErr error
	if c.Dispatch > 0 {
		dispatchErr = c.dispatch(hbCtx, out, host, renters, machines[:c.DispatchAgents], stats)
	} else {
		for i, r := range renters {
			workers.Go(func() { c.renter(runCtx, r, stats, i) })
		}
	}

	// Progress, every second, until every phase is over.
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		prev := stats.snapshot()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-tick.C:
			}
			cur := stats.snapshot()
			line := fmt.Sprintf("%5.0fs", time.Since(wall0).Seconds())
			for _, k := range []string{"heartbeat", "search", "create", "reconnect"} {
				d := cur[k].minus(prev[k])
				if d.n == 0 && cur[k].n == 0 {
					continue
				}
				line += fmt.Sprintf("  %s %5d/s p99 %s err %d", k, d.n, fmtDur(d.quantile(0.99)), cur[k].errs)
			}
			line += fmt.Sprintf("  late %d", late.Load())
			fmt.Fprintln(out, line)
			prev = cur
		}
	}()
	<-runCtx.Done()
	workers.Wait()
	wall := time.Since(wall0)
	cpu1, _ := procCPU(c.PID)
	final := stats.snapshot()
	lateRun := late.Load()
	rssRun, rssErr := procRSS(c.PID)

	phaseErr := dispatchErr
	if c.Storm > 0 && ctx.Err() == nil {
		c.storm(ctx, out, registrar, run, machines, lastSent, silence, stats)
	}
	if c.Kill > 0 && ctx.Err() == nil {
		phaseErr = errors.Join(phaseErr, c.killSome(ctx, out, host, machines, killed, lastSent, silence))
	}
	stopBeats()
	<-progressDone
	beaters.Wait()

	fmt.Fprintf(out, "\ntimed run of %s:\n%-10s %9s %7s %9s %9s %9s %9s\n", c.Duration, "call", "count", "errors", "per s", "p50", "p99", "max")
	for _, k := range callKinds {
		s := final[k]
		if s.n == 0 {
			continue
		}
		secs := wall.Seconds()
		if k == "register" {
			secs = 0 // not part of the timed run
		}
		rate := "-"
		if secs > 0 {
			rate = strconv.FormatFloat(float64(s.n)/secs, 'f', 0, 64)
		}
		fmt.Fprintf(out, "%-10s %9d %7d %9s %9s %9s %9s\n", k, s.n, s.errs, rate, fmtDur(s.quantile(0.5)), fmtDur(s.quantile(0.99)), fmtDur(s.max))
	}
	for _, k := range callKinds {
		if e := final[k].lastErr; e != "" {
			fmt.Fprintf(out, "last %s error: %s\n", k, e)
		}
	}
	fmt.Fprintf(out, "heartbeats sent more than 1 s late: %d\n", lateRun)
	if c.PID > 0 {
		if cpuErr != nil {
			fmt.Fprintf(out, "coordinator CPU: %v\n", cpuErr)
		} else {
			fmt.Fprintf(out, "coordinator CPU: %.2f cores over the run (%.1f s CPU in %.1f s)\n", (cpu1-cpu0)/wall.Seconds(), cpu1-cpu0, wall.Seconds())
		}
		if rssErr == nil {
			fmt.Fprintf(out, "coordinator resident memory: %d MiB\n", rssRun>>20)
		}
	}

	// Every simulated machine that was not killed heartbeated all along:
	// none may be offline.
	ms, err := host.Machines(ctx, false)
	if err != nil {
		return fmt.Errorf("list machines after the run: %w", err)
	}
	isKilled := map[market.MachineID]bool{}
	for i, id := range machines {
		isKilled[id] = killed[i].Load()
	}
	offline := 0
	for _, m := range ms {
		if !m.Online && !isKilled[m.ID] {
			offline++
		}
	}
	fmt.Fprintf(out, "machines offline after the run, not killed: %d of %d (want 0)\n", offline, len(ms))
	if offline > 0 {
		return errors.Join(phaseErr, fmt.Errorf("%d simulated machines went offline though they heartbeated", offline))
	}
	return phaseErr
}

// storm makes every agent register again within c.Storm, at random
// moments, as agents do when they reconnect after a coordinator restart.
func (c *loadtestCmd) storm(ctx context.Context, out io.Writer, host *apiclient.Client, run string, machines []market.MachineID, lastSent, silence []atomic.Int64, stats *loadStats) {
	fmt.Fprintf(out, "reconnect storm: %d agents register again within %s\n", len(machines), c.Storm)
	rng := rand.New(rand.NewPCG(uint64(len(machines)), 11))
	at := make([]time.Duration, len(machines))
	for i := range at {
		at[i] = time.Duration(rng.Int64N(int64(c.Storm)))
	}
	order := make([]int, len(machines))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(at[a], at[b]) })
	start := time.Now()
	jobs := make(chan int, c.Conns)
	var wg sync.WaitGroup
	for range c.Conns * 2 {
		wg.Go(func() {
			for i := range jobs {
				t0 := time.Now()
				_, err := host.Register(ctx, c.hardware(run, i))
				stats.record("reconnect", t0, err)
				if err == nil {
					// A registration counts as a heartbeat: detection
					// times run from the later of the two.
					contact(&lastSent[i], &silence[i], t0.UnixNano())
				}
			}
		})
	}
	for _, i := range order {
		if d := time.Until(start.Add(at[i])); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		select {
		case <-ctx.Done():
		case jobs <- i:
		}
	}
	close(jobs)
	wg.Wait()
	r := stats.snapshot()["reconnect"]
	fmt.Fprintf(out, "reconnect storm: %d registrations in %s (asked within %s), p50 %s p99 %s max %s, %d errors\n",
		r.n, time.Since(start).Round(time.Millisecond), c.Storm, fmtDur(r.quantile(0.5)), fmtDur(r.quantile(0.99)), fmtDur(r.max), r.errs)
	if r.lastErr != "" {
		fmt.Fprintf(out, "last reconnect error: %s\n", r.lastErr)
	}
}

// killSome stops the heartbeats of c.Kill percent of the agents and
// watches the host's events until each of their machines went offline,
// printing the time from each one's last heartbeat to its offline event.
// Any other machine taken offline, and a killed one taken offline before
// the kill, is a false positive, unless this tool itself left it silent
// for the coordinator's whole lost deadline (its scheduler starved of CPU
// on a machine it shares with the coordinator): those are counted apart.
func (c *loadtestCmd) killSome(ctx context.Context, out io.Writer, host *apiclient.Client, machines []market.MachineID, killed []atomic.Bool, lastSent, silence []atomic.Int64) error {
	var lostAfter time.Duration
	if ds, err := host.Desired(ctx, machines[0], 0, 0); err == nil {
		lostAfter = time.Duration(ds.LostAfterSeconds) * time.Second
	}
	index := make(map[market.MachineID]int, len(machines))
	for i, m := range machines {
		index[m] = i
	}
	n := max(1, int(float64(len(machines))*c.Kill/100))
	victims := map[market.MachineID]int{}
	// Spread the victims over the heartbeat schedule.
	for k := range n {
		i := k * len(machines) / n
		killed[i].Store(true)
		victims[machines[i]] = i
	}
	killedAt := time.Now()
	fmt.Fprintf(out, "killed %d agents (%.1f%%); waiting up to %s for their machines to go offline\n", n, c.Kill, c.Detect)
	detected := map[market.MachineID]time.Duration{}
	falsePos := map[market.MachineID]bool{}
	var lastSeq int64
	deadline := time.Now().Add(c.Detect)
	for len(detected) < n && time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		evs, err := host.Events(ctx, apiclient.EventQuery{Limit: 1000})
		if err != nil {
			fmt.Fprintf(out, "events: %v\n", err)
			continue
		}
		top := lastSeq
		for _, e := range evs { // newest first
			if e.Seq <= lastSeq {
				break
			}
			top = max(top, e.Seq)
			if e.Type != "machine.offline" || e.At.Before(killedAt.Add(-time.Minute)) {
				continue
			}
			i, ok := victims[e.Machine]
			if !ok || e.At.Before(killedAt) {
				falsePos[e.Machine] = true
				continue
			}
			if _, seen := detected[e.Machine]; !seen {
				detected[e.Machine] = e.At.Sub(time.Unix(0, lastSent[i].Load()))
			}
		}
		lastSeq = top
		fmt.Fprintf(out, "%5.0fs after the kill: %d of %d offline, %d false positives\n", time.Since(killedAt).Seconds(), len(detected), n, len(falsePos))
	}
	ds := slices.Sorted(maps.Values(detected))
	if len(ds) > 0 {
		fmt.Fprintf(out, "detection (last heartbeat to offline): min %s p50 %s max %s; all detected %s after the kill\n",
			fmtDur(ds[0]), fmtDur(ds[len(ds)/2]), fmtDur(ds[len(ds)-1]), time.Since(killedAt).Round(time.Second))
	}
	var errs []error
	if len(detected) < n {
		errs = append(errs, fmt.Errorf("%d of %d killed agents' machines still online after %s", n-len(detected), n, c.Detect))
	}
	var wrong, toolSilent int
	var longest time.Duration
	for m := range falsePos {
		if d := time.Duration(silence[index[m]].Load()); lostAfter > 0 && d >= lostAfter {
			toolSilent++
			longest = max(longest, d)
		} else {
			wrong++
		}
	}
	if toolSilent > 0 {
		fmt.Fprintf(out, "%d of the machines taken offline were left silent by this tool for the lost deadline (%s) or longer (up to %s): its own lateness, not the coordinator's mistake\n",
			toolSilent, lostAfter, longest.Round(time.Millisecond))
	}
	if wrong > 0 && lostAfter == 0 {
		errs = append(errs, fmt.Errorf("%d machines that kept heartbeating were taken offline (the coordinator's lost deadline could not be read, so the tool's own silences are not told apart)", wrong))
	} else if wrong > 0 {
		errs = append(errs, fmt.Errorf("%d machines that kept heartbeating within the lost deadline (%s) were taken offline", wrong, lostAfter))
	}
	return errors.Join(errs...)
}

// keepAlive heartbeats every registered agent's machine once per heartbeat
// period (checked each second) until its first timed heartbeat or until
// the returned function is called (and has waited for the heartbeats in
// flight), as a real agent beats from the moment it registers. Its calls
// count as "keepalive".
func (c *loadtestCmd) keepAlive(ctx context.Context, host *apiclient.Client, machines []market.MachineID, registered []atomic.Bool, timed []atomic.Int64, stats *loadStats) func() {
	ctx, cancel := context.WithCancel(ctx)
	work := make(chan int, c.Conns)
	var wg sync.WaitGroup
	for range c.Conns {
		wg.Go(func() {
			for i := range work {
				t0 := time.Now()
				_, err := host.Report(ctx, machines[i], market.Report{})
				if ctx.Err() != nil {
					return
				}
				stats.record("keepalive", t0, err)
			}
		})
	}
	wg.Go(func() {
		defer close(work)
		last := make([]time.Time, len(machines))
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for i := range machines {
				if !registered[i].Load() || timed[i].Load() != 0 {
					continue // not registered yet, or beating on the timed schedule
				}
				now := time.Now()
				if last[i].IsZero() {
					last[i] = now // it just registered: that was its heartbeat
					continue
				}
				if now.Sub(last[i]) < c.Heartbeat {
					continue
				}
				last[i] = now
				select {
				case <-ctx.Done():
					return
				case work <- i:
				}
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// loadtestAccount signs up an account and returns a client with its key.
func loadtestAccount(ctx context.Context, base string, hc *http.Client, email string, roles ...market.Role) (*apiclient.Client, error) {
	const password = "loadtest-password"
	anon := apiclient.New(base, "", hc)
	if _, err := anon.Signup(ctx, market.SignupRequest{Email: email, Password: password, Roles: roles}); err != nil {
		return nil, fmt.Errorf("sign up %s: %w", email, err)
	}
	res, err := anon.Login(ctx, market.LoginRequest{Email: email, Password: password})
	if err != nil {
		return nil, fmt.Errorf("log in %s: %w", email, err)
	}
	return apiclient.New(base, res.Key.Secret, hc), nil
}

// renters signs up the simulated renters and funds them when an admin's
// credentials are in the environment.
func (c *loadtestCmd) renters(ctx context.Context, env *Env, base string, hc *http.Client, run string) ([]*apiclient.Client, error) {
	if c.Renters <= 0 {
		return nil, nil
	}
	amount, err := market.ParseMoney(c.Deposit)
	if err != nil {
		return nil, usagef("--deposit: %v", err)
	}
	return c.rentersOf(ctx, env, base, hc, run, c.Renters, amount)
}

// rentersOf signs up n renters and deposits amount for each when an
// admin is given (none, and no renter, without).
func (c *loadtestCmd) rentersOf(ctx context.Context, env *Env, base string, hc *http.Client, run string, n int, amount market.Money) ([]*apiclient.Client, error) {
	var admin *apiclient.Client
	if email, pw := os.Getenv("GPUMARKET_ADMIN_EMAIL"), os.Getenv("GPUMARKET_ADMIN_PASSWORD"); email != "" && pw != "" {
		res, err := apiclient.New(base, "", hc).Login(ctx, market.LoginRequest{Email: email, Password: pw})
		if err != nil {
			return nil, fmt.Errorf("log in admin %s: %w", email, err)
		}
		admin = apiclient.New(base, res.Key.Secret, hc)
	} else {
		fmt.Fprintln(env.Stderr, "no GPUMARKET_ADMIN_EMAIL/PASSWORD: renters get no deposit, and their creates fail for lack of funds")
	}
	var rs []*apiclient.Client
	for i := range n {
		email := fmt.Sprintf("loadtest-renter-%s-%d@example.com", run, i)
		r, err := loadtestAccount(ctx, base, hc, email, market.RoleRenter)
		if err != nil {
			return nil, err
		}
		if admin != nil {
			if _, err := admin.Deposit(ctx, market.DepositRequest{Email: email, Amount: amount, Memo: "loadtest"}, "loadtest-"+email); err != nil {
				return nil, fmt.Errorf("deposit for %s: %w", email, err)
			}
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// giveWork gives every machine c.Work running one-GPU instances, created
// by renters of its own and acknowledged by the machine's agent, and
// returns each machine's heartbeat report of them.
func (c *loadtestCmd) giveWork(ctx context.Context, env *Env, out io.Writer, base string, hc *http.Client, run string,
	host *apiclient.Client, machines []market.MachineID) ([]market.Report, error) {
	n := len(machines) * c.Work
	// An hour of one GPU holds at most 0.60 in escrow: 1 token per
	// instance covers it, over 16 renters.
	const workRenters = 16
	renters, err := c.rentersOf(ctx, env, base, hc, run+"-work", workRenters, market.Tokens(int64(n/workRenters+100)))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "giving %d machines %d running instance(s) each\n", len(machines), c.Work)
	start := time.Now()
	reports := make([]market.Report, len(machines))
	var next, done atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range c.Register {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(machines) || ctx.Err() != nil {
					return
				}
				var rep market.Report
				var err error
				for w := range c.Work {
					var inst market.Instance
					inst, err = renters[(i*c.Work+w)%len(renters)].CreateInstance(ctx, market.CreateInstanceRequest{Machine: machines[i], GPUs: 1, Command: []string{"sleep", "infinity"}})
					if err != nil {
						break
					}
					rep.Instances = append(rep.Instances, market.InstanceReport{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning})
				}
				if err == nil {
					var res market.ReportResult
					if res, err = host.Report(ctx, machines[i], rep); err == nil && len(res.Rejected) > 0 {
						err = fmt.Errorf("acknowledgements rejected: %v", res.Rejected)
					}
				}
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, fmt.Errorf("give machine %s its work: %w", machines[i], err))
					mu.Unlock()
					return
				}
				reports[i] = rep
				if k := done.Add(1); k%10_000 == 0 {
					fmt.Fprintf(out, "  %5.0fs  %d of %d machines running their work\n", time.Since(start).Seconds(), k, len(machines))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	fmt.Fprintf(out, "gave %d machines their work in %s (%.0f instances/s)\n", len(machines), time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())
	return reports, nil
}

// renter searches offers, rents one GPU of a random one and stops it, in a
// loop, until ctx ends.
func (c *loadtestCmd) renter(ctx context.Context, r *apiclient.Client, stats *loadStats, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	for ctx.Err() == nil {
		t0 := time.Now()
		offers, err := r.Offers(ctx, market.OfferFilter{Query: "num_gpus>=1", Limit: 20})
		if ctx.Err() != nil {
			return
		}
		stats.record("search", t0, err)
		if err != nil || len(offers) == 0 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		o := offers[rng.IntN(len(offers))]
		t0 = time.Now()
		inst, err := r.CreateInstance(ctx, market.CreateInstanceRequest{Machine: o.Machine, GPUs: 1, Command: []string{"sleep", "1"}})
		if ctx.Err() != nil {
			return
		}
		stats.record("create", t0, err)
		if err != nil {
			continue
		}
		t0 = time.Now()
		_, err = r.StopInstance(ctx, inst.ID)
		if ctx.Err() != nil {
			return
		}
		stats.record("stop", t0, err)
	}
}

// hardware is simulated agent i's machine: two RTX 4090s, or sixteen for
// the agents that take part in --dispatch.
func (c *loadtestCmd) hardware(run string, i int) market.Hardware {
	fp := fmt.Sprintf("loadtest-%s-%d", run, i)
	hw := market.Hardware{Fingerprint: fp, Hostname: fp, Runner: "process", CPUCores: 32, RAMMiB: 128 << 10, DiskGiB: 1000, Region: "eu"}
	gpus := 2
	if c.Dispatch > 0 && i < c.DispatchAgents {
		gpus = 16
	}
	for g := range gpus {
		hw.GPUs = append(hw.GPUs, market.GPU{Index: g, UUID: gpuUUID(fp, g), Model: "RTX 4090", VRAMMiB: 24564, MinPowerW: 150, DefaultPowerW: 450, MaxPowerW: 600})
	}
	return hw
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// contact records that an agent reached the coordinator at t (unix nanos):
// its last contact, and the longest time between two.
func contact(last, longest *atomic.Int64, t int64) {
	for prev := last.Load(); prev < t; prev = last.Load() {
		if last.CompareAndSwap(prev, t) {
			if prev != 0 {
				storeLater(longest, t-prev)
			}
			return
		}
	}
}

// storeLater sets a to v unless it holds a later value.
func storeLater(a *atomic.Int64, v int64) {
	for prev := a.Load(); prev < v && !a.CompareAndSwap(prev, v); prev = a.Load() {
	}
}

// gpuUUID is a UUID for GPU g of the machine with fingerprint fp, random
// looking as NVIDIA's are: consecutive ones would all land in the same
// index pages and make concurrent registrations collide on Postgres
// (SERIALIZABLE locks index pages, not keys) far more than real ones do.
func gpuUUID(fp string, g int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", fp, g))
	x := hex.EncodeToString(h[:16])
	return "GPU-" + x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

// dispatch runs the agent protocol for machines (long-poll, acknowledge
// each new assignment with a running report) and creates c.Dispatch
// one-GPU instances on them through renters, c.Creators at a time. It
// prints creates per second and the latencies from a create's request
// and from its response to the agent's acknowledgement.
func (c *loadtestCmd) dispatch(ctx context.Context, out io.Writer, host *apiclient.Client, renters []*apiclient.Client, machines []market.MachineID, stats *loadStats) error {
	fmt.Fprintf(out, "dispatch: %d creates over %d agents' machines, %d in flight\n", c.Dispatch, len(machines), c.Creators)
	// Long polls hold a connection each: a transport of their own.
	agentHC := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: len(machines) + 16,
		IdleConnTimeout:     90 * time.Second,
	}}
	agentAPI := host.WithHTTPClient(agentHC)
	type times struct{ sent, returned, acked time.Time }
	var mu sync.Mutex
	seen := map[market.InstanceID]*times{}
	acks := make(chan struct{}, c.Dispatch)
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	var polls sync.WaitGroup
	var pollErrs atomic.Int64
	for _, id := range machines {
		polls.Go(func() {
			var version int64
			acked := map[market.InstanceID]bool{}
			for pollCtx.Err() == nil {
				ds, err := agentAPI.Desired(pollCtx, id, version, 30*time.Second)
				if err != nil {
					if pollCtx.Err() == nil {
						pollErrs.Add(1)
						time.Sleep(100 * time.Millisecond)
					}
					continue
				}
				version = ds.Version
				var rep market.Report
				for _, a := range ds.Assignments {
					if a.Desired == market.DesiredRun && !acked[a.Instance] {
						rep.Instances = append(rep.Instances, market.InstanceReport{Instance: a.Instance, Generation: a.Generation, State: market.ObservedRunning})
					}
				}
				if len(rep.Instances) == 0 {
					continue
				}
				if _, err := agentAPI.Report(pollCtx, id, rep); err != nil {
					pollErrs.Add(1)
					continue
				}
				now := time.Now()
				mu.Lock()
				for _, r := range rep.Instances {
					acked[r.Instance] = true
					t := seen[r.Instance]
					if t == nil {
						t = &times{}
						seen[r.Instance] = t
					}
					t.acked = now
				}
				mu.Unlock()
				for range rep.Instances {
					acks <- struct{}{}
				}
			}
		})
	}
	time.Sleep(time.Second) // the long polls are in place

	start := time.Now()
	var next atomic.Int64
	var createErrs atomic.Int64
	var lastErr atomic.Value
	var creators sync.WaitGroup
	for w := range c.Creators {
		renter := renters[w%len(renters)]
		creators.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1)) - 1
				if k >= c.Dispatch {
					return
				}
				t0 := time.Now()
				inst, err := renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: machines[k%len(machines)], GPUs: 1, Command: []string{"sleep", "3600"}})
				t1 := time.Now()
				stats.record("create", t0, err)
				if err != nil {
					createErrs.Add(1)
					lastErr.Store(err.Error())
					acks <- struct{}{} // nothing to wait for
					continue
				}
				mu.Lock()
				t := seen[inst.ID]
				if t == nil {
					t = &times{}
					seen[inst.ID] = t
				}
				t.sent, t.returned = t0, t1
				mu.Unlock()
			}
		})
	}
	timeout := time.After(2 * time.Minute)
	for k := 0; k < c.Dispatch; k++ {
		select {
		case <-acks:
		case <-timeout:
			return fmt.Errorf("dispatch: only %d of %d creates acknowledged within 2 minutes", k, c.Dispatch)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	wall := time.Since(start)
	creators.Wait()
	stopPolls()
	polls.Wait()

	var fromSent, fromReturn, create []time.Duration
	mu.Lock()
	for _, t := range seen {
		if t.sent.IsZero() || t.acked.IsZero() {
			continue
		}
		create = append(create, t.returned.Sub(t.sent))
		fromSent = append(fromSent, t.acked.Sub(t.sent))
		fromReturn = append(fromReturn, max(0, t.acked.Sub(t.returned))) // the ack may come first
	}
	mu.Unlock()
	q := func(ds []time.Duration, p float64) string {
		if len(ds) == 0 {
			return "-"
		}
		slices.Sort(ds)
		return fmtDur(ds[min(len(ds)-1, int(float64(len(ds))*p))])
	}
	fmt.Fprintf(out, "dispatch: %d creates acknowledged in %s: %.0f creates/s; %d create errors, %d agent errors\n",
		len(fromSent), wall.Round(time.Millisecond), float64(len(fromSent))/wall.Seconds(), createErrs.Load(), pollErrs.Load())
	fmt.Fprintf(out, "dispatch: create call p50 %s p99 %s; create response to ack p50 %s p99 %s; create request to ack p50 %s p99 %s\n",
		q(create, 0.5), q(create, 0.99), q(fromReturn, 0.5), q(fromReturn, 0.99), q(fromSent, 0.5), q(fromSent, 0.99))
	if e, ok := lastErr.Load().(string); ok {
		fmt.Fprintf(out, "last create error: %s\n", e)
		return fmt.Errorf("dispatch: %d of %d creates failed", createErrs.Load(), c.Dispatch)
	}
	return nil
}

// Latency histogram: buckets growing by 5% from 10 µs, enough for a p99
// within a few percent; counters are atomic so recording does not lock.
const (
	histMin    = 10 * time.Microsecond
	histGrowth = 1.05
	histN      = 400
)

type loadStats struct {
	kinds map[string]*kindStats
}

type kindStats struct {
	n, errs atomic.Int64
	max     atomic.Int64
	buckets [histN]atomic.Int64
	mu      sync.Mutex
	lastErr string
}

func newLoadStats() *loadStats {
	s := &loadStats{kinds: map[string]*kindStats{}}
	for _, k := range callKinds {
		s.kinds[k] = &kindStats{}
	}
	return s
}

func bucketOf(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	b := int(math.Log(float64(d)/float64(histMin))/math.Log(histGrowth)) + 1
	return min(b, histN-1)
}

func bucketTop(b int) time.Duration {
	return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(b)))
}

func (s *loadStats) record(kind string, start time.Time, err error) {
	d := time.Since(start)
	k := s.kinds[kind]
	k.n.Add(1)
	k.buckets[bucketOf(d)].Add(1)
	for {
		m := k.max.Load()
		if int64(d) <= m || k.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	if err != nil {
		k.errs.Add(1)
		k.mu.Lock()
		k.lastErr = err.Error()
		k.mu.Unlock()
	}
}

// kindSnap is a copy of one kind's counters.
type kindSnap struct {
	n, errs int64
	max     time.Duration
	buckets [histN]int64
	lastErr string
}

func (s *loadStats) snapshot() map[string]kindSnap {
	out := map[string]kindSnap{}
	for name, k := range s.kinds {
		var c kindSnap
		c.n, c.errs, c.max = k.n.Load(), k.errs.Load(), time.Duration(k.max.Load())
		for i := range k.buckets {
			c.buckets[i] = k.buckets[i].Load()
		}
		k.mu.Lock()
		c.lastErr = k.lastErr
		k.mu.Unlock()
		out[name] = c
	}
	return out
}

// minus is what happened between prev and s.
func (s kindSnap) minus(prev kindSnap) kindSnap {
	d := kindSnap{n: s.n - prev.n, errs: s.errs - prev.errs}
	for i := range s.buckets {
		d.buckets[i] = s.buckets[i] - prev.buckets[i]
	}
	return d
}

// quantile returns the upper edge of the bucket holding quantile q.
func (s kindSnap) quantile(q float64) time.Duration {
	var total int64
	for _, c := range s.buckets {
		total += c
	}
	if total == 0 {
		return 0
	}
	want := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i, c := range s.buckets {
		seen += c
		if seen >= want {
			return bucketTop(i)
		}
	}
	return bucketTop(histN - 1)
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// procCPU returns the user+system CPU seconds of process pid (Linux /proc).
func procCPU(pid int) (float64, error) {
	if pid <= 0 {
		return 0, errors.New("no --coordinator-pid")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the coordinator's CPU time: %w", err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th of the whole line, in clock ticks (100 per s on
	// Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	return (ut + st) / 100, nil
}

// procRSS returns the resident memory of process pid in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/status")
}
