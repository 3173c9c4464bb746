// Package agent is the host loop: it registers the machine with the
// coordinator, long-polls its desired state, reconciles the workloads a
// Runner runs against it, and reports what it observes.
//
// It imports only internal/market and, for the verification challenge's
// reference solver, internal/verify; the coordinator client and the runner
// are passed in through the interfaces declared here.
package agent

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// Coordinator is the agent's view of the coordinator's agent API.
type Coordinator interface {
	Register(ctx context.Context, hw market.Hardware) (market.Machine, error)
	// Desired returns at once when the machine's desired-state version
	// differs from sinceVersion, else after up to wait.
	Desired(ctx context.Context, id market.MachineID, sinceVersion int64, wait time.Duration) (market.DesiredState, error)
	Report(ctx context.Context, id market.MachineID, r market.Report) (market.ReportResult, error)
}

// Runner runs workloads on the host. Instances are keyed by InstanceID.
// A Runner may also have Adopted (see adopter), to learn the assignment of
// a running instance this agent may not have started (one found from
// before a restart), and ResetGPUs (see gpuResetter), for the GPUs such
// instances may have left settings on.
type Runner interface {
	// Start runs an assignment. Starting an instance that runs is a no-op;
	// one that cannot start must show up in List as failed.
	Start(ctx context.Context, a market.Assignment) error
	// Stop asks the instance to end, kills it after grace, and returns when
	// it has ended. Stopping an unknown or finished instance is not an error.
	Stop(ctx context.Context, id market.InstanceID, grace time.Duration) error
	// List returns every instance the runner knows, running or finished,
	// including those found from before a restart.
	List(ctx context.Context) ([]market.InstanceReport, error)
	// Drain returns the output produced since the last Drain.
	Drain(ctx context.Context) ([]market.LogChunk, error)
	// Forget drops a finished instance and its files.
	Forget(ctx context.Context, id market.InstanceID) error
}

// Sampler reads the current metrics of the machine's GPUs; each report
// carries one reading per GPU.
type Sampler interface {
	Sample(ctx context.Context) ([]market.GPUSample, error)
}

// Clock is the agent's source of time.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// adopter is a Runner that wants to know the assignments of workloads it
// found running rather than started. It may be told more than once.
type adopter interface {
	Adopted(a market.Assignment)
}

// gpuResetter is a Runner that can return GPUs to their default power limit
// and clocks (one wrapped by WithGPUControl).
type gpuResetter interface {
	ResetGPUs(ctx context.Context, uuids []string) error
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures an Agent. Zero durations take the defaults noted.
type Config struct {
	Hardware    market.Hardware
	Coordinator Coordinator
	Runner      Runner
	Logger      *slog.Logger // nil discards
	Clock       Clock        // nil is the system clock
	Sampler     Sampler      // nil sends no GPU metrics
	// Queue gives each workload $GPUMARKET_QUEUE_URL to report its queue
	// length to, forwarded in reports (queue.go); nil: none.
	Queue *QueueServer
	// Solver answers verification challenges (challenge.go); nil is the
	// CPU solver.
	Solver verify.Solver
	// LeaveRunning leaves the workloads running when Run returns, for the
	// next agent on this host to adopt through its Runner (containers
	// outlive the agent); false stops each with its grace. Either way,
	// stops already under way finish first.
	LeaveRunning bool

	HeartbeatInterval time.Duration // longest time between reports; default 10s
	PollWait          time.Duration // long-poll wait; default 30s
	ReconcileInterval time.Duration // how often the runner is checked between polls; default 1s
	RetryMin          time.Duration // first backoff after a failed call; default 1s
	RetryMax          time.Duration // longest backoff; default 30s
	CallTimeout       time.Duration // limit of one Register or Report call; default 15s
	DefaultGrace      time.Duration // grace for instances with no known assignment; default 10s
	ShutdownReport    time.Duration // how long the final report may take; default 2s
}

// DefaultLostAfter is the coordinator's lost-host deadline assumed until a
// desired state says otherwise.
const DefaultLostAfter = 60 * time.Second

// maxPendingLogs bounds logs kept while the coordinator is unreachable.
const maxPendingLogs = 4 << 20

// Agent is the host loop. Create it with New and run it with Run.
type Agent struct {
	cfg Config
	log *slog.Logger
	clk Clock
}

// New returns an agent; it does nothing until Run.
func New(cfg Config) *Agent {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HeartbeatInterval, 10*time.Second)
	def(&cfg.PollWait, 30*time.Second)
	def(&cfg.ReconcileInterval, time.Second)
	def(&cfg.RetryMin, time.Second)
	def(&cfg.RetryMax, 30*time.Second)
	def(&cfg.CallTimeout, 15*time.Second)
	def(&cfg.DefaultGrace, 10*time.Second)
	def(&cfg.ShutdownReport, 2*time.Second)
	a := &Agent{cfg: cfg, log: cfg.Logger, clk: cfg.Clock}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.clk == nil {
		a.clk = systemClock{}
	}
	return a
}

