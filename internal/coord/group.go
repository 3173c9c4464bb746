package coord

import (
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
)

// groupCommit makes calls that arrive together share a transaction (group
// commit). The first call to find no batch running runs batches: it takes
// the calls queued meanwhile, up to max, runs them with run (one
// transaction), and repeats until its own call is done; it then hands the
// queue to a new goroutine, so that no caller waits for more than the
// batches ahead of it. Batches run one at a time.
//
// run must finish every call of its batch (set its result) before it
// returns. A panic in run (a bug) is logged and fails the batch's calls,
// instead of leaving their callers, and every call after them, waiting for
// ever.
type groupCommit[C interface{ fail() }] struct {
	name string // what a batch does, for the log
	max  int
	run  func(batch []C)
	log  *slog.Logger

	mu      sync.Mutex
	queue   []*groupCall[C]
	running bool // a goroutine is running batches
}

type groupCall[C interface{ fail() }] struct {
	c    C
	done chan struct{}
}

// do runs c in the next batch and returns once that batch is done.
func (g *groupCommit[C]) do(c C) {
	call := &groupCall[C]{c: c, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, call)
	if g.running {
		g.mu.Unlock()
		<-call.done
		return
	}
	g.running = true
	g.mu.Unlock()
	g.drain(call)
}

// drain runs batches from the queue until own is done (or, with own nil,
// until the queue is empty), then hands what is left to a new goroutine or
// marks the group idle.
func (g *groupCommit[C]) drain(own *groupCall[C]) {
	for {
		g.mu.Lock()
		if len(g.queue) == 0 || own != nil && own.finished() {
			if len(g.queue) == 0 {
				g.running = false
			} else {
				go g.drain(nil)
			}
			g.mu.Unlock()
			return
		}
		n := min(len(g.queue), g.max)
		batch := slices.Clone(g.queue[:n])
		g.queue = slices.Delete(g.queue, 0, n)
		g.mu.Unlock()
		g.runBatch(batch)
	}
}

func (g *groupCommit[C]) runBatch(batch []*groupCall[C]) {
	cs := make([]C, len(batch))
	for i, call := range batch {
		cs[i] = call.c
	}
	defer func() {
		if p := recover(); p != nil {
			g.log.Error(g.name+" batch panicked", "panic", p, "stack", string(debug.Stack()))
			for _, c := range cs {
				c.fail()
			}
		}
		for _, call := range batch {
			close(call.done)
		}
	}()
	g.run(cs)
}

func (c *groupCall[C]) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
