package coord

import (
	"log/slog"
	"sync"
	"testing"
	"time"
)

type testCall struct {
	n      int
	failed bool
}

func (c *testCall) fail() { c.failed = true }

// The next batch starts once a batch calls next (its commit), while that
// batch is still finishing; a batch holds max calls at most.
func TestGroupCommitOverlapsTheNextBatch(t *testing.T) {
	firstCommitted, secondRan := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	g := &groupCommit[*testCall]{name: "test", max: 2, log: slog.New(slog.DiscardHandler)}
	g.run = func(batch []*testCall, next func()) {
		mu.Lock()
		sizes = append(sizes, len(batch))
		k := len(sizes)
		mu.Unlock()
		if k == 2 {
			close(secondRan)
		}
		if k > 1 {
			return
		}
		// Queue three calls behind this batch, then commit.
		for g.queued() < 3 {
			time.Sleep(time.Millisecond)
		}
		next()
		close(firstCommitted)
		select {
		case <-secondRan:
		case <-time.After(10 * time.Second):
			t.Error("the next batch did not start before this one finished")
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { g.do(&testCall{n: 0}) })
	for g.queued() > 0 || !g.busy() {
		time.Sleep(time.Millisecond)
	}
	for k := 1; k <= 3; k++ {
		wg.Go(func() { g.do(&testCall{n: k}) })
	}
	wg.Wait()
	<-firstCommitted
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 3 || sizes[0] != 1 || sizes[1] != 2 || sizes[2] != 1 {
		t.Errorf("batches of %v calls, want [1 2 1] (at most 2 each)", sizes)
	}
	if g.busy() {
		t.Error("the group is still marked running with nothing queued")
	}
}

// A panic fails its batch's calls, and the calls after it still run.
func TestGroupCommitSurvivesAPanic(t *testing.T) {
	var runs int
	g := &groupCommit[*testCall]{name: "test", max: 8, log: slog.New(slog.DiscardHandler)}
	g.run = func(batch []*testCall, next func()) {
		runs++
		if runs == 1 {
			panic("injected")
		}
	}
	a, b := &testCall{}, &testCall{}
	g.do(a)
	g.do(b)
	if !a.failed || b.failed || runs != 2 {
		t.Errorf("failed: %v, %v; runs %d; want the first call failed, the second not, two runs", a.failed, b.failed, runs)
	}
}

func (g *groupCommit[C]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

func (g *groupCommit[C]) busy() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running
}