// loop is the state of one Run, owned by its goroutine.
type loop struct {
	*Agent
	machine market.MachineID

	haveDesired bool
	version     int64
	desired     map[market.InstanceID]market.Assignment
	grace       map[market.InstanceID]time.Duration // last known grace per instance
	gpus        map[market.InstanceID][]int         // last known GPU indices per instance
	lostAfter   time.Duration
	lastContact time.Time // when the last call the coordinator counts as a heartbeat was sent
	selfStopped bool      // stopped everything for lack of contact
	reconciled  bool      // reconcile has listed the runner once
	// resetIdle: the runner listed workloads from before this agent, whose
	// GPU settings it may never learn; the GPUs nothing runs on are reset
	// once no workload whose GPUs are unknown runs.
	resetIdle bool

	started    map[market.InstanceID]bool // started by us, not yet reported as starting
	stopping   map[market.InstanceID]bool
	stopDone   chan market.InstanceID
	reported   map[market.InstanceID]market.InstanceReport // last report accepted or rejected
	pending    []market.LogChunk
	pendingLen int
	lastReport time.Time // last report that reached the coordinator

	challenges *challenger // answers verification checks (challenge.go)

	health prober // deployment replicas' health checks (health.go)
}

// Run registers the machine and reconciles until ctx ends. Then it stops
// every workload with its grace (or, with LeaveRunning, leaves them
// running), sends a last report if it can within ShutdownReport, and
// returns nil.
func (a *Agent) Run(ctx context.Context) error {
	l := &loop{
		Agent:     a,
		desired:   map[market.InstanceID]market.Assignment{},
		grace:     map[market.InstanceID]time.Duration{},
		gpus:      map[market.InstanceID][]int{},
		lostAfter: DefaultLostAfter,
		started:   map[market.InstanceID]bool{},
		stopping:  map[market.InstanceID]bool{},
		stopDone:  make(chan market.InstanceID, 1),
		reported:  map[market.InstanceID]market.InstanceReport{},
	}
	l.challenges = newChallenger(a)
	defer l.challenges.wait()
	m, ok := l.register(ctx)
	if !ok {
		// Never registered: still stop what an earlier agent left running,
		// even with LeaveRunning, since no coordinator has vouched for it
		// and a restart loop would otherwise keep it running unwatched.
		l.shutdown(ctx, false)
		return nil
	}
	l.machine = m.ID
	l.loop(ctx)
	l.shutdown(ctx, l.cfg.LeaveRunning)
	return nil
}

