// Package deploy is the deployment reconciler: given the deployments, their
// replicas, the machines, the pools and the time, it decides which replicas
// to place where, which to stop and why, how far to scale, and why replicas
// wait. It is pure: nothing is read or written here; the coordinator applies
// the Plan.
//
// It imports only internal/market and internal/match (whose offer index
// it uses to find machines).
package deploy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// Machine is a machine as the reconciler sees it: UsedGPUs must list every
// GPU held by an active instance (any renter's), Facts what the offer index
// knows beyond market.Machine, and Pool the pool the operator assigned it
// to ("" for the open market).
type Machine struct {
	market.Machine
	Facts match.Facts
	Pool  string
}

// Replica is an active instance of a deployment.
type Replica struct {
	Instance   market.InstanceID
	Deployment market.DeploymentID
	Machine    market.MachineID
	GPUs       []int
	State      market.InstanceState
	Revision   int64
	// Ready: running at its revision (and passing its health check, when
	// the deployment has one). Rolling updates wait for it.
	Ready     bool
	CreatedAt time.Time
	// Metrics, when the agent reported them: mean GPU utilisation in
	// percent over the replica's GPUs, and the workload's queue length.
	Util  *float64
	Queue *int64
	// Bid is the spot bid behind a replica of a spot deployment. A bid
	// that has no active instance (it has not won, or was outbid) is a
	// replica with no Instance and no GPUs: it counts towards the
	// deployment's replicas but never as ready.
	Bid market.BidID
}

// Bid is an open spot bid of a spot deployment. The caller sets Since to
// when the bid was placed or last lost its instance.
type Bid struct {
	ID         market.BidID
	Deployment market.DeploymentID
	Machine    market.MachineID
	State      market.BidState
	Instance   market.InstanceID // its current or last win
	Revision   int64
	Since      time.Time
}

func (r Replica) stopping() bool { return r.State == market.InstanceStopping }

// Input is everything one reconcile pass looks at.
type Input struct {
	Now         time.Time
	Deployments []market.Deployment
	Replicas    []Replica // active instances of the deployments
	// Bids are the open bids of spot deployments, won or not.
	Bids     []Bid
	Machines []Machine
	Pools    []market.Pool
	Latency  match.LatencyTable
	// HoldUntil delays placements of a deployment whose replicas keep
	// failing to start (crash-loop backoff), until the time given.
	HoldUntil map[market.DeploymentID]time.Time
}

// Config tunes the reconciler; zero fields take the defaults noted.
type Config struct {
	Candidates   int           // machines considered per placement, best-ranked first; default 16
	MaxExplain   int           // pending deployments explained in detail per pass; default 50
	UpCooldown   time.Duration // default for rules without one: 1 min
	DownCooldown time.Duration // default 5 min
	MaxStep      int           // default 2
	// MoveBidAfter is how long a spot replica's bid may go without
	// winning before it moves to another machine; default 3 min (the
	// coordinator passes a few clearing intervals).
	MoveBidAfter time.Duration
}

func (c Config) withDefaults() Config {
	if c.Candidates <= 0 {
		c.Candidates = 16
	}
	if c.MaxExplain <= 0 {
		c.MaxExplain = 50
	}
	if c.UpCooldown <= 0 {
		c.UpCooldown = time.Minute
	}
	if c.DownCooldown <= 0 {
		c.DownCooldown = 5 * time.Minute
	}
	if c.MaxStep <= 0 {
		c.MaxStep = 2
	}
	if c.MoveBidAfter <= 0 {
		c.MoveBidAfter = 3 * time.Minute
	}
	return c
}

// Place starts a new replica of a deployment on exact GPUs of a machine.
type Place struct {
	Deployment market.DeploymentID
	Machine    market.MachineID
	GPUs       []int
	Revision   int64
	Reason     string
	// Spot: place a bid for the replica on the machine (GPUs are the
	// ones free now; the auction assigns the real ones).
	Spot bool
}

// Stop ends a replica. Preempt marks a replica stopped to give borrowed
// pool capacity back; it gets the instance's notice (grace) like any stop.
//
// A Stop of a spot replica also cancels its Bid; Instance is empty for a
// bid that holds no instance.
type Stop struct {
	Deployment market.DeploymentID
	Instance   market.InstanceID
	Machine    market.MachineID
	Bid        market.BidID
	Reason     string
	Preempt    bool
}

// Scale changes a deployment's desired replica count.
type Scale struct {
	Deployment market.DeploymentID
	From, To   int
	Up         bool
	Reason     string
}

