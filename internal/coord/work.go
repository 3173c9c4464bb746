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
// past maxMemoWeight in all, the memo starts afresh.
type machineMemo[T any] struct {
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
	if m.vals == nil || m.weight+weight > maxMemoWeight {
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
	s.work.forget(id)
	s.hub.notify(machineTopic(id))
}
