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
// of one transaction (Tx.AtomicOrRerun: a create refused is undone alone),
// with the batch's machines read once (batchReads), and
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
	var changed map[market.MachineID]bool // by the batch, other than its instances' GPUs
	err := s.store.Tx(ctx, func(tx Tx) error {
		// The creates' writes go to the store together, at the commit
		// (nothing here acts on them before it).
		tx.WriteBehind()
		reads, err := readBatch(ctx, tx, batch)
		if err != nil {
			return err
		}
		changed = reads.changed
		for _, c := range batch {
			c.inst = c.base
			// A create is refused before it writes (nearly always): its
			// step needs no savepoint (Tx.AtomicOrRerun).
			c.err = tx.AtomicOrRerun(ctx, func() error { return s.createIn(c.ctx, reads, c.caller, c.req, &c.inst) })
			if storeFailure(c.err) {
				return c.err
			}
			if c.err != nil {
				reads.forget(c)
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
	var created []market.Instance
	for _, c := range batch {
		if c.err != nil {
			c.inst = market.Instance{}
		} else {
			created = append(created, c.inst)
		}
	}
	if err != nil {
		changed = map[market.MachineID]bool{} // made one by one: each refreshed from the store
		for _, i := range created {
			changed[i.Machine] = true
		}
	}
	for _, i := range created {
		if changed[i.Machine] {
			s.machineChanged(i.Machine)
		} else {
			s.workAdded(i) // what the desired state lists now
			s.hub.notify(machineTopic(i.Machine))
		}
	}
	s.indexCreated(ctx, created, changed)
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

// batchReads is a create batch's transaction, which reads once for the
// whole batch, instead of once per create, the batch's machines, the GPUs
// in use on them, the renters' available balances and spend limits and
// the creates' idempotency records. A create's own writes update what is
// kept: an instance inserted adds its GPUs to its machine's, a transfer
// without a number (ApplyTransferLater) moves the balances kept, a record
// inserted is kept; a create undone drops its machine's GPUs, its
// renter's balance and its key (forget), so that the next read of them
// goes to the store. Other writes that change what is kept drop it: an
// instance updated drops its machine's GPUs, a machine updated drops it,
// a numbered transfer drops the balances it moves. What a create writes
// otherwise changes none of these.
type batchReads struct {
	Tx
	machines map[market.MachineID]market.Machine
	used     map[market.MachineID][]int // GPUs in use; present for every machine known
	balances map[market.LedgerAccount]market.Money
	limits   map[market.AccountID]*SpendLimit // nil: none set
	records  map[IdemKey]*IdemRecord          // nil: none recorded
	// changed holds the machines whose row, or instances other than
	// those the batch creates, the batch changed (spot work preempted).
	changed map[market.MachineID]bool
}

// readBatch reads what batch's creates will read.
func readBatch(ctx context.Context, tx Tx, batch []*createCall) (*batchReads, error) {
	b := &batchReads{Tx: tx, machines: map[market.MachineID]market.Machine{}, used: map[market.MachineID][]int{},
		balances: map[market.LedgerAccount]market.Money{}, limits: map[market.AccountID]*SpendLimit{}, records: map[IdemKey]*IdemRecord{},
		changed: map[market.MachineID]bool{}}
	var ids []market.MachineID
	var renters []market.AccountID
	var avail []market.LedgerAccount
	var keys []IdemKey
	for _, c := range batch {
		if id := c.req.Machine; id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
		if !slices.Contains(renters, c.caller.ID) {
			renters = append(renters, c.caller.ID)
			avail = append(avail, market.Available(c.caller.ID))
		}
		if k, ok := c.ctx.Value(createKey{}).(idemCall); ok {
			keys = append(keys, IdemKey{Account: k.caller, Key: k.key})
		}
	}
	if len(ids) > 0 {
		ms, err := tx.Machines(ctx, MachineFilter{IDs: ids})
		if err != nil {
			return nil, err
		}
		used, err := tx.ActiveGPUs(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			b.machines[m.ID], b.used[m.ID] = m, used[m.ID]
		}
	}
	bals, err := tx.BalancesOf(ctx, market.DefaultAsset, avail)
	if err != nil {
		return nil, err
	}
	for _, a := range avail {
		b.balances[a] = bals[a]
	}
	limits, err := tx.SpendLimitsOf(ctx, renters)
	if err != nil {
		return nil, err
	}
	for _, r := range renters {
		if l, ok := limits[r]; ok {
			b.limits[r] = &l
		} else {
			b.limits[r] = nil
		}
	}
	if len(keys) > 0 {
		recs, err := tx.IdempotencyOf(ctx, keys)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if r, ok := recs[k]; ok {
				b.records[k] = &r
			} else {
				b.records[k] = nil
			}
		}
	}
	return b, nil
}

func (b *batchReads) Machine(ctx context.Context, id market.MachineID) (market.Machine, error) {
	if m, ok := b.machines[id]; ok {
		return m, nil
	}
	return b.Tx.Machine(ctx, id)
}

func (b *batchReads) ActiveGPUs(ctx context.Context, ids []market.MachineID) (map[market.MachineID][]int, error) {
	out := make(map[market.MachineID][]int, len(ids))
	for _, id := range ids {
		u, ok := b.used[id]
		if !ok {
			return b.Tx.ActiveGPUs(ctx, ids)
		}
		if len(u) > 0 {
			out[id] = slices.Clone(u)
		}
	}
	return out, nil
}

func (b *batchReads) Balance(ctx context.Context, a market.LedgerAccount, asset market.Asset) (market.Money, error) {
	if v, ok := b.balances[a]; ok && asset == market.DefaultAsset {
		return v, nil
	}
	return b.Tx.Balance(ctx, a, asset)
}

func (b *batchReads) SpendLimit(ctx context.Context, account market.AccountID) (SpendLimit, error) {
	l, ok := b.limits[account]
	switch {
	case !ok:
		return b.Tx.SpendLimit(ctx, account)
	case l == nil:
		return SpendLimit{}, market.Errorf("get spend limits", market.NotFound, "account %s set no spend limits", account)
	}
	return *l, nil
}

func (b *batchReads) Idempotency(ctx context.Context, account market.AccountID, key string) (IdemRecord, error) {
	r, ok := b.records[IdemKey{Account: account, Key: key}]
	switch {
	case !ok:
		return b.Tx.Idempotency(ctx, account, key)
	case r == nil:
		return IdemRecord{}, market.Errorf("get idempotency key", market.NotFound, "no call recorded with key %q", key)
	}
	return *r, nil
}

func (b *batchReads) InsertInstance(ctx context.Context, i market.Instance) error {
	if err := b.Tx.InsertInstance(ctx, i); err != nil {
		delete(b.used, i.Machine)
		return err
	}
	if u, ok := b.used[i.Machine]; ok && i.Active() {
		u = append(slices.Clone(u), i.GPUs...)
		slices.Sort(u)
		b.used[i.Machine] = u
	}
	return nil
}

// forget drops what c's create, undone, may have changed.
func (b *batchReads) forget(c *createCall) {
	delete(b.used, c.req.Machine)
	delete(b.balances, market.Available(c.caller.ID))
	if k, ok := c.ctx.Value(createKey{}).(idemCall); ok {
		delete(b.records, IdemKey{Account: k.caller, Key: k.key})
	}
}

func (b *batchReads) UpdateInstance(ctx context.Context, i market.Instance) error {
	delete(b.used, i.Machine)
	b.changed[i.Machine] = true
	return b.Tx.UpdateInstance(ctx, i)
}

func (b *batchReads) UpdateMachine(ctx context.Context, m market.Machine) error {
	delete(b.machines, m.ID)
	b.changed[m.ID] = true
	return b.Tx.UpdateMachine(ctx, m)
}

func (b *batchReads) ApplyTransfer(ctx context.Context, tr market.Transfer) (market.Transfer, error) {
	for _, e := range tr.Entries {
		delete(b.balances, e.Account)
	}
	return b.Tx.ApplyTransfer(ctx, tr)
}

func (b *batchReads) ApplyTransferLater(ctx context.Context, tr market.Transfer) error {
	if err := b.Tx.ApplyTransferLater(ctx, tr); err != nil {
		for _, e := range tr.Entries {
			delete(b.balances, e.Account)
		}
		return err
	}
	for _, e := range tr.Entries {
		if v, ok := b.balances[e.Account]; ok && tr.Asset == market.DefaultAsset {
			b.balances[e.Account] = v + e.Amount
		} else {
			delete(b.balances, e.Account)
		}
	}
	return nil
}

func (b *batchReads) ApplyTransfers(ctx context.Context, trs []market.Transfer) ([]market.Transfer, error) {
	for _, tr := range trs {
		for _, e := range tr.Entries {
			delete(b.balances, e.Account)
		}
	}
	return b.Tx.ApplyTransfers(ctx, trs)
}

func (b *batchReads) PutSpendLimit(ctx context.Context, l SpendLimit) error {
	delete(b.limits, l.Account)
	return b.Tx.PutSpendLimit(ctx, l)
}

func (b *batchReads) InsertIdempotency(ctx context.Context, r IdemRecord) error {
	k := IdemKey{Account: r.Account, Key: r.Key}
	if err := b.Tx.InsertIdempotency(ctx, r); err != nil {
		delete(b.records, k)
		return err
	}
	if _, ok := b.records[k]; ok {
		b.records[k] = &r
	}
	return nil
}