// Plan is what one pass decided. Status has an entry per deployment.
type Plan struct {
	Places []Place
	Stops  []Stop
	Scales []Scale
	Status map[market.DeploymentID]market.DeploymentStatus
}

// dep is the working state of one deployment during a pass.
type dep struct {
	d        *market.Deployment
	q        match.Query
	qErr     error
	reps     []*Replica // active, not stopping
	desired  int
	need     int // replicas still to place
	onHost   map[market.MachineID]int
	onDC     map[string]int
	why      string
	inQuota  int // of need, how many fit the pool's quota (pools only)
	placed   int
	updating bool // a rolling update is under way
	// placeWhy is the reason placements give; surge marks a rolling
	// update's extra replica, old its old replicas, stoppingN the
	// deployment's replicas already stopping.
	placeWhy  string
	surge     bool
	old       []*Replica
	stoppingN int
	held      bool // in crash-loop backoff
	// moving are spot replicas whose bids have not won for
	// MoveBidAfter: each moves if another machine takes it.
	moving []*Replica
	avoid  market.MachineID // a machine placeOne must not use
}

// pass is one reconcile run.
type pass struct {
	in   Input
	cfg  Config
	plan Plan
	ms   map[market.MachineID]*Machine
	open *match.Index // machines in no pool
	pool *match.Index // pooled machines
	// regions known, normalised, for the latency fallback
	regions []string
	// pools: quota and use in GPUs
	quota, used map[string]int
	explained   int
	deps        []*dep
	byID        map[market.DeploymentID]*dep
	// stopping counts, per machine, GPUs of replicas that are stopping
	// (or preempted this pass), less those promised to reclaiming
	// replicas; built on the first reclaim.
	stopping map[market.MachineID]int
}

// Reconcile decides one pass. It never mutates its input.
func Reconcile(in Input, cfg Config) Plan {
	p := &pass{in: in, cfg: cfg.withDefaults(), ms: map[market.MachineID]*Machine{},
		quota: map[string]int{}, used: map[string]int{}}
	p.plan.Status = map[market.DeploymentID]market.DeploymentStatus{}
	p.index()
	deps := p.deployments()
	p.deps = deps
	p.poolQuotas()
	for _, d := range deps {
		p.decide(d)
	}
	p.placeAll(deps)
	for _, d := range deps {
		p.moveBids(d)
	}
	for _, d := range deps {
		st := market.DeploymentStatus{Replicas: len(d.reps) + d.placed, At: in.Now}
		for _, r := range d.reps {
			if r.Ready && r.Revision == d.d.Revision {
				st.Ready++
			}
		}
		st.Pending = d.need
		if d.need > 0 || d.updating {
			st.Why = d.why
		}
		p.plan.Status[d.d.ID] = st
	}
	return p.plan
}

// index builds the two offer indexes: the open market and the pooled
// machines. Deployments without a pool use only the first, pool
// deployments only the second.
func (p *pass) index() {
	rank := match.DefaultRanking()
	rank.Latency = p.in.Latency
	p.open, p.pool = match.NewIndex(), match.NewIndex()
	p.open.SetRanking(rank)
	p.pool.SetRanking(rank)
	seen := map[string]bool{}
	for i := range p.in.Machines {
		m := p.in.Machines[i] // a copy: placements change UsedGPUs
		m.UsedGPUs = slices.Clone(m.UsedGPUs)
		p.ms[m.ID] = &m
		ix := p.ixFor(m.Pool)
		if m.Facts != (match.Facts{}) {
			ix.SetFacts(m.ID, m.Facts)
		}
		ix.Upsert(m.Machine)
		if r := strings.ToLower(strings.TrimSpace(m.Region)); !seen[r] {
			seen[r] = true
			p.regions = append(p.regions, r)
		}
	}
	slices.Sort(p.regions)
}

func (p *pass) ixFor(pool string) *match.Index {
	if pool != "" {
		return p.pool
	}
	return p.open
}

