package coord

import (
	"maps"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Replica signals: what the leader's deployment pass needs of agents'
// reports (queue lengths, health results, GPU utilisation). An agent
// reports to whichever coordinator it reaches, so each coordinator keeps
// what it received in memory (signalStore) and writes the latest signals
// of each replica in its heartbeat flush (live.go), one row per replica:
// when a value changed, and at least every signalRefresh so that the
// stored report times stay fresh. The leader reads them all in one query
// and overlays its own fresher ones.

const (
	// signalRefresh is how often an unchanged signal is written again.
	signalRefresh = 15 * time.Second
	// signalPruneEvery is how often a coordinator deletes stored signals
	// older than failureWindow.
	signalPruneEvery = time.Minute
)

// ReplicaSignal is the latest of what agents reported of one instance.
// Each value has the time it was reported at (zero with no value); the
// later one wins when two coordinators hold one, the one written last on
// a tie.
type ReplicaSignal struct {
	Instance market.InstanceID
	Queue    *int64 // queue length the workload posted
	QueueAt  time.Time
	Healthy  *bool // result of the replica's health check
	HealthAt time.Time
	Util     *float64 // mean utilisation of its GPUs, percent
	UtilAt   time.Time
	At       time.Time // when a coordinator last wrote it
}

// merge sets each value of s that o holds at the same or a later time to
// o's.
func (s *ReplicaSignal) merge(o ReplicaSignal) {
	if o.Queue != nil && (s.Queue == nil || !o.QueueAt.Before(s.QueueAt)) {
		s.Queue, s.QueueAt = o.Queue, o.QueueAt
	}
	if o.Healthy != nil && (s.Healthy == nil || !o.HealthAt.Before(s.HealthAt)) {
		s.Healthy, s.HealthAt = o.Healthy, o.HealthAt
	}
	if o.Util != nil && (s.Util == nil || !o.UtilAt.Before(s.UtilAt)) {
		s.Util, s.UtilAt = o.Util, o.UtilAt
	}
}

// signalStore keeps the signals this coordinator received, in memory (a
// restarted coordinator waits for the next reports), with what must be
// written. The zero value is ready to use.
type signalStore struct {
	mu        sync.Mutex
	m         map[market.InstanceID]*localSignal
	lastPrune time.Time
}

type localSignal struct {
	machine market.MachineID
	gpus    []int
	sig     ReplicaSignal // without Util, which comes from metricStore
	seen    time.Time     // last report of the instance
	changed bool          // a value changed since the last write
	written time.Time
}

// record notes a report of instance id on machine m (its GPUs, and the
// queue length and health result it carried, if any) at now.
func (st *signalStore) record(id market.InstanceID, m market.MachineID, gpus []int, queue *int64, healthy *bool, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.m == nil {
		st.m = map[market.InstanceID]*localSignal{}
	}
	l := st.m[id]
	if l == nil {
		l = &localSignal{sig: ReplicaSignal{Instance: id}, changed: true}
		st.m[id] = l
	}
	l.machine, l.gpus, l.seen = m, gpus, now
	if queue != nil && *queue >= 0 {
		if l.sig.Queue == nil || *l.sig.Queue != *queue {
			l.changed = true
		}
		q := *queue
		l.sig.Queue, l.sig.QueueAt = &q, now
	}
	if healthy != nil {
		if l.sig.Healthy == nil || *l.sig.Healthy != *healthy {
			l.changed = true
		}
		h := *healthy
		l.sig.Healthy, l.sig.HealthAt = &h, now
	}
}

// local returns the signals of id held here, with its GPUs' utilisation.
func (st *signalStore) local(id market.InstanceID, ms *metricStore) (ReplicaSignal, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.m[id]
	if l == nil {
		return ReplicaSignal{}, false
	}
	return l.withUtil(ms), true
}

func (l *localSignal) withUtil(ms *metricStore) ReplicaSignal {
	s := l.sig
	samples := ms.latest(l.machine, l.gpus)
	if len(samples) == 0 {
		return s
	}
	var sum float64
	for _, g := range samples {
		sum += g.UtilPct
		if g.At.After(s.UtilAt) {
			s.UtilAt = g.At
		}
	}
	u := sum / float64(len(samples))
	s.Util = &u
	return s
}

// take returns the signals the flush at now must write: changed ones and
// those not written for signalRefresh. It forgets instances not reported
// for failureWindow (ended, or reporting elsewhere).
func (st *signalStore) take(now time.Time, ms *metricStore) []ReplicaSignal {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []ReplicaSignal
	for id, l := range st.m {
		switch {
		case now.Sub(l.seen) >= failureWindow:
			delete(st.m, id)
		case l.changed || now.Sub(l.written) >= signalRefresh:
			s := l.withUtil(ms)
			s.At = now
			out = append(out, s)
		}
	}
	return out
}

// written records that sigs were written at now. A value that changed
// since take is written by the next flush.
func (st *signalStore) written(sigs []ReplicaSignal, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, s := range sigs {
		l := st.m[s.Instance]
		if l == nil {
			continue
		}
		l.written = now
		if sameValue(l.sig.Queue, s.Queue) && sameValue(l.sig.Healthy, s.Healthy) {
			l.changed = false
		}
	}
}

// prune reports whether the flush at now should delete old stored signals.
func (st *signalStore) prune(now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return now.Sub(st.lastPrune) >= signalPruneEvery
}

func (st *signalStore) pruned(now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.lastPrune = now
}

// keep drops the signals of instances not in active.
func (st *signalStore) keep(active map[market.InstanceID]bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	maps.DeleteFunc(st.m, func(id market.InstanceID, _ *localSignal) bool { return !active[id] })
}

func sameValue[T comparable](a, b *T) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}
