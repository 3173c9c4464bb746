package coord

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/gpumarket/gpumarket/internal/market"
)

// On-demand creates and agents' reports that arrive together share a
// transaction (group commit, group.go), up to maxBatch calls: each runs as
// a step of one transaction (Tx.AtomicOrRerun: a call refused is undone
// alone), after one read for the whole batch (batchReads). The reports go
// first, so that the creates see what they changed (an instance ended
// frees its GPUs).
//
// On Postgres every create takes the next transfer number from a counter
// row, and concurrent transactions that do so fail each other
// (SERIALIZABLE) and are retried: one transaction per batch instead of one
// per create removes those collisions. A report reads and updates
// instances on the pages where creates insert theirs, so concurrent
// report and create transactions failed each other too; in one
// transaction they cannot. On SQLite, whose transactions queue for its one
// writer, a batch saves a commit per call.

// maxBatch is how many calls one transaction makes at most.
const maxBatch = 64

// batchCall is a create (*createCall) or a report (*reportCall).
type batchCall interface {
	// fail sets the call's result to an internal error, after a panic.
	fail()
}

type createCall struct {
	ctx    context.Context // the caller's values (idempotency key), without its cancellation
	caller market.Account
	req    market.CreateInstanceRequest
	base   market.Instance // from newInstance
	inst   market.Instance
	err    error
}

func (c *createCall) fail() {
	c.inst, c.err = market.Instance{}, market.Errorf("create instance", market.Internal, "internal error (logged)")
}

// createBatched creates inst (from newInstance) in the next batch and
// returns it once committed, the machine's agent notified and the offer
// index refreshed.
func (s *Service) createBatched(ctx context.Context, caller market.Account, req market.CreateInstanceRequest, inst market.Instance) (market.Instance, error) {
	c := &createCall{ctx: context.WithoutCancel(ctx), caller: caller, req: req, base: inst}
	s.batches.do(c)
	return c.inst, c.err
}