// deployments groups the replicas and orders the deployments: by pool,
// then priority (highest first), then age.
func (p *pass) deployments() []*dep {
	byID := make(map[market.DeploymentID]*dep, len(p.in.Deployments))
	deps := make([]*dep, 0, len(p.in.Deployments))
	for i := range p.in.Deployments {
		d := &dep{d: &p.in.Deployments[i], onHost: map[market.MachineID]int{}, onDC: map[string]int{}}
		d.q, d.qErr = match.Parse(d.d.Spec.Query)
		byID[d.d.ID] = d
		deps = append(deps, d)
	}
	for i := range p.in.Replicas {
		r := &p.in.Replicas[i]
		d := byID[r.Deployment]
		if d == nil {
			continue
		}
		if r.Machine != "" {
			d.onHost[r.Machine]++
			d.onDC[p.dcOf(r.Machine)]++
		}
		if !r.stopping() {
			d.reps = append(d.reps, r)
		} else {
			d.stoppingN++
		}
		if d.d.Spec.Pool != "" && !r.stopping() {
			p.used[d.d.Spec.Pool] += len(r.GPUs)
		}
	}
	p.bidReplicas(byID)
	slices.SortFunc(deps, func(a, b *dep) int {
		return cmp.Or(cmp.Compare(a.d.Spec.Pool, b.d.Spec.Pool), -cmp.Compare(a.d.Spec.Priority, b.d.Spec.Priority),
			a.d.CreatedAt.Compare(b.d.CreatedAt), cmp.Compare(a.d.ID, b.d.ID))
	})
	for _, d := range deps {
		slices.SortFunc(d.reps, func(a, b *Replica) int {
			return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.Instance, b.Instance))
		})
	}
	p.byID = byID
	return deps
}

// bidReplicas adds the open bids of spot deployments that hold no active
// instance as replicas without GPUs.
func (p *pass) bidReplicas(byID map[market.DeploymentID]*dep) {
	held := map[market.InstanceID]bool{}
	for _, r := range p.in.Replicas {
		if r.Instance != "" && !r.stopping() { // a preempted instance's bid waits again
			held[r.Instance] = true
		}
	}
	for _, b := range p.in.Bids {
		d := byID[b.Deployment]
		if d == nil || !d.d.Spec.Spot || !b.State.Open() || (b.Instance != "" && held[b.Instance]) {
			continue
		}
		r := &Replica{Deployment: b.Deployment, Machine: b.Machine, Revision: b.Revision, CreatedAt: b.Since, Bid: b.ID}
		d.onHost[r.Machine]++
		d.onDC[p.dcOf(r.Machine)]++
		d.reps = append(d.reps, r)
		if !d.d.Deleted && !p.in.Now.Before(b.Since.Add(p.cfg.MoveBidAfter)) {
			d.moving = append(d.moving, r)
		}
	}
}

// moveBids moves each of d's spot replicas whose bid has not won for a
// while to another machine: a new bid is placed there first, then the old
// one is cancelled. A bid with nowhere else to go stays in the book.
func (p *pass) moveBids(d *dep) {
	for _, r := range d.moving {
		if !slices.Contains(d.reps, r) || d.held {
			continue // already stopped by this pass
		}
		why := d.why
		d.need++
		d.avoid = r.Machine
		ok := p.placeOne(d)
		d.avoid = ""
		if !ok {
			d.need--
			d.why = why
			continue
		}
		p.plan.Places[len(p.plan.Places)-1].Reason = fmt.Sprintf("the bid on %s has not won for %s; bidding on another machine", r.Machine, p.cfg.MoveBidAfter)
		p.stop(d, r, fmt.Sprintf("the bid has not won for %s; moved to another machine", p.cfg.MoveBidAfter), false)
	}
}

// dcOf names the failure domain of a machine beyond the host: its data
// center, or the machine itself when it names none.
func (p *pass) dcOf(id market.MachineID) string {
	m := p.ms[id]
	if m == nil || m.DataCenter == "" {
		return "machine:" + string(id)
	}
	return strings.ToLower(m.Region) + "/" + strings.ToLower(m.DataCenter)
}

// poolQuotas sets each pool's quota: its share of the GPUs of every
// online pooled machine.
func (p *pass) poolQuotas() {
	total := 0
	for _, m := range p.ms {
		if m.Pool != "" && m.Online {
			total += len(m.GPUs)
		}
	}
	for _, pl := range p.in.Pools {
		p.quota[pl.Name] = int(int64(total) * pl.ShareBP / 10000)
	}
}

