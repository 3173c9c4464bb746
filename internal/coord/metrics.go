package coord

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// metricTier is one resolution at which GPU series are kept: points of
// step width, at most points of them, so a tier spans step*points.
type metricTier struct {
	step   time.Duration
	points int
}

// metricTiers are the resolutions kept for every GPU, finest first. A
// query uses the finest tier that spans its window. Agents report about
// every 10 s, so the first tier holds the samples as they came.
var metricTiers = []metricTier{
	{step: 10 * time.Second, points: 360}, // 1 h
	{step: 5 * time.Minute, points: 288},  // 24 h
}

// MaxMetricsWindow is the longest window a metrics query may ask for.
const MaxMetricsWindow = 24 * time.Hour

// maxSampledGPUs bounds the GPU indexes kept per machine, so a broken or
// hostile agent cannot grow the coordinator's memory.
const maxSampledGPUs = 64

// metricSweepEvery is how often series of machines that stopped reporting
// are dropped; metricRetention is how long they are kept after their last
// sample.
const (
	metricSweepEvery = 10 * time.Minute
	metricRetention  = MaxMetricsWindow
)

// bucket is one point of a ring: the running mean of n samples in step
// number idx since the Unix epoch (it starts at idx x step seconds). It
// takes 24 bytes: float32 is plenty for GPU readings, and a 10,000-machine
// coordinator holds 80,000 series.
type bucket struct {
	idx                     uint32
	n                       uint32
	util, mem, power, tempC float32
}

// ring is a bounded series of buckets of one step width. It grows up to
// its capacity, then overwrites the oldest bucket.
type ring struct {
	step  int64 // seconds
	cap   int
	buf   []bucket
	start int // index of the oldest bucket once buf is full
}

func newRing(t metricTier) ring {
	return ring{step: int64(t.step / time.Second), cap: t.points}
}

func (r *ring) len() int { return len(r.buf) }

// at returns the i-th oldest bucket.
func (r *ring) at(i int) *bucket { return &r.buf[(r.start+i)%len(r.buf)] }

// add folds a sample taken at unix second sec into the ring: into the
// last bucket when it covers sec, else into a new one. Samples older than
// the last bucket are dropped; series only move forward.
func (r *ring) add(sec int64, util, mem, power, tempC float64) {
	if sec < 0 || sec/r.step > math.MaxUint32 {
		return // not a time any agent reports at
	}
	idx := uint32(sec / r.step)
	if n := r.len(); n > 0 {
		last := r.at(n - 1)
		switch {
		case idx == last.idx:
			last.n++
			k := float32(last.n)
			last.util += (float32(util) - last.util) / k
			last.mem += (float32(mem) - last.mem) / k
			last.power += (float32(power) - last.power) / k
			last.tempC += (float32(tempC) - last.tempC) / k
			return
		case idx < last.idx:
			return
		}
	}
	b := bucket{idx: idx, n: 1, util: float32(util), mem: float32(mem), power: float32(power), tempC: float32(tempC)}
	if len(r.buf) < r.cap {
		r.buf = append(r.buf, b)
		return
	}
	r.buf[r.start] = b
	r.start = (r.start + 1) % len(r.buf)
}

