package coord

import (
	"cmp"
	"slices"
	"sync"

	"github.com/gpumarket/gpumarket/internal/market"
)

// workCache keeps, per machine, its active instances as the desired state
// last read them, so that the long-poll answer after a create made here
// needs no read: a create adds its instance (add), and every other change
// to a machine's instances made here forgets the machine (machineChanged,
// which also wakes its agent). The change follower forgets the machines
// that other replicas' changes name; until it reads them, an answer here
// may lack them, as the agent's long poll here would not have woken for
// them either. A read that began before a change keeps nothing (gen). At
// most maxWorkCached instances are kept in all: past that it starts
// afresh.
type workCache struct {
	mu    sync.Mutex
	gen   map[market.MachineID]uint64
	lists map[market.MachineID]workList
	size  int // instances kept
}

type workList struct {
	gen   uint64
	insts []market.Instance // ordered as the store lists them: by CreatedAt, then ID
}

// maxWorkCached bounds the instances workCache keeps.
const maxWorkCached = 50_000

// get returns the machine's active instances, when kept. The caller must
// not change them.
func (c *workCache) get(id market.MachineID) ([]market.Instance, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.lists[id]
	if !ok || l.gen != c.gen[id] {
		return nil, false
	}
	return l.insts, true
}

// reading returns the generation to pass to store, before a read.
func (c *workCache) reading(id market.MachineID) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen[id]
}

// store keeps insts, read from a read begun at generation g.
func (c *workCache) store(id market.MachineID, g uint64, insts []market.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[id] != g {
		return
	}
	c.drop(id)
	if c.lists == nil || c.size+len(insts) > maxWorkCached {
		c.lists, c.size = map[market.MachineID]workList{}, 0
	}
	c.lists[id] = workList{gen: g, insts: insts}
	c.size += len(insts)
}

// forget drops what is kept of id, and what a read begun before keeps.
func (c *workCache) forget(id market.MachineID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump(id)
	c.drop(id)
}

// add adds an instance just created on its machine to what is kept.
func (c *workCache) add(inst market.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := inst.Machine
	l, ok := c.lists[id]
	valid := ok && l.gen == c.gen[id]
	c.bump(id)
	c.drop(id)
	if !valid || c.size+len(l.insts)+1 > maxWorkCached {
		return
	}
	insts := append(slices.Clone(l.insts), inst)
	slices.SortStableFunc(insts, func(a, b market.Instance) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	c.lists[id] = workList{gen: c.gen[id], insts: insts}
	c.size += len(insts)
}

func (c *workCache) bump(id market.MachineID) {
	if c.gen == nil {
		c.gen = map[market.MachineID]uint64{}
	}
	c.gen[id]++
}

func (c *workCache) drop(id market.MachineID) {
	if l, ok := c.lists[id]; ok {
		c.size -= len(l.insts)
		delete(c.lists, id)
	}
}

// machineChanged follows a committed change to the instances of machine
// id made here: what is kept of them is dropped, and the agent's long
// poll wakes up.
func (s *Service) machineChanged(id market.MachineID) {
	s.work.forget(id)
	s.hub.notify(machineTopic(id))
}