// decide works out a deployment's desired count, its stops (deletion,
// scale-down, rolling update) and how many replicas it needs placed.
func (p *pass) decide(d *dep) {
	spec := d.d.Spec
	if d.d.Deleted {
		for _, r := range slices.Clone(d.reps) {
			p.stop(d, r, "the deployment was deleted", false)
		}
		d.reps = nil
		return
	}
	if d.qErr != nil {
		d.why = fmt.Sprintf("the query does not parse: %v; fix it with deployment update", d.qErr)
		d.need = max(d.d.Desired, spec.MinReplicas) - len(d.reps)
		d.need = max(d.need, 0)
		return
	}
	d.desired = p.scale(d)
	var cur, old []*Replica
	for _, r := range d.reps {
		if r.Revision == d.d.Revision {
			cur = append(cur, r)
		} else {
			old = append(old, r)
		}
	}
	total := len(d.reps)
	if len(old) == 0 {
		if total > d.desired {
			for _, r := range p.victims(d, cur, total-d.desired) {
				p.stop(d, r, fmt.Sprintf("scaling down to %d replicas", d.desired), false)
			}
		} else {
			d.need = d.desired - total
			d.why = fmt.Sprintf("%d of %d replicas running", total, d.desired)
		}
		return
	}
	// Rolling update: one new replica at a time, an old one stops only
	// once a new one is ready.
	d.updating = true
	notReady := 0
	for _, r := range cur {
		if !r.Ready {
			notReady++
		}
	}
	if notReady > 0 {
		d.need = max(d.desired-total, 0)
		d.why = fmt.Sprintf("rolling update to revision %d: waiting for %d new replicas to be ready", d.d.Revision, notReady)
		return
	}
	if total > d.desired {
		n := min(total-d.desired, len(old))
		for _, r := range p.victims(d, old, n) {
			p.stop(d, r, fmt.Sprintf("rolling update to revision %d: a new replica is ready", d.d.Revision), false)
			old = slices.DeleteFunc(old, func(o *Replica) bool { return o == r })
		}
		total -= n
		if total > d.desired { // scaled down below the new replicas
			for _, r := range p.victims(d, cur, total-d.desired) {
				p.stop(d, r, fmt.Sprintf("scaling down to %d replicas", d.desired), false)
			}
			total = d.desired
		}
	}
	d.need = max(d.desired-total, 0)
	d.placeWhy = fmt.Sprintf("rolling update to revision %d: replacing an old replica (%d left)", d.d.Revision, len(old))
	if len(old) > 0 && d.need == 0 {
		// The surge replica: an old one stops once it is ready.
		d.need, d.surge, d.old = 1, true, old
		d.placeWhy = fmt.Sprintf("rolling update to revision %d: a new replica before an old one stops (%d old left)", d.d.Revision, len(old))
	}
	d.why = fmt.Sprintf("rolling update to revision %d: %d old replicas left", d.d.Revision, len(old))
}

// stop records a stop and drops the replica from the deployment's counts.
func (p *pass) stop(d *dep, r *Replica, reason string, preempt bool) {
	p.plan.Stops = append(p.plan.Stops, Stop{Deployment: d.d.ID, Instance: r.Instance, Machine: r.Machine, Bid: r.Bid, Reason: reason, Preempt: preempt})
	d.reps = slices.DeleteFunc(d.reps, func(o *Replica) bool { return o == r })
	d.stoppingN++
	if d.d.Spec.Pool != "" {
		p.used[d.d.Spec.Pool] -= len(r.GPUs)
	}
}

// victims picks n of rs to stop: replicas that are not ready first, then
// those sharing a host or data center with most others of the deployment
// (so the rest stay spread), then the newest.
func (p *pass) victims(d *dep, rs []*Replica, n int) []*Replica {
	rs = slices.Clone(rs)
	slices.SortStableFunc(rs, func(a, b *Replica) int {
		if a.Ready != b.Ready {
			if !a.Ready {
				return -1
			}
			return 1
		}
		return cmp.Or(-cmp.Compare(d.onHost[a.Machine], d.onHost[b.Machine]),
			-cmp.Compare(d.onDC[p.dcOf(a.Machine)], d.onDC[p.dcOf(b.Machine)]),
			b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(b.Instance, a.Instance))
	})
	return rs[:min(n, len(rs))]
}