// since returns the points of buckets starting at or after from and
// before to, oldest first.
func (r *ring) since(from, to int64) []market.MetricPoint {
	var out []market.MetricPoint
	for i := range r.len() {
		b := r.at(i)
		t := int64(b.idx) * r.step
		if t < from || t >= to {
			continue
		}
		out = append(out, market.MetricPoint{At: time.Unix(t, 0).UTC(),
			UtilPct: float64(b.util), MemUsedMiB: float64(b.mem), PowerW: float64(b.power), TempC: float64(b.tempC)})
	}
	return out
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// gpuSeries is the kept history of one GPU: its latest sample and a ring
// per tier.
type gpuSeries struct {
	latest market.GPUSample
	tiers  []ring
}

type machineSeries struct {
	gpus map[int]*gpuSeries
	seen time.Time // coordinator time of the last sample
}

// metricStore keeps recent per-GPU metrics from agents' reports in memory.
// Each replica keeps what its own agents reported to it; a restart starts
// empty. Memory is bounded: at most maxSampledGPUs series per machine, each
// at most about 16 KB (648 buckets of 24 bytes: 1.3 GB for 10,000 machines
// of 8 GPUs), dropped a day after the machine's last sample.
type metricStore struct {
	loops loopTimes // durations of the background steps

	mu        sync.RWMutex
	machines  map[market.MachineID]*machineSeries
	lastSweep time.Time
}

func newMetricStore() *metricStore {
	return &metricStore{machines: map[market.MachineID]*machineSeries{}}
}

// finite replaces what JSON could not carry and no GPU reports (NaN, ±Inf)
// by 0.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// record adds an agent's samples of machine m, received at now. Samples
// are placed at now, the coordinator's time, not the agent's, so that
// skewed agent clocks (or the sped-up clock of dev) cannot reorder or hide
// points; the latest reading's At is that time too.
func (ms *metricStore) record(m market.MachineID, samples []market.GPUSample, now time.Time) {
	if len(samples) == 0 {
		return
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if now.Sub(ms.lastSweep) >= metricSweepEvery {
		ms.lastSweep = now
		for id, s := range ms.machines {
			if now.Sub(s.seen) > metricRetention {
				delete(ms.machines, id)
			}
		}
	}
	s := ms.machines[m]
	if s == nil {
		s = &machineSeries{gpus: map[int]*gpuSeries{}}
		ms.machines[m] = s
	}
	s.seen = now
	sec := now.Unix()
	for _, g := range samples {
		if g.Index < 0 || g.Index >= maxSampledGPUs {
			continue
		}
		g.UtilPct, g.PowerW, g.TempC = finite(g.UtilPct), finite(g.PowerW), finite(g.TempC)
		g.At = now // on the coordinator's clock, like the series
		gs := s.gpus[g.Index]
		if gs == nil {
			gs = &gpuSeries{tiers: make([]ring, len(metricTiers))}
			for i, t := range metricTiers {
				gs.tiers[i] = newRing(t)
			}
			s.gpus[g.Index] = gs
		}
		gs.latest = g
		for i := range gs.tiers {
			gs.tiers[i].add(sec, g.UtilPct, float64(g.MemUsedMiB), g.PowerW, g.TempC)
		}
	}
}

// latest returns the latest sample of each GPU of m, by index.
func (ms *metricStore) latest(m market.MachineID, gpus []int) []market.GPUSample {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	s := ms.machines[m]
	if s == nil {
		return nil
	}
	var out []market.GPUSample
	for i, g := range s.gpus {
		if gpus == nil || slices.Contains(gpus, i) {
			out = append(out, g.latest)
		}
	}
	slices.SortFunc(out, func(a, b market.GPUSample) int { return a.Index - b.Index })
	return out
}

// tierFor returns the finest tier that spans window.
func tierFor(window time.Duration) (int, metricTier) {
	for i, t := range metricTiers {
		if t.step*time.Duration(t.points) >= window {
			return i, t
		}
	}
	return len(metricTiers) - 1, metricTiers[len(metricTiers)-1]
}

// series returns the series of m's GPUs (all when gpus is nil) for buckets
// starting in [from, to), at the finest step that spans the window.
func (ms *metricStore) series(m market.MachineID, gpus []int, from, to time.Time) ([]market.GPUSeries, time.Duration) {
	ti, tier := tierFor(to.Sub(from))
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	out := []market.GPUSeries{}
	s := ms.machines[m]
	if s == nil {
		return out, tier.step
	}
	// The bucket holding from starts before it; include it.
	lo := from.Unix() - mod(from.Unix(), int64(tier.step/time.Second))
	for i, g := range s.gpus {
		if gpus != nil && !slices.Contains(gpus, i) {
			continue
		}
		pts := g.tiers[ti].since(lo, to.Unix()+1)
		if pts == nil {
			pts = []market.MetricPoint{}
		}
		out = append(out, market.GPUSeries{Index: i, UUID: g.latest.UUID, Points: pts})
	}
	slices.SortFunc(out, func(a, b market.GPUSeries) int { return a.Index - b.Index })
	return out, tier.step
}

// GPULatest returns the latest sample its agent reported of each GPU of
// machine m, ordered by index; nil when this coordinator holds none. At is
// when the coordinator received it, on its own clock; samples may be old,
// so check At. Used by autoscaling.
func (s *Service) GPULatest(m market.MachineID) []market.GPUSample {
	return s.metrics.latest(m, nil)
}

// checkWindow validates a metrics window.
func checkWindow(op string, window time.Duration) error {
	if window <= 0 || window > MaxMetricsWindow {
		return market.Errorf(op, market.Invalid, "window %s must be above zero and at most %s, like 1h or 15m", window, MaxMetricsWindow)
	}
	return nil
}

// MachineMetrics returns the recent GPU metrics of one of the caller's
// machines (any machine for admins) over window.
func (s *Service) MachineMetrics(ctx context.Context, caller market.Account, id market.MachineID, window time.Duration) (market.MetricsReport, error) {
	const op = "machine metrics"
	if err := checkWindow(op, window); err != nil {
		return market.MetricsReport{}, err
	}
	err := s.store.Tx(ctx, func(tx Tx) error {
		_, err := ownMachine(ctx, tx, caller, id, op)
		return err
	})
	if err != nil {
		return market.MetricsReport{}, err
	}
	to := s.now()
	from := to.Add(-window)
	r := market.MetricsReport{Machine: id, From: from, To: to, Latest: s.metrics.latest(id, nil)}
	var step time.Duration
	r.GPUs, step = s.metrics.series(id, nil, from, to)
	r.StepSeconds = int(step / time.Second)
	if r.Latest == nil {
		r.Latest = []market.GPUSample{}
	}
	return r, nil
}

// InstanceMetrics returns the recent metrics of the GPUs of one of the
// caller's instances over window, limited to the time it ran: a GPU's
// earlier or later tenants are not shown.
func (s *Service) InstanceMetrics(ctx context.Context, caller market.Account, id market.InstanceID, window time.Duration) (market.MetricsReport, error) {
	const op = "instance metrics"
	if err := checkWindow(op, window); err != nil {
		return market.MetricsReport{}, err
	}
	inst, err := s.Instance(ctx, caller, id)
	if err != nil {
		return market.MetricsReport{}, err
	}
	to := s.now()
	if inst.EndedAt != nil && inst.EndedAt.Before(to) {
		to = *inst.EndedAt
	}
	from := to.Add(-window)
	r := market.MetricsReport{Machine: inst.Machine, Instance: id, From: from, To: to, Latest: []market.GPUSample{}, GPUs: []market.GPUSeries{}}
	_, tier := tierFor(window)
	r.StepSeconds = int(tier.step / time.Second)
	if inst.StartedAt == nil || len(inst.GPUs) == 0 {
		return r, nil // never ran: nothing measured for it
	}
	if inst.StartedAt.After(from) {
		from = *inst.StartedAt
		r.From = from
	}
	var step time.Duration
	r.GPUs, step = s.metrics.series(inst.Machine, inst.GPUs, from, to)
	r.StepSeconds = int(step / time.Second)
	if inst.Active() {
		if l := s.metrics.latest(inst.Machine, inst.GPUs); l != nil {
			r.Latest = l
		}
	}
	return r, nil
}

// ParseMetricsWindow reads a window such as "1h", "15m" or "24h"; empty
// means 1h.
func ParseMetricsWindow(s string) (time.Duration, error) {
	const op = "parse metrics window"
	if s == "" {
		return time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, market.Errorf(op, market.Invalid, "window %q is not a duration; write it like 1h, 15m or 24h", s)
	}
	if err := checkWindow(op, d); err != nil {
		return 0, err
	}
	return d, nil
}

// LoopStat is how often one step of the leader's background pass ran and
// how long it took in all.
type LoopStat struct {
	Count   int64
	Seconds float64
}

// loopTimes accumulates the durations of the background steps.
type loopTimes struct {
	mu    sync.Mutex
	stats map[string]LoopStat
}

func (l *loopTimes) observe(name string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stats == nil {
		l.stats = map[string]LoopStat{}
	}
	st := l.stats[name]
	st.Count++
	st.Seconds += d.Seconds()
	l.stats[name] = st
}

// step runs one step of the background pass and records its duration
// (in real time, whatever the clock's speed-up), failed or not.
func (s *Service) step(ctx context.Context, name string, f func(context.Context) error) error {
	start := time.Now()
	err := f(ctx)
	s.metrics.loops.observe(name, time.Since(start))
	return err
}

// LoopStats returns the count and total duration of each background step
// this coordinator ran, by name, for the metrics.
func (s *Service) LoopStats() map[string]LoopStat {
	l := &s.metrics.loops
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]LoopStat, len(l.stats))
	for k, v := range l.stats {
		out[k] = v
	}
	return out
}