func (l *loop) register(ctx context.Context) (market.Machine, bool) {
	backoff := l.cfg.RetryMin
	since := l.clk.Now()
	for {
		if !l.selfStopped && l.clk.Now().Sub(since) > l.lostAfter/2 {
			// Instances found from before a restart have had no contact
			// for at least this long.
			l.selfStopped = true
			l.log.Error("cannot register with the coordinator; stopping all workloads", "trying_for", l.clk.Now().Sub(since))
			l.stopAll(ctx)
		}
		select {
		case id := <-l.stopDone:
			delete(l.stopping, id)
		default:
		}
		sent := l.clk.Now()
		cctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
		m, err := l.cfg.Coordinator.Register(cctx, l.cfg.Hardware)
		cancel()
		if err == nil {
			l.contact(sent)
			l.log.Info("registered", "machine", m.ID, "gpus", len(l.cfg.Hardware.GPUs))
			return m, true
		}
		if ctx.Err() != nil {
			return market.Machine{}, false
		}
		l.log.Warn("register failed; retrying", "err", err, "retry_in", backoff)
		wait := l.clk.After(backoff)
	sleep:
		for {
			select {
			case <-ctx.Done():
				return market.Machine{}, false
			case id := <-l.stopDone:
				delete(l.stopping, id)
			case <-wait:
				break sleep
			}
		}
		backoff = min(2*backoff, l.cfg.RetryMax)
	}
}

type pollResult struct {
	ds  market.DesiredState
	err error
}

func (l *loop) loop(ctx context.Context) {
	pollCtx, cancelPoll := context.WithCancel(ctx)
	pollCh := make(chan pollResult, 1)
	polling := false
	poll := func() {
		polling = true
		since := l.version
		if !l.haveDesired {
			since = -1 // any version differs: answer at once
		}
		go func() {
			ds, err := l.cfg.Coordinator.Desired(pollCtx, l.machine, since, l.cfg.PollWait)
			pollCh <- pollResult{ds, err}
		}()
	}
	defer func() {
		cancelPoll()
		if polling {
			<-pollCh
		}
	}()

	poll()
	var retry <-chan time.Time
	backoff := l.cfg.RetryMin
	tick := l.clk.After(l.cfg.ReconcileInterval)
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-pollCh:
			polling = false
			if r.err != nil {
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("poll desired state failed", "err", r.err, "retry_in", backoff)
				retry = l.clk.After(backoff)
				backoff = min(2*backoff, l.cfg.RetryMax)
				break
			}
			// Not contact: the coordinator counts only registrations
			// and reports as heartbeats.
			backoff = l.cfg.RetryMin
			l.setDesired(r.ds)
			l.challenges.take(ctx, l.machine, r.ds.Challenge)
			poll()
		case <-retry:
			retry = nil
			poll()
		case id := <-l.stopDone:
			delete(l.stopping, id)
		case <-tick:
			tick = l.clk.After(l.cfg.ReconcileInterval)
		}
		l.checkContact(ctx)
		l.reconcile(ctx)
		l.report(ctx, false)
	}
}

// contact records a heartbeat the coordinator accepted. sent is when the
// call was sent: the coordinator saw it no earlier, so the agent's deadline
// never runs later than the coordinator's.
func (l *loop) contact(sent time.Time) {
	if sent.After(l.lastContact) {
		l.lastContact = sent
	}
	if l.selfStopped {
		l.log.Info("contact with the coordinator is back")
		l.selfStopped = false
	}
}

func (l *loop) setDesired(ds market.DesiredState) {
	if l.haveDesired && ds.Version != l.version {
		l.log.Debug("desired state changed", "version", ds.Version)
	}
	l.haveDesired = true
	l.version = ds.Version
	l.desired = make(map[market.InstanceID]market.Assignment, len(ds.Assignments))
	for _, as := range ds.Assignments {
		l.desired[as.Instance] = as
		l.grace[as.Instance] = time.Duration(max(as.GraceSeconds, 0)) * time.Second
		l.gpus[as.Instance] = as.GPUs
	}
	if ds.LostAfterSeconds > 0 {
		l.lostAfter = time.Duration(ds.LostAfterSeconds) * time.Second
	}
}

// checkContact applies the no-double-run rule: without contact for half the
// coordinator's lost deadline, the coordinator may soon hand our GPUs to
// someone else, so everything stops.
func (l *loop) checkContact(ctx context.Context) {
	silent := l.clk.Now().Sub(l.lastContact)
	if l.selfStopped || silent <= l.lostAfter/2 {
		return
	}
	l.selfStopped = true
	l.log.Error("no contact with the coordinator; stopping all workloads", "silent_for", silent, "lost_after", l.lostAfter)
	l.stopAll(ctx)
}

