package storetest

import (
	"context"
	"strings"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// WriteBehind checks Tx.WriteBehind: writes kept for later are seen by the
// transaction's reads and committed; a step that fails forgets them
// without running the transaction again; a write the database refuses is
// returned by the call that made it, after the store runs the transaction
// again (a store that keeps writes: keeps); transfers keep their order.
// reruns counts the store's reruns so far.
func WriteBehind(t *testing.T, s coord.Store, reruns func() int64, keeps bool) {
	w := newWorld(t, s, 8)
	avail := market.Available(w.renter)
	apply(t, s, deposit(avail, market.Tokens(100)))
	run := func(fn func(ctx context.Context, tx coord.Tx) error) (calls int, again int64, err error) {
		ctx := t.Context()
		before := reruns()
		err = s.Tx(ctx, func(tx coord.Tx) error {
			calls++
			tx.WriteBehind()
			return fn(ctx, tx)
		})
		return calls, reruns() - before, err
	}
	hold := func(i market.Instance, amount market.Money) market.Transfer {
		tr := transfer(market.TransferHold, move(avail, market.Escrow(w.renter), amount)...)
		tr.Instance = i.ID
		return tr
	}
	exists := func(id market.InstanceID) bool {
		var err error
		do(t, s, func(ctx context.Context, tx coord.Tx) error { _, err = tx.Instance(ctx, id); return nil })
		return err == nil
	}

	t.Run("kept writes are read back and committed", func(t *testing.T) {
		i := instance(w.renter, w.machine, 0, 1)
		rec := coord.IdemRecord{Account: w.renter, Key: "behind-1", Op: "create instance", RequestHash: "h", Response: []byte(`{}`), CreatedAt: at(0)}
		before := balance(t, s, avail)
		calls, again, err := run(func(ctx context.Context, tx coord.Tx) error {
			if err := tx.InsertInstance(ctx, i); err != nil {
				return err
			}
			if err := tx.ApplyTransferLater(ctx, hold(i, market.Tokens(3))); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: at(0), Type: "instance.created", Account: w.renter, Machine: w.machine, Instance: i.ID, Message: "kept"}); err != nil {
				return err
			}
			if err := tx.InsertIdempotency(ctx, rec); err != nil {
				return err
			}
			got, err := tx.Instance(ctx, i.ID)
			if err != nil {
				return err
			}
			diff(t, "GPUs of the kept instance", got.GPUs, i.GPUs)
			used, err := tx.ActiveGPUs(ctx, []market.MachineID{w.machine})
			if err != nil {
				return err
			}
			diff(t, "ActiveGPUs with the kept instance", used, map[market.MachineID][]int{w.machine: {0, 1}})
			bal, err := tx.Balance(ctx, avail, gmt)
			if err != nil {
				return err
			}
			diff(t, "Balance after the kept hold", bal, before-market.Tokens(3))
			if _, err := tx.Idempotency(ctx, w.renter, "behind-1"); err != nil {
				t.Errorf("Idempotency of the kept record: %v", err)
			}
			return nil
		})
		if err != nil || calls != 1 || again != 0 {
			t.Fatalf("Tx: %v, %d calls, %d reruns; want nil, 1 and 0", err, calls, again)
		}
		diff(t, "Balance after commit", balance(t, s, avail), before-market.Tokens(3))
		diff(t, "ActiveGPUs after commit", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {0, 1}})
		var evs []market.Event
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			var err error
			evs, err = tx.Events(ctx, coord.EventFilter{Instance: i.ID})
			return err
		})
		if len(evs) != 1 || evs[0].Message != "kept" || evs[0].Seq == 0 {
			t.Errorf("events of the kept instance: %+v; want the one appended, numbered", evs)
		}
	})

	t.Run("an update kept is read back, or refused by its call", func(t *testing.T) {
		i := instance(w.renter, w.machine, 7)
		addInstance(t, s, i)
		var moveErr error
		calls, again, err := run(func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Instance(ctx, i.ID)
			if err != nil {
				return err
			}
			got.State, got.StartedAt = market.InstanceRunning, ptr(at(1))
			if err := tx.UpdateInstance(ctx, got); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: at(1), Type: "instance.running", Account: w.renter, Machine: w.machine, Instance: i.ID}); err != nil {
				return err
			}
			if again, err := tx.Instance(ctx, i.ID); err != nil || again.State != market.InstanceRunning {
				t.Errorf("Instance after a kept update: %v, %v; want it running", again.State, err)
			}
			got.Renter = "a-missing" // refused by the database only
			moveErr = tx.UpdateInstance(ctx, got)
			return nil
		})
		if err != nil {
			t.Fatalf("Tx: %v", err)
		}
		wantKind(t, "UpdateInstance to a missing renter", moveErr, market.NotFound)
		if keeps && (calls != 2 || again != 1) {
			t.Errorf("%d calls, %d reruns; want 2 and 1", calls, again)
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Instance(ctx, i.ID)
			if err != nil || got.State != market.InstanceRunning || got.Renter != w.renter {
				t.Errorf("instance after commit: %v of %s, %v; want running, of %s", got.State, got.Renter, err, w.renter)
			}
			return err
		})
	})

	t.Run("a step that fails forgets what it kept", func(t *testing.T) {
		kept, undone, inStep := instance(w.renter, w.machine, 2), instance(w.renter, w.machine, 3), instance(w.renter, w.machine, 4)
		before := balance(t, s, avail)
		refusal := market.Errorf("test", market.Conflict, "refused")
		calls, again, err := run(func(ctx context.Context, tx coord.Tx) error {
			if err := tx.InsertInstance(ctx, kept); err != nil {
				return err
			}
			err := tx.AtomicOrRerun(ctx, func() error {
				if err := tx.InsertInstance(ctx, undone); err != nil {
					return err
				}
				if err := tx.ApplyTransferLater(ctx, hold(undone, market.Tokens(5))); err != nil {
					return err
				}
				return refusal
			})
			if err != refusal {
				t.Errorf("AtomicOrRerun: %v, want the step's refusal", err)
			}
			err = tx.Atomic(ctx, func() error {
				if err := tx.InsertInstance(ctx, inStep); err != nil {
					return err
				}
				return refusal
			})
			if err != refusal {
				t.Errorf("Atomic: %v, want the step's refusal", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Tx: %v", err)
		}
		// A store that writes at once runs it again for AtomicOrRerun's
		// failure gone past (Reruns); one that kept the writes forgets them.
		if keeps && (calls != 1 || again != 0) {
			t.Errorf("%d calls, %d reruns; want 1 and 0", calls, again)
		}
		if !exists(kept.ID) || exists(undone.ID) || exists(inStep.ID) {
			t.Errorf("instances kept, undone in AtomicOrRerun, undone in Atomic exist: %v %v %v; want true false false",
				exists(kept.ID), exists(undone.ID), exists(inStep.ID))
		}
		diff(t, "Balance after an undone hold", balance(t, s, avail), before)
	})

	t.Run("a step owns only what it kept itself", func(t *testing.T) {
		before, mine := instance(w.renter, w.machine, 5), instance(w.renter, w.machine, 6)
		refusal := market.Errorf("test", market.Conflict, "refused")
		// refusedStep runs a step that inserts i (unless nil), reads (which
		// writes what was kept first) and is refused.
		refusedStep := func(ctx context.Context, tx coord.Tx, i *market.Instance) error {
			err := tx.AtomicOrRerun(ctx, func() error {
				if i != nil {
					if err := tx.InsertInstance(ctx, *i); err != nil {
						return err
					}
				}
				if _, err := tx.Machines(ctx, coord.MachineFilter{}); err != nil {
					return err
				}
				return refusal
			})
			if err != refusal {
				t.Errorf("AtomicOrRerun: %v, want the step's refusal", err)
			}
			return nil
		}
		// The step's read writes what was kept before it: undoing the
		// step needs no rerun.
		calls, again, err := run(func(ctx context.Context, tx coord.Tx) error {
			if err := tx.InsertInstance(ctx, before); err != nil {
				return err
			}
			return refusedStep(ctx, tx, nil)
		})
		if err != nil || calls != 1 || again != 0 || !exists(before.ID) {
			t.Errorf("a step that wrote what was kept before it: %v, %d calls, %d reruns, instance kept before it exists %v; want nil, 1, 0, true",
				err, calls, again, exists(before.ID))
		}
		// Here it writes its own: undone only by a rerun.
		calls, again, err = run(func(ctx context.Context, tx coord.Tx) error { return refusedStep(ctx, tx, &mine) })
		if err != nil || calls != 2 || again != 1 || exists(mine.ID) {
			t.Errorf("a step that wrote what it kept: %v, %d calls, %d reruns, its instance exists %v; want nil, 2, 1, false",
				err, calls, again, exists(mine.ID))
		}
	})

	t.Run("a refused write is returned by its call", func(t *testing.T) {
		taken := instance(w.renter, w.machine, 0) // GPU 0 is held (first subtest)
		var insertErr, holdErr error
		calls, again, err := run(func(ctx context.Context, tx coord.Tx) error {
			insertErr = tx.InsertInstance(ctx, taken)
			holdErr = tx.ApplyTransferLater(ctx, hold(taken, market.Tokens(1000)))
			return nil
		})
		if err != nil {
			t.Fatalf("Tx: %v", err)
		}
		wantKind(t, "InsertInstance onto a held GPU", insertErr, market.Conflict)
		wantKind(t, "ApplyTransferLater of more than the balance", holdErr, market.InsufficientFunds)
		if !strings.Contains(errText(holdErr), string(avail)) {
			t.Errorf("ApplyTransferLater: %v; want it to name %s", holdErr, avail)
		}
		if exists(taken.ID) {
			t.Errorf("the refused instance exists")
		}
		if keeps && (calls != 2 || again != 1) {
			t.Errorf("%d calls, %d reruns; want 2 and 1", calls, again)
		}
	})

	t.Run("transfers keep their order", func(t *testing.T) {
		host := market.Available(w.host)
		apply(t, s, deposit(host, market.Tokens(1)))
		first := transfer(market.TransferPayment, move(avail, host, market.Tokens(2))...)
		back := transfer(market.TransferPayment, move(host, avail, market.Tokens(3))...) // needs first's 2
		var third market.Transfer
		calls, again, err := run(func(ctx context.Context, tx coord.Tx) error {
			if err := tx.ApplyTransferLater(ctx, first); err != nil {
				return err
			}
			if err := tx.ApplyTransferLater(ctx, back); err != nil {
				return err
			}
			var err error
			third, err = tx.ApplyTransfer(ctx, transfer(market.TransferPayment, move(avail, host, market.Tokens(1))...))
			return err
		})
		if err != nil || calls != 1 || again != 0 {
			t.Fatalf("Tx: %v, %d calls, %d reruns; want nil, 1 and 0", err, calls, again)
		}
		var seqs []int64
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			for _, key := range []string{first.Key, back.Key} {
				tr, err := tx.TransferByKey(ctx, key)
				if err != nil {
					return err
				}
				seqs = append(seqs, tr.Seq)
			}
			return nil
		})
		diff(t, "numbers of two kept transfers and a third", append(seqs, third.Seq), []int64{third.Seq - 2, third.Seq - 1, third.Seq})
		diff(t, "host balance", balance(t, s, host), market.Tokens(1))
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func balance(t *testing.T, s coord.Store, a market.LedgerAccount) market.Money {
	t.Helper()
	var m market.Money
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		var err error
		m, err = tx.Balance(ctx, a, gmt)
		return err
	})
	return m
}
