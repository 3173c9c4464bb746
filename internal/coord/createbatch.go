package coord

import (
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/gpumarket/gpumarket/internal/market"
)

// On-demand creates that arrive together share a transaction (group
// commit). The first create to find no batch running commits: it takes
// the creates queued meanwhile, up to maxCreateBatch, runs each as a step
// of one transaction (Tx.Atomic: a create refused is undone alone), and
// repeats until its own create is done; it then hands the queue to a new
// goroutine, so that no caller waits for more than the batches ahead of
// it. On Postgres every create takes the next transfer number from a
// counter row, and concurrent transactions that do so fail each other
// (SERIALIZABLE) and are retried: one transaction per batch instead of
// one per create removes those collisions. On SQLite, whose
// transactions queue for its one writer, it saves a commit per create.

// maxCreateBatch is how many creates one transaction makes at most.
const maxCreateBatch = 64

type createBatcher struct {
	mu      sync.Mutex
	queue   []*createCall
	running bool // a goroutine is running batches
}

type createCall struct {
	ctx    context.Context // the caller's values (idempotency key), without its cancellation
	caller market.Account
	req    market.CreateInstanceRequest
	base   market.Instance // from newInstance
	inst   market.Instance
	err    error
	done   chan struct{}
}

// createBatched creates inst (from newInstance) in the next batch and
// returns it once committed, the machine's agent notified and the offer
// index refreshed.
func (s *Service) createBatched(ctx context.Context, caller market.Account, req market.CreateInstanceRequest, inst market.Instance) (market.Instance, error) {
	c := &createCall{ctx: context.WithoutCancel(ctx), caller: caller, req: req, base: inst, done: make(chan struct{})}
	b := &s.creates
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.running {
		b.mu.Unlock()
		<-c.done
		return c.inst, c.err
	}
	b.running = true
	b.mu.Unlock()
	s.drainCreates(c)
	return c.inst, c.err
}

// drainCreates runs batches from the queue until own is done (or, with own
// nil, until the queue is empty), then hands what is left to a new
// goroutine or marks the batcher idle.
func (s *Service) drainCreates(own *createCall) {
	b := &s.creates
	for {
		b.mu.Lock()
		ownDone := own != nil && own.finished()
		if len(b.queue) == 0 || ownDone {
			if len(b.queue) == 0 {
				b.running = false
			} else {
				go s.drainCreates(nil)
			}
			b.mu.Unlock()
			return
		}
		n := min(len(b.queue), maxCreateBatch)
		batch := slices.Clone(b.queue[:n])
		b.queue = slices.Delete(b.queue, 0, n)
		b.mu.Unlock()
		s.runCreates(batch)
	}
}

func (c *createCall) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// runCreates makes one batch of creates in one transaction. When the
// transaction fails (a store failure, not a refusal), each create is tried
// alone, so that the failure is only its own.
func (s *Service) runCreates(batch []*createCall) {
	ctx := batch[0].ctx
	// A panic (a bug) fails the batch's creates instead of leaving their
	// callers, and every create after them, waiting for ever.
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("instance create batch panicked", "panic", p, "stack", string(debug.Stack()))
			for _, c := range batch {
				if !c.finished() {
					c.inst, c.err = market.Instance{}, market.Errorf("create instance", market.Internal, "internal error (logged)")
					close(c.done)
				}
			}
		}
	}()
	err := s.store.Tx(ctx, func(tx Tx) error {
		for _, c := range batch {
			c.inst = c.base
			c.err = tx.Atomic(ctx, func() error { return s.createIn(c.ctx, tx, c.caller, c.req, &c.inst) })
			if storeFailure(c.err) {
				return c.err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		for _, c := range batch {
			c.inst = c.base
			c.err = s.store.Tx(ctx, func(tx Tx) error { return s.createIn(c.ctx, tx, c.caller, c.req, &c.inst) })
		}
	} else if err != nil {
		batch[0].err = err
	}
	var touched []market.MachineID
	for _, c := range batch {
		if c.err == nil {
			touched = append(touched, c.inst.Machine)
			s.hub.notify(machineTopic(c.inst.Machine))
		} else {
			c.inst = market.Instance{}
		}
	}
	s.reindex(ctx, touched...)
	for _, c := range batch {
		close(c.done)
	}
}

// storeFailure reports whether a create's error is the store's (which
// ends its batch) rather than an answer to the request: a refusal, or the
// idempotency key found recorded.
func storeFailure(err error) bool {
	var rec *recordedError
	return err != nil && market.KindOf(err) == market.Internal && !errors.As(err, &rec) && !errors.Is(err, errKeyRace)
}