func (l *loop) list(ctx context.Context) (map[market.InstanceID]market.InstanceReport, bool) {
	obs, err := l.cfg.Runner.List(ctx)
	if err != nil {
		l.log.Error("list workloads", "err", err)
		return nil, false
	}
	m := make(map[market.InstanceID]market.InstanceReport, len(obs))
	for _, o := range obs {
		m[o.Instance] = o
	}
	return m, true
}

func isRunning(s market.ObservedState) bool {
	return s == market.ObservedStarting || s == market.ObservedRunning
}

// reconcile diffs what runs against what should run, both ways.
func (l *loop) reconcile(ctx context.Context) {
	if !l.haveDesired {
		return // an adopted instance waits for the coordinator's word
	}
	obs, ok := l.list(ctx)
	if !ok {
		return
	}
	if !l.reconciled {
		l.reconciled = true
		l.resetIdle = len(obs) > 0 // all found from before
	}
	if l.resetIdle && !l.unknownRunning(obs) {
		// Before any start, so that no new workload's settings are reset.
		l.resetIdle = false
		l.resetIdleGPUs(ctx, obs)
	}
	for _, id := range slices.Sorted(maps.Keys(l.desired)) {
		as := l.desired[id]
		o, known := obs[id]
		switch {
		case as.Desired == market.DesiredStop:
			if known && isRunning(o.State) {
				l.adopted(as) // so that its settings are reset when it ends
				l.stop(ctx, id)
			}
		case as.Desired != market.DesiredRun:
			l.log.Warn("unknown desired state; ignoring", "instance", id, "desired", as.Desired)
		case l.selfStopped:
			// Starting work now could double-run it.
		case !known && l.gpusBusy(as, obs):
			// A workload told to stop still holds some of its GPUs (a
			// preempted spot instance in its notice): start after it ends.
		case !known:
			l.start(ctx, as)
		case isRunning(o.State):
			l.adopted(as)
		case !isRunning(o.State) && as.Generation > o.Generation:
			// A new generation of a finished instance: run it again.
			if err := l.cfg.Runner.Forget(ctx, id); err != nil {
				l.log.Error("forget finished instance", "instance", id, "err", err)
				continue
			}
			delete(l.reported, id)
			l.start(ctx, as)
		}
	}
	for id, o := range obs {
		if _, want := l.desired[id]; want {
			continue
		}
		if isRunning(o.State) {
			l.stop(ctx, id)
			continue
		}
		// Finished and no longer desired: forget it once the coordinator
		// has seen its final state (accepted, or rejected as stale).
		if r, ok := l.reported[id]; ok && r.State == o.State && !l.stopping[id] {
			if err := l.cfg.Runner.Forget(ctx, id); err != nil {
				l.log.Error("forget finished instance", "instance", id, "err", err)
				continue
			}
			delete(l.reported, id)
			delete(l.grace, id)
			delete(l.gpus, id)
			delete(l.started, id)
			if l.cfg.Queue != nil {
				l.cfg.Queue.Forget(id)
			}
			l.health.forget(id)
		}
	}
}

// gpusBusy reports whether another workload that is to stop still runs on
// one of as's GPUs: an assignment told to stop, or one that left the
// desired state. A workload found from before a restart that the
// coordinator no longer lists (it ended the instance while no agent ran)
// has GPUs the agent never learnt, so it holds them all until it ends.
func (l *loop) gpusBusy(as market.Assignment, obs map[market.InstanceID]market.InstanceReport) bool {
	for id, o := range obs {
		if id == as.Instance || !isRunning(o.State) {
			continue
		}
		gpus, known := l.gpus[id]
		if other, ok := l.desired[id]; ok {
			if other.Desired != market.DesiredStop {
				continue
			}
			gpus, known = other.GPUs, true
		}
		if !known {
			return true
		}
		for _, g := range gpus {
			if slices.Contains(as.GPUs, g) {
				return true
			}
		}
	}
	return false
}