// Gauges are the coordinator's current totals, for the metrics.
type Gauges struct {
	MachinesByStatus map[market.MachineStatus]int
	GPUs, GPUsRented int
	InstancesByState map[market.InstanceState]int // active instances
	// LedgerTotals sums the balances of the default asset by purpose, the
	// last part of the ledger account's name (available, escrow,
	// earnings, fees, world, ...).
	LedgerTotals map[string]market.Money
}

// Gauges reads the current totals in one transaction.
func (s *Service) Gauges(ctx context.Context) (Gauges, error) {
	g := Gauges{MachinesByStatus: map[market.MachineStatus]int{}, InstancesByState: map[market.InstanceState]int{}, LedgerTotals: map[string]market.Money{}}
	err := s.store.Tx(ctx, func(tx Tx) error {
		ms, err := tx.Machines(ctx, MachineFilter{})
		if err != nil {
			return err
		}
		for _, m := range ms {
			m.DeriveStatus()
			g.MachinesByStatus[m.Status]++
			g.GPUs += len(m.GPUs)
		}
		insts, err := tx.Instances(ctx, InstanceFilter{ActiveOnly: true})
		if err != nil {
			return err
		}
		for _, i := range insts {
			g.InstancesByState[i.State]++
			g.GPUsRented += len(i.GPUs) // held until the instance ends
		}
		bal, err := tx.Balances(ctx, market.DefaultAsset)
		if err != nil {
			return err
		}
		for a, m := range bal {
			name := string(a)
			if i := strings.LastIndexByte(name, ':'); i >= 0 {
				name = name[i+1:]
			}
			g.LedgerTotals[name] += m
		}
		return nil
	})
	return g, err
}

// Fleet returns every machine as this coordinator's offer index holds it,
// for the operator's overview; admins only. Reading the index instead of
// the store keeps the overview fast at 10,000 machines; the index follows
// changes made through other replicas within DefaultFollowEvery. UsedGPUs
// holds every GPU of an active instance, spot ones included, and Status
// is derived. The order is unspecified.
func (s *Service) Fleet(ctx context.Context, caller market.Account) ([]market.Machine, error) {
	const op = "list the fleet"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return nil, err
	}
	var insts []market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		insts, err = tx.Instances(ctx, InstanceFilter{ActiveOnly: true})
		return err
	})
	if err != nil {
		return nil, err
	}
	used := map[market.MachineID][]int{}
	for _, i := range insts {
		used[i.Machine] = append(used[i.Machine], i.GPUs...)
	}
	out := make([]market.Machine, 0, s.index.Len())
	s.index.Each(func(m *market.Machine) {
		c := *m
		c.GPUs = slices.Clone(c.GPUs) // the index's own stays untouched
		c.UsedGPUs = used[c.ID]
		c.DeriveStatus()
		out = append(out, c)
	})
	return out, nil
}