// runBatch runs one batch of creates and reports in one transaction, and
// lets the next batch start (next) once it has committed. When the
// transaction fails (a store failure, not a refusal), each call is tried
// alone, so that the failure is only its own.
func (s *Service) runBatch(batch []batchCall, next func()) {
	var creates []*createCall
	var reports []*reportCall
	var ctx context.Context
	for _, c := range batch {
		switch c := c.(type) {
		case *createCall:
			creates, ctx = append(creates, c), cmp.Or(ctx, c.ctx)
		case *reportCall:
			reports, ctx = append(reports, c), cmp.Or(ctx, c.ctx)
		}
	}
	var changed map[market.MachineID]bool // by the batch, other than its instances' GPUs
	// follow follows the committed calls in memory; the offers to refresh
	// from the store wait until the store's Tx returns (a function run at
	// the commit must not start a transaction: Tx.AfterCommit).
	var reindex []market.MachineID
	followed := false
	follow := func(alone bool) {
		reindex = append(s.reported(reports), s.created(creates, changed, alone)...) // agentapi.go
		followed = true
	}
	defer func() { s.reindex(ctx, reindex...) }()
	err := s.store.Tx(ctx, func(tx Tx) error {
		// The batch's writes go to the store together, at the commit
		// (nothing here acts on them before it; what is done outside the
		// transaction, the replica signals of reports, is done again on
		// a rerun).
		tx.WriteBehind()
		// Once committed, the next batch starts, and the agents hear of
		// their instances, while the store numbers this one's events: an
		// acknowledgement (a batch of reports alone, shorter) then often
		// runs before the next create's batch rather than after it.
		tx.AfterCommit(func() { next(); follow(false) })
		reads, err := readBatch(ctx, tx, creates, reports, func(c *reportCall) bool { return !s.live.owns(c.machine, c.caller.ID) })
		if err != nil {
			return err
		}
		changed = reads.changed
		for _, c := range reports {
			// A report is refused before it writes (its machine is not
			// the caller's), or fails the batch: its step needs no
			// savepoint (Tx.AtomicOrRerun).
			c.err = tx.AtomicOrRerun(ctx, func() error { return s.reportIn(c.ctx, reads, c) })
			if storeFailure(c.err) {
				return c.err
			}
		}
		for _, c := range creates {
			c.inst = c.base
			// A create is refused before it writes (nearly always): its
			// step needs no savepoint.
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
	next()
	if followed {
		return
	}
	alone := err != nil && len(batch) > 1
	if alone {
		for _, c := range reports {
			c.err = s.store.Tx(ctx, func(tx Tx) error {
				tx.WriteBehind()
				return s.reportIn(c.ctx, tx, c)
			})
		}
		for _, c := range creates {
			c.inst = c.base
			c.err = s.store.Tx(ctx, func(tx Tx) error { return s.createIn(c.ctx, tx, c.caller, c.req, &c.inst) })
		}
	} else if err != nil {
		for _, c := range reports {
			c.err = err
		}
		for _, c := range creates {
			c.err = err
		}
	}
	follow(alone)
}

// created follows the creates of a batch committed: the offer index
// updated and the agents notified. With alone set they were made one by
// one. It returns the machines whose offers to refresh from the store
// (reindex): those the batch changed otherwise (or, alone, all).
func (s *Service) created(creates []*createCall, changed map[market.MachineID]bool, alone bool) []market.MachineID {
	var created []market.Instance
	for _, c := range creates {
		if c.err != nil {
			c.inst = market.Instance{}
		} else {
			created = append(created, c.inst)
		}
	}
	if alone {
		changed = map[market.MachineID]bool{}
		for _, i := range created {
			changed[i.Machine] = true
		}
	}
	// The offer index first: once an agent hears of its instance, a
	// report of it, in a later batch, may change the machine again.
	refresh := s.indexCreated(created, changed)
	for _, i := range created {
		if changed[i.Machine] {
			s.machineChanged(i.Machine)
		} else {
			s.workAdded(i) // what the desired state lists now
			s.hub.notify(machineTopic(i.Machine))
		}
	}
	return refresh
}

// storeFailure reports whether a create's error is the store's (which
// ends its batch) rather than an answer to the request: a refusal, or the
// idempotency key found recorded.
func storeFailure(err error) bool {
	var rec *recordedError
	return err != nil && market.KindOf(err) == market.Internal && !errors.As(err, &rec) && !errors.Is(err, errKeyRace)
}

// batchReads is a batch's transaction, which reads once for the whole
// batch, instead of once per call: the instances the reports name; the
// machines of the creates and of the reports that read theirs, and the
// GPUs in use on them; the renters' available balances and spend limits;
// the creates' idempotency records. A create's own writes update what is
// kept: an instance inserted adds its GPUs to its machine's, a transfer
// without a number (ApplyTransferLater) moves the balances kept, a record
// inserted is kept; a create undone drops its machine's GPUs, its
// renter's balance and its key (forget), so that the next read of them
// goes to the store. Other writes that change what is kept drop it: an
// instance updated is read again, and drops its machine's GPUs unless it
// leaves them as they were (an acknowledgement); a machine updated drops
// it; a numbered transfer drops the balances it moves. What a call writes
// otherwise changes none of these.
type batchReads struct {
	Tx
	machines map[market.MachineID]market.Machine
	used     map[market.MachineID][]int // GPUs in use; present for every machine known
	balances map[market.LedgerAccount]market.Money
	limits   map[market.AccountID]*SpendLimit // nil: none set
	records  map[IdemKey]*IdemRecord          // nil: none recorded
	// instances holds what the reports name (those found).
	instances map[market.InstanceID]market.Instance
	// changed holds the machines whose row, or instances other than
	// those the batch creates, the batch changed (spot work preempted).
	changed map[market.MachineID]bool
}

// readBatch reads what a batch's creates and reports will read;
// readsMachine tells which reports read their machine (reportIn: one not
// known online here, as after a restart).
func readBatch(ctx context.Context, tx Tx, creates []*createCall, reports []*reportCall, readsMachine func(*reportCall) bool) (*batchReads, error) {
	b := &batchReads{Tx: tx, machines: map[market.MachineID]market.Machine{}, used: map[market.MachineID][]int{},
		balances: map[market.LedgerAccount]market.Money{}, limits: map[market.AccountID]*SpendLimit{}, records: map[IdemKey]*IdemRecord{},
		instances: map[market.InstanceID]market.Instance{}, changed: map[market.MachineID]bool{}}
	var insts []market.InstanceID
	for _, c := range reports {
		for _, rep := range c.r.Instances {
			insts = append(insts, rep.Instance)
		}
		for _, l := range c.r.Logs {
			insts = append(insts, l.Instance)
		}
	}
	if len(insts) > 0 {
		slices.Sort(insts)
		found, err := tx.Instances(ctx, InstanceFilter{IDs: slices.Compact(insts)})
		if err != nil {
			return nil, err
		}
		for _, i := range found {
			b.instances[i.ID] = i
		}
	}
	var ids []market.MachineID
	for _, c := range reports {
		if readsMachine(c) && !slices.Contains(ids, c.machine) {
			ids = append(ids, c.machine)
		}
	}
	for _, c := range creates {
		if id := c.req.Machine; id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
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
	if len(creates) == 0 {
		return b, nil
	}
	var renters []market.AccountID
	var avail []market.LedgerAccount
	var keys []IdemKey
	for _, c := range creates {
		if !slices.Contains(renters, c.caller.ID) {
			renters = append(renters, c.caller.ID)
			avail = append(avail, market.Available(c.caller.ID))
		}
		if k, ok := c.ctx.Value(createKey{}).(idemCall); ok {
			keys = append(keys, IdemKey{Account: k.caller, Key: k.key})
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
	keepFound(b.limits, renters, limits)
	if len(keys) > 0 {
		recs, err := tx.IdempotencyOf(ctx, keys)
		if err != nil {
			return nil, err
		}
		keepFound(b.records, keys, recs)
	}
	return b, nil
}

// keepFound keeps in kept, for each of keys, what found holds of it, or
// nil: known to be absent.
func keepFound[K comparable, V any](kept map[K]*V, keys []K, found map[K]V) {
	for _, k := range keys {
		if v, ok := found[k]; ok {
			kept[k] = &v
		} else {
			kept[k] = nil
		}
	}
}

func (b *batchReads) Instance(ctx context.Context, id market.InstanceID) (market.Instance, error) {
	if i, ok := b.instances[id]; ok {
		return i, nil
	}
	return b.Tx.Instance(ctx, id)
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
	old, ok := b.instances[i.ID]
	delete(b.instances, i.ID)
	if !ok || old.Machine != i.Machine || old.Active() != i.Active() || !slices.Equal(old.GPUs, i.GPUs) {
		delete(b.used, i.Machine)
		b.changed[i.Machine] = true
	}
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