// scale applies the deployment's scale rule and returns its desired
// count, recording a Scale decision when it changes.
func (p *pass) scale(d *dep) int {
	spec := d.d.Spec
	cur := d.d.Desired
	lo, hi := spec.MinReplicas, max(spec.MaxReplicas, spec.MinReplicas)
	clamped := min(max(cur, lo), hi)
	if clamped != cur {
		p.plan.Scales = append(p.plan.Scales, Scale{Deployment: d.d.ID, From: cur, To: clamped, Up: clamped > cur,
			Reason: fmt.Sprintf("the replica bounds are %d..%d", lo, hi)})
		return clamped
	}
	r := spec.Scale
	if r == nil || r.Target <= 0 {
		return cur
	}
	var sum float64
	var n int
	for _, rep := range d.reps {
		switch {
		case r.Metric == market.ScaleGPUUtil && rep.Util != nil:
			sum += *rep.Util
			n++
		case r.Metric == market.ScaleQueue && rep.Queue != nil:
			sum += float64(*rep.Queue)
			n++
		}
	}
	if n == 0 {
		return cur // no data: no decision
	}
	if r.Metric == market.ScaleGPUUtil && n < len(d.reps) {
		// Replicas that report nothing are taken at the mean of the rest.
		sum = sum / float64(n) * float64(len(d.reps))
	}
	want := min(max(int(math.Ceil(sum/r.Target-1e-9)), lo), hi)
	step := cmp.Or(r.MaxStep, p.cfg.MaxStep)
	up := time.Duration(cmp.Or(r.UpCooldown, market.Duration(p.cfg.UpCooldown)))
	down := time.Duration(cmp.Or(r.DownCooldown, market.Duration(p.cfg.DownCooldown)))
	metric := fmt.Sprintf("%s %s over %d replicas (target %s per replica)", r.Metric, fmtNum(sum), n, fmtNum(r.Target))
	if r.Metric == market.ScaleGPUUtil {
		metric = fmt.Sprintf("mean GPU utilisation %s%% over %d replicas (target %s%%)", fmtNum(sum/float64(len(d.reps))), n, fmtNum(r.Target))
	}
	last := d.d.LastScaleAt
	switch {
	case want > cur:
		if last != nil && d.d.LastScaleUp && p.in.Now.Before(last.Add(up)) {
			return cur
		}
		to := min(want, cur+step)
		p.plan.Scales = append(p.plan.Scales, Scale{Deployment: d.d.ID, From: cur, To: to, Up: true,
			Reason: fmt.Sprintf("%s wants %d; scaling up %d -> %d (at most %d per step, then %s cooldown)", metric, want, cur, to, step, up)})
		return to
	case want < cur:
		if last != nil && p.in.Now.Before(last.Add(down)) {
			return cur
		}
		to := max(want, cur-step)
		p.plan.Scales = append(p.plan.Scales, Scale{Deployment: d.d.ID, From: cur, To: to,
			Reason: fmt.Sprintf("%s wants %d; scaling down %d -> %d (at most %d per step, then %s cooldown)", metric, want, cur, to, step, down)})
		return to
	}
	return cur
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

// placeAll places what the deployments need: the open market first, then
// pooled replicas within their pool's quota, then pooled replicas that
// borrow idle capacity beyond it, and last, for pooled replicas within
// quota that found no room, reclaim borrowed capacity by preemption.
func (p *pass) placeAll(deps []*dep) {
	var pooled []*dep
	for _, d := range deps {
		if d.need <= 0 || d.qErr != nil {
			continue
		}
		if until, ok := p.in.HoldUntil[d.d.ID]; ok && p.in.Now.Before(until) {
			d.held = true
			d.why = fmt.Sprintf("replicas keep failing to start; next try after %s", until.UTC().Format(time.RFC3339))
			continue
		}
		if d.d.Spec.Pool == "" {
			p.placeN(d, d.need)
			continue
		}
		if _, ok := p.quota[d.d.Spec.Pool]; !ok {
			d.why = fmt.Sprintf("pool %q does not exist; ask an operator (gpumarket admin pool list)", d.d.Spec.Pool)
			continue
		}
		pooled = append(pooled, d)
	}
	// Within quota.
	for _, d := range pooled {
		g := d.d.Spec.GPUsPerReplica
		n := 0
		for n < d.need && p.used[d.d.Spec.Pool]+(n+1)*g <= p.quota[d.d.Spec.Pool] {
			n++
		}
		got := p.placeN(d, n)
		d.inQuota = n - got
	}
	// Borrowing.
	for _, d := range pooled {
		if d.need > d.inQuota {
			p.placeN(d, d.need-d.inQuota)
		}
	}
	// Reclaiming.
	for _, d := range pooled {
		for range d.inQuota {
			if !p.reclaim(d) {
				break
			}
		}
	}
	// A rolling update with no room for its extra replica replaces an
	// old one in place instead (once nothing of it is stopping), so a
	// full fleet does not stall the update.
	for _, d := range deps {
		if d.surge && !d.held && d.placed == 0 && d.stoppingN == 0 && len(d.old) > 0 {
			p.stop(d, p.victims(d, d.old, 1)[0], fmt.Sprintf("rolling update to revision %d: no room for an extra replica, so an old one is replaced in place", d.d.Revision), false)
			d.need = 0
			d.why = fmt.Sprintf("rolling update to revision %d: replacing old replicas in place (no room for an extra one)", d.d.Revision)
		}
	}
}

// placeN places up to n replicas of d and returns how many it placed.
func (p *pass) placeN(d *dep, n int) int {
	got := 0
	for range n {
		if !p.placeOne(d) {
			break
		}
		got++
	}
	return got
}

// tier is one step of the region preference: a region to search and the
// latency from the nearest preferred region ("" and 0: anywhere).
type tier struct {
	region  string
	latency time.Duration
}

// tiers lists the regions to try in order: the preferred ones as listed,
// then others within the latency budget, nearest first.
func (p *pass) tiers(spec market.DeploymentSpec) []tier {
	if len(spec.Regions) == 0 {
		return []tier{{}}
	}
	ts := make([]tier, 0, len(spec.Regions))
	pref := make([]string, len(spec.Regions))
	for i, r := range spec.Regions {
		pref[i] = strings.ToLower(strings.TrimSpace(r))
		ts = append(ts, tier{region: pref[i]})
	}
	if spec.MaxLatency <= 0 {
		return ts
	}
	var extra []tier
	for _, r := range p.regions {
		if r == "" || slices.ContainsFunc(pref, func(pr string) bool { return regionIn(r, pr) }) {
			continue
		}
		best := time.Duration(math.MaxInt64)
		for _, pr := range pref {
			best = min(best, p.in.Latency.Lookup(pr, r))
		}
		if best <= time.Duration(spec.MaxLatency) {
			extra = append(extra, tier{region: r, latency: best})
		}
	}
	slices.SortStableFunc(extra, func(a, b tier) int { return cmp.Compare(a.latency, b.latency) })
	return append(ts, extra...)
}

// regionIn reports whether region r is pr or one of its sub-regions.
func regionIn(r, pr string) bool {
	return r == pr || (strings.HasPrefix(r, pr) && len(r) > len(pr) && r[len(pr)] == '-')
}

// query is d's query with the GPU count, the runner, the price cap and a
// region added.
func query(d *dep, region string) match.Query {
	spec := d.d.Spec
	q := match.Query{Filters: slices.Clip(d.q.Filters)}
	g := int64(spec.GPUsPerReplica)
	q.Filters = append(q.Filters, match.Filter{Field: match.FNumGPUs, Op: match.OpGe, Nums: []int64{g}, Text: fmt.Sprintf("num_gpus>=%d", g)})
	// An image needs a machine that runs containers, a bare command one
	// that runs processes.
	runner := "process"
	if spec.Image != "" {
		runner = "docker"
	}
	q.Filters = append(q.Filters, match.Filter{Field: match.FRunner, Op: match.OpEq, Strs: []string{runner}, Text: "runner=" + runner})
	if spec.MaxPricePerDay > 0 && !spec.Spot { // a spot deployment bids its price instead
		perGPUHour := int64(spec.MaxPricePerDay) / 24 / max(g, 1)
		q.Filters = append(q.Filters, match.Filter{Field: match.FPricePerGPUHour, Op: match.OpLe, Nums: []int64{perGPUHour},
			Text: "price_per_gpu_hour<=" + market.Money(perGPUHour).String()})
	}
	if region != "" {
		q.Filters = append(q.Filters, match.Filter{Field: match.FRegion, Op: match.OpIn, Strs: []string{region}, Text: "region in [" + region + "]"})
	}
	return q
}

// placeOne places one replica of d on the best machine of the first
// region tier that has room: among the best-ranked candidates, (pools) one
// of d's own pool, then the one with fewest replicas of d on the same
// host, then in the same data center.
func (p *pass) placeOne(d *dep) bool {
	spec := d.d.Spec
	ix := p.ixFor(spec.Pool)
	for _, t := range p.tiers(spec) {
		offers := ix.Search(query(d, t.region), match.Sort{Region: cmp.Or(t.region, firstRegion(spec))}, p.cfg.Candidates)
		if len(offers) == 0 {
			continue
		}
		best, bestKey := -1, [3]int{}
		for i, o := range offers {
			m := p.ms[o.Machine]
			if o.Machine == d.avoid {
				continue
			}
			if spec.Health != nil && spec.Health.HTTP() && spec.Image == "" && d.onHost[o.Machine] > 0 {
				continue // plain processes share the machine's ports: one per machine
			}
			other := 0
			if spec.Pool != "" && m.Pool != spec.Pool {
				other = 1
			}
			// Pool replicas use their own pool's machines first: on
			// another pool's they borrow, and may have to give way.
			key := [3]int{other, d.onHost[o.Machine], d.onDC[p.dcOf(o.Machine)]}
			if best < 0 || slices.Compare(key[:], bestKey[:]) < 0 {
				best, bestKey = i, key
			}
		}
		if best < 0 {
			continue
		}
		m := p.ms[offers[best].Machine]
		gpus, err := match.Fit(m.Machine, spec.GPUsPerReplica)
		if err != nil {
			continue // cannot happen: the query asked for the free GPUs
		}
		m.UsedGPUs = append(m.UsedGPUs, gpus...)
		slices.Sort(m.UsedGPUs)
		ix.Upsert(m.Machine)
		d.onHost[m.ID]++
		d.onDC[p.dcOf(m.ID)]++
		d.need--
		d.placed++
		if spec.Pool != "" {
			p.used[spec.Pool] += len(gpus)
		}
		reason := d.placeWhy
		if reason == "" {
			reason = fmt.Sprintf("%d of %d replicas active, adding one", len(d.reps)+d.placed-1, d.desired)
		}
		if t.latency > 0 {
			reason += fmt.Sprintf("; no room in %s, so %s (%s away, within %s)", strings.Join(spec.Regions, ","), t.region, t.latency, time.Duration(spec.MaxLatency))
		}
		p.plan.Places = append(p.plan.Places, Place{Deployment: d.d.ID, Machine: m.ID, GPUs: gpus, Revision: d.d.Revision, Reason: reason, Spot: spec.Spot})
		return true
	}
	d.why = p.explain(d)
	return false
}

func firstRegion(spec market.DeploymentSpec) string {
	if len(spec.Regions) > 0 {
		return spec.Regions[0]
	}
	return ""
}

// explain says why d's replica found no machine, naming the nearest miss.
func (p *pass) explain(d *dep) string {
	spec := d.d.Spec
	where := "anywhere"
	if len(spec.Regions) > 0 {
		where = "in " + strings.Join(spec.Regions, ",")
		if spec.MaxLatency > 0 {
			where += fmt.Sprintf(" or within %s of them", time.Duration(spec.MaxLatency))
		}
	}
	fleet := ""
	if spec.Pool != "" {
		fleet = fmt.Sprintf(" in pool machines (pool %s uses %d of its %d GPUs)", spec.Pool, p.used[spec.Pool], p.quota[spec.Pool])
	}
	what := fmt.Sprintf("no machine with %d free GPUs", spec.GPUsPerReplica)
	if spec.GPUsPerReplica == 1 {
		what = "no machine with a free GPU"
	}
	if spec.Query != "" {
		what += fmt.Sprintf(" matching '%s'", spec.Query)
	}
	if spec.MaxPricePerDay > 0 {
		what += fmt.Sprintf(" at most %s per replica-day", spec.MaxPricePerDay)
	}
	msg := what + " " + where + fleet
	if p.explained >= p.cfg.MaxExplain {
		return msg
	}
	p.explained++
	q := query(d, "")
	if len(spec.Regions) > 0 {
		var strs []string
		for _, t := range p.tiers(spec) {
			strs = append(strs, t.region)
		}
		q.Filters = append(q.Filters, match.Filter{Field: match.FRegion, Op: match.OpIn, Strs: strs, Text: "region in [" + strings.Join(strs, ",") + "]"})
	}
	x := p.ixFor(spec.Pool).Explain(q, match.Sort{Region: firstRegion(spec)}, 1)
	if len(x.Near) > 0 {
		n := x.Near[0]
		region := cmp.Or(n.Offer.Region, "no region")
		msg += fmt.Sprintf("; nearest: %s (%d of %d %s free, %s) fails %s", n.Offer.Machine, n.Offer.FreeGPUs, n.Offer.TotalGPUs, n.Offer.GPUModel, region, strings.Join(n.Failed, " "))
	} else if x.Available == 0 {
		msg += "; no machine has a free GPU"
	}
	return msg
}

// reclaim frees room for one replica of pooled deployment d, which is
// within its pool's quota, by preempting replicas of other pools that
// borrow beyond theirs. It reports whether room is (or is being) made.
func (p *pass) reclaim(d *dep) bool {
	spec := d.d.Spec
	g := spec.GPUsPerReplica
	borrowed := p.borrowed(spec.Pool)
	if p.stopping == nil {
		// Stopping replicas free their GPUs soon: count them, so that a
		// pass does not preempt again while earlier victims wind down.
		p.stopping = map[market.MachineID]int{}
		for i := range p.in.Replicas {
			if r := &p.in.Replicas[i]; r.stopping() {
				p.stopping[r.Machine] += len(r.GPUs)
			}
		}
	}
	stopping := p.stopping
	type cand struct {
		m       *Machine
		victims []*Replica
		cost    int
	}
	var best *cand
	for id, vs := range borrowed {
		m := p.ms[id]
		if m == nil || !m.Online || !p.accepts(d, m) {
			continue
		}
		free := len(m.FreeGPUs()) + stopping[id]
		if free >= g {
			if best == nil || best.cost > 0 {
				best = &cand{m: m}
			}
			continue
		}
		if len(vs) == 0 {
			continue
		}
		var take []*Replica
		for _, v := range vs {
			if free >= g {
				break
			}
			take = append(take, v)
			free += len(v.GPUs)
		}
		if free < g {
			continue
		}
		c := &cand{m: m, victims: take, cost: len(take)}
		if best == nil || c.cost < best.cost || (c.cost == best.cost && c.m.ID < best.m.ID) {
			best = c
		}
	}
	if best == nil {
		return false
	}
	if len(best.victims) == 0 {
		stopping[best.m.ID] -= g // promised to d
		d.why = fmt.Sprintf("pool %s is reclaiming its quota: waiting for preempted replicas on %s to stop", spec.Pool, best.m.ID)
		return true
	}
	for _, v := range best.victims {
		p.stop(p.byID[v.Deployment], v, fmt.Sprintf("preempted: pool %s reclaims its quota for deployment %s (%s)", spec.Pool, d.d.Spec.Name, d.d.ID), true)
		// The GPUs free once the replica has stopped; until then they
		// count as stopping, so later reclaims do not take them twice.
		stopping[v.Machine] += len(v.GPUs)
	}
	stopping[best.m.ID] -= g // promised to d
	d.why = fmt.Sprintf("pool %s is reclaiming its quota: preempted %d borrowed replicas on %s", spec.Pool, len(best.victims), best.m.ID)
	return true
}

// borrowed returns, per pooled machine, the replicas of pools other than
// pool that run beyond their own pool's quota, in the order they should
// give way: lowest priority first, then newest. A pool's replicas count
// against its quota those on its own machines first, then by priority,
// oldest first, so the borrowed ones are its last.
func (p *pass) borrowed(pool string) map[market.MachineID][]*Replica {
	out := map[market.MachineID][]*Replica{}
	type pr struct {
		r       *Replica
		pri     int
		foreign int // 1: runs on another pool's machine
	}
	byPool := map[string][]pr{}
	for _, d := range p.deps { // ordered by pool, priority, age
		if d.d.Spec.Pool == "" || d.d.Spec.Pool == pool || p.used[d.d.Spec.Pool] <= p.quota[d.d.Spec.Pool] {
			continue
		}
		for _, r := range d.reps {
			x := pr{r: r, pri: d.d.Spec.Priority}
			if m := p.ms[r.Machine]; m == nil || m.Pool != d.d.Spec.Pool {
				x.foreign = 1
			}
			byPool[d.d.Spec.Pool] = append(byPool[d.d.Spec.Pool], x)
		}
	}
	var all []pr
	for name, rs := range byPool {
		slices.SortStableFunc(rs, func(a, b pr) int {
			return cmp.Or(cmp.Compare(a.foreign, b.foreign), -cmp.Compare(a.pri, b.pri), a.r.CreatedAt.Compare(b.r.CreatedAt), cmp.Compare(a.r.Instance, b.r.Instance))
		})
		sum := 0
		for _, x := range rs {
			sum += len(x.r.GPUs)
			if sum > p.quota[name] {
				all = append(all, x)
			}
		}
	}
	slices.SortFunc(all, func(a, b pr) int {
		return cmp.Or(cmp.Compare(a.pri, b.pri), b.r.CreatedAt.Compare(a.r.CreatedAt), cmp.Compare(a.r.Instance, b.r.Instance))
	})
	for _, x := range all {
		if m := p.ms[x.r.Machine]; m != nil && m.Pool != "" {
			out[x.r.Machine] = append(out[x.r.Machine], x.r)
		}
	}
	return out
}

// accepts reports whether a replica of d may run on m, ignoring its free
// GPUs: m matches d's query, price cap and regions and has enough GPUs.
func (p *pass) accepts(d *dep, m *Machine) bool {
	spec := d.d.Spec
	if len(m.GPUs) < spec.GPUsPerReplica || !match.Rentable(m.Machine) {
		return false
	}
	q := query(d, "")
	q.Filters = slices.DeleteFunc(q.Filters, func(f match.Filter) bool { return f.Field == match.FNumGPUs })
	all := m.Machine
	all.UsedGPUs = nil // judge the machine as if empty: GPU counts are checked by the caller
	if !q.Match(all, m.Facts) {
		return false
	}
	region := strings.ToLower(m.Region)
	for _, t := range p.tiers(spec) {
		if t.region == "" || regionIn(region, t.region) {
			return true
		}
	}
	return false
}