// adopted tells the runner, if it wants to know, the assignment of a
// workload it runs, which this agent may not have started.
func (l *loop) adopted(as market.Assignment) {
	if a, ok := l.cfg.Runner.(adopter); ok {
		a.Adopted(as)
	}
}

// unknownRunning reports whether a workload whose GPUs the agent never
// learnt still runs.
func (l *loop) unknownRunning(obs map[market.InstanceID]market.InstanceReport) bool {
	for id, o := range obs {
		_, desired := l.desired[id]
		if _, known := l.gpus[id]; !desired && !known && isRunning(o.State) {
			return true
		}
	}
	return false
}

// resetIdleGPUs resets the power limit and clocks of the GPUs no workload
// runs on: workloads from before this agent, which it stopped or which
// ended, may have left settings on them that it could not reset itself.
func (l *loop) resetIdleGPUs(ctx context.Context, obs map[market.InstanceID]market.InstanceReport) {
	r, ok := l.cfg.Runner.(gpuResetter)
	if !ok {
		return
	}
	used := map[int]bool{}
	for id, o := range obs {
		if !isRunning(o.State) {
			continue
		}
		gpus := l.gpus[id]
		if as, ok := l.desired[id]; ok {
			gpus = as.GPUs
		}
		for _, g := range gpus {
			used[g] = true
		}
	}
	var idle []string
	for _, g := range l.cfg.Hardware.GPUs {
		if !used[g.Index] {
			idle = append(idle, g.UUID)
		}
	}
	if len(idle) == 0 {
		return
	}
	if err := r.ResetGPUs(ctx, idle); err != nil {
		l.log.Error("reset idle GPUs left by workloads from before this agent", "gpus", idle, "err", err)
		return
	}
	l.log.Info("reset idle GPUs that workloads from before this agent may have set", "gpus", idle)
}

func (l *loop) start(ctx context.Context, as market.Assignment) {
	l.log.Info("starting instance", "instance", as.Instance, "generation", as.Generation, "gpus", as.GPUs)
	l.started[as.Instance] = true
	if l.cfg.Queue != nil {
		as.Env = maps.Clone(as.Env)
		if as.Env == nil {
			as.Env = map[string]string{}
		}
		as.Env[QueueEnv] = l.cfg.Queue.URL(as.Instance)
	}
	if err := l.cfg.Runner.Start(ctx, as); err != nil {
		delete(l.started, as.Instance)
		l.log.Error("start instance failed", "instance", as.Instance, "err", err)
	}
}

// stop stops an instance in the background; the loop goes on meanwhile.
// Stops are not cancelled with Run's ctx: a workload gets its grace.
func (l *loop) stop(ctx context.Context, id market.InstanceID) {
	if l.stopping[id] {
		return
	}
	grace, ok := l.grace[id]
	if !ok {
		grace = l.cfg.DefaultGrace
	}
	l.stopping[id] = true
	l.log.Info("stopping instance", "instance", id, "grace", grace)
	sctx := context.WithoutCancel(ctx)
	go func() {
		if err := l.cfg.Runner.Stop(sctx, id, grace); err != nil {
			l.log.Error("stop instance failed", "instance", id, "err", err)
		}
		l.stopDone <- id
	}()
}

func (l *loop) stopAll(ctx context.Context) {
	obs, _ := l.list(ctx)
	for _, id := range slices.Sorted(maps.Keys(obs)) {
		if isRunning(obs[id].State) {
			l.stop(ctx, id)
		}
	}
}

