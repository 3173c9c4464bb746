package coord

import (
	"cmp"
	"slices"
	"sync"

	"github.com/gpumarket/gpumarket/internal/market"
)

// machineMemo keeps a value per machine, read from the store, until a
// change forgets it. A read that began before a forget keeps nothing: it
// takes the generation first (reading) and stores with it (store), since
// it may predate the change. Each value weighs what store or update says;
// past max in all (maxMemoWeight when 0), the memo starts afresh.
type machineMemo[T any] struct {
	max    int
	mu     sync.Mutex
	gen    map[market.MachineID]uint64 // forgets so far
	vals   map[market.MachineID]memoEntry[T]
	weight int
}

type memoEntry[T any] struct {
	gen    uint64
	v      T
	weight int
}

// maxMemoWeight bounds a machineMemo: for the desired state's instances,
// how many it keeps.
const maxMemoWeight = 50_000

// get returns the value kept for id. The caller must not change it.
func (m *machineMemo[T]) get(id market.MachineID) (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.vals[id]
	if !ok || e.gen != m.gen[id] {
		var zero T
		return zero, false
	}
	return e.v, true
}

// reading returns the generation to pass to store, before a read.
func (m *machineMemo[T]) reading(id market.MachineID) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen[id]
}

// store keeps v, of the given weight, read by a read begun at generation g.
func (m *machineMemo[T]) store(id market.MachineID, g uint64, v T, weight int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen[id] == g {
		m.put(id, v, weight)
	}
}

// forget drops what is kept of id, and what a read begun before keeps.
func (m *machineMemo[T]) forget(id market.MachineID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bump(id)
	m.drop(id)
}

// update replaces the value kept for id with fn's, as a change made here
// leaves it, and keeps nothing a read begun before would.
func (m *machineMemo[T]) update(id market.MachineID, fn func(T) (T, int)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.vals[id]
	valid := ok && e.gen == m.gen[id]
	m.bump(id)
	m.drop(id)
	if valid {
		v, weight := fn(e.v)
		m.put(id, v, weight)
	}
}

func (m *machineMemo[T]) put(id market.MachineID, v T, weight int) {
	m.drop(id)
	if m.vals == nil || m.weight+weight > cmp.Or(m.max, maxMemoWeight) {
		m.vals, m.weight = map[market.MachineID]memoEntry[T]{}, 0
	}
	m.vals[id] = memoEntry[T]{gen: m.gen[id], v: v, weight: weight}
	m.weight += weight
}

func (m *machineMemo[T]) bump(id market.MachineID) {
	if m.gen == nil {
		m.gen = map[market.MachineID]uint64{}
	}
	m.gen[id]++
}

func (m *machineMemo[T]) drop(id market.MachineID) {
	if e, ok := m.vals[id]; ok {
		m.weight -= e.weight
		delete(m.vals, id)
	}
}

// The desired state keeps each machine's active instances (Service.work),
// so that the long-poll answer after a create made here needs no read: a
// create adds its instance (workAdded), and every other change to a
// machine's instances made here forgets the machine (machineChanged,
// which also wakes its agent). The change follower forgets the machines
// that other replicas' changes name; until it reads them, an answer here
// may lack them, as the agent's long poll here would not have woken for
// them either. They weigh one per instance.

// workAdded adds an instance just created to what is kept of its machine,
// ordered as the store lists them: by CreatedAt, then ID.
func (s *Service) workAdded(inst market.Instance) {
	s.work.update(inst.Machine, func(insts []market.Instance) ([]market.Instance, int) {
		insts = append(slices.Clone(insts), inst)
		slices.SortStableFunc(insts, func(a, b market.Instance) int {
			return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
		})
		return insts, len(insts)
	})
}

// machineChanged follows a committed change to the instances of machine
// id made here: what is kept of them is dropped, and the agent's long
// poll wakes up.
func (s *Service) machineChanged(id market.MachineID) {
	s.forgetMachine(id)
	s.hub.notify(machineTopic(id))
}

// forgetMachine drops what is kept of machine id's instances: for the
// desired state and of the reports seen.
func (s *Service) forgetMachine(id market.MachineID) {
	s.work.forget(id)
	s.seen.forget(id)
}

// An agent's report is also its heartbeat, and lists every instance the
// agent runs, changed or not. So that the heartbeats of machines with
// work cost no transaction either, the coordinator keeps, per machine,
// the instance reports it recorded that left their instance as the same
// report again would (Service.seen): running, reported running, or
// starting, reported starting, ports as kept. A report that repeats them
// (same instances, generations, states and ports, no logs) from the
// machine's owner, online here, is a heartbeat: memory only, with its
// replica signals. Every change to the machine's instances made here
// forgets them (machineChanged), and so does the change follower for
// other replicas' changes (a stop, for one, moves the instance to a new
// generation); until it does, a report of the old generation through this
// replica is taken as a heartbeat instead of rejected, as the agent's
// long poll here would not have heard of the change either. They weigh
// one per instance.

// maxSeenReports bounds Service.seen: instances whose last report is kept.
const maxSeenReports = 400_000

// seenReport is an instance report recorded, and what answering it again
// needs of the instance: its GPUs, and whether it is a deployment's
// replica (its signals). A machine's are a slice, not a map: a few per
// machine, and a map of one weighed some 800 bytes.
type seenReport struct {
	id      market.InstanceID
	gen     int64
	state   market.ObservedState
	ports   []market.PortBinding
	gpus    []int
	replica bool
}

type seenReports []seenReport

// find returns the report kept of instance id.
func (rs seenReports) find(id market.InstanceID) (seenReport, bool) {
	for _, r := range rs {
		if r.id == id {
			return r, true
		}
	}
	return seenReport{}, false
}

// repeats returns what is kept of the reports of machine id when r
// repeats them (see above).
func (s *Service) repeats(id market.MachineID, r market.Report) (seenReports, bool) {
	if len(r.Instances) == 0 || len(r.Logs) > 0 {
		return nil, false
	}
	seen, ok := s.seen.get(id)
	if !ok {
		return nil, false
	}
	for _, rep := range r.Instances {
		k, ok := seen.find(rep.Instance)
		if !ok || k.gen != rep.Generation || k.state != rep.State || len(rep.Ports) > 0 && !slices.Equal(rep.Ports, k.ports) {
			return nil, false
		}
	}
	return seen, true
}

// noteSeen keeps rep, an accepted report that left inst as the same
// report again would, in seen.
func noteSeen(seen *seenReports, rep market.InstanceReport, inst market.Instance) {
	*seen = slices.DeleteFunc(*seen, func(r seenReport) bool { return r.id == inst.ID }) // a report that names it twice
	same := rep.State == market.ObservedRunning && inst.State == market.InstanceRunning ||
		rep.State == market.ObservedStarting && inst.State == market.InstanceStarting
	if same && (len(rep.Ports) == 0 || slices.Equal(rep.Ports, inst.PortMap)) {
		// The ports cloned: the caller's may change (kept, they must not).
		*seen = append(*seen, seenReport{id: inst.ID, gen: inst.Generation, state: rep.State, ports: slices.Clone(inst.PortMap),
			gpus: inst.GPUs, replica: inst.Env[market.DeploymentEnv] != ""})
	}
}
