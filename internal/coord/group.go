package coord

import (
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
)

// groupCommit makes calls that arrive together share a transaction (group
// commit). The first call to find no batch running runs one: it takes the
// calls queued meanwhile, up to max, and runs them with run (one
// transaction). Batches run one at a time, but only up to the commit: run
// calls next once its transaction has committed (Tx.AfterCommit), and the
// calls queued meanwhile start as the next batch, in a new goroutine,
// while this one finishes (on Postgres, numbering its events; then the
// work that follows the commit). So no caller waits for more than the
// batches ahead of it, and the store's work after a commit overlaps the
// next batch.
//
// run must finish every call of its batch (set its result) before it
// returns. If it returns without calling next, next is called then. A
// panic in run (a bug) is logged and fails the batch's calls, instead of
// leaving their callers, and every call after them, waiting for ever.
type groupCommit[C interface{ fail() }] struct {
	name string // what a batch does, for the log
	max  int
	run  func(batch []C, next func())
	log  *slog.Logger

	mu      sync.Mutex
	queue   []*groupCall[C]
	running bool // a batch runs, and has not yet let the next one start
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
	g.runNext()
	<-call.done
}

// runNext runs the batch at the head of the queue; the caller has set
// running.
func (g *groupCommit[C]) runNext() {
	g.mu.Lock()
	n := min(len(g.queue), g.max)
	batch := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	g.mu.Unlock()
	var once sync.Once
	next := func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if len(g.queue) == 0 {
				g.running = false
			} else {
				go g.runNext()
			}
		})
	}
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
		next()
		for _, call := range batch {
			close(call.done)
		}
	}()
	g.run(cs, next)
}