// report sends the observed state of every instance and the drained logs,
// when something changed, logs are waiting or a heartbeat is due.
func (l *loop) report(ctx context.Context, force bool) bool {
	chunks, err := l.cfg.Runner.Drain(ctx)
	if err != nil {
		l.log.Warn("drain logs", "err", err)
	}
	l.addLogs(chunks)
	obs, ok := l.list(ctx)
	if !ok {
		return false
	}
	rep := market.Report{Instances: make([]market.InstanceReport, 0, len(obs)), Logs: l.pending}
	changed := false
	for _, id := range slices.Sorted(maps.Keys(obs)) {
		r := obs[id]
		if as, ok := l.desired[id]; ok && as.Generation > r.Generation && (isRunning(r.State) || as.Desired == market.DesiredStop) {
			// The coordinator moved the instance to a new generation
			// (to stop it) while it ran: it is still the same workload,
			// and its end is the answer to that generation.
			r.Generation = as.Generation
		}
		if l.started[id] && r.State == market.ObservedRunning {
			r.State = market.ObservedStarting
		}
		if n, ok := l.cfg.Queue.length(id); ok && isRunning(r.State) {
			r.Queue = &n // sent with changes and heartbeats; not a change itself
		}
		if as, ok := l.desired[id]; ok && r.State == market.ObservedRunning {
			r.Healthy = l.health.result(ctx, l.cfg.Runner, as, r, l.clk.Now())
		}
		if prev, ok := l.reported[id]; !ok || !sameReport(prev, r) {
			changed = true
		}
		rep.Instances = append(rep.Instances, r)
	}
	heartbeat := l.clk.Now().Sub(l.lastReport) >= l.cfg.HeartbeatInterval
	if !force && !changed && len(rep.Logs) == 0 && !heartbeat {
		return true
	}
	if l.cfg.Sampler != nil {
		// Only reports that go out carry readings: about one per
		// heartbeat, which is the coordinator's finest step.
		gpus, err := l.cfg.Sampler.Sample(ctx)
		if err != nil {
			l.log.Warn("read GPU metrics", "err", err)
		}
		rep.GPUs = gpus
	}
	sent := l.clk.Now()
	cctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	res, err := l.cfg.Coordinator.Report(cctx, l.machine, rep)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("report failed", "err", err)
		}
		return false
	}
	l.contact(sent)
	l.lastReport = l.clk.Now()
	l.pending, l.pendingLen = nil, 0
	for _, r := range rep.Instances {
		l.reported[r.Instance] = r
		if r.State == market.ObservedStarting {
			delete(l.started, r.Instance)
		}
	}
	for _, rj := range res.Rejected {
		l.log.Warn("coordinator rejected instance report", "instance", rj.Instance, "reason", rj.Reason)
	}
	return true
}

func sameReport(a, b market.InstanceReport) bool {
	return a.Instance == b.Instance && a.Generation == b.Generation && a.State == b.State &&
		a.Message == b.Message && exit(a.ExitCode) == exit(b.ExitCode) && slices.Equal(a.Ports, b.Ports) &&
		healthOf(a.Healthy) == healthOf(b.Healthy)
}

func exit(c *int) int {
	if c == nil {
		return -1 << 31
	}
	return *c
}

func (l *loop) addLogs(chunks []market.LogChunk) {
	for _, c := range chunks {
		l.pending = append(l.pending, c)
		l.pendingLen += len(c.Data)
	}
	dropped := 0
	for l.pendingLen > maxPendingLogs && len(l.pending) > 0 {
		l.pendingLen -= len(l.pending[0].Data)
		l.pending = l.pending[1:]
		dropped++
	}
	if dropped > 0 {
		l.log.Warn("coordinator unreachable; dropped old log chunks", "chunks", dropped)
	}
}

// shutdown stops every workload with its grace unless leave is set, waits
// for the stops under way, and sends a last report if the coordinator
// answers quickly.
func (l *loop) shutdown(ctx context.Context, leave bool) {
	if leave {
		l.log.Info("leaving workloads running for the next agent to adopt")
	} else {
		l.stopAll(context.WithoutCancel(ctx))
	}
	defer l.health.wait()
	for len(l.stopping) > 0 {
		delete(l.stopping, <-l.stopDone)
	}
	if l.machine == "" {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.ShutdownReport)
	defer cancel()
	if l.report(rctx, true) {
		l.log.Info("exiting; final report sent")
	} else {
		l.log.Warn("exiting; final report not sent")
	}
}
