package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

var errBoom = errors.New("boom")

func testLogs(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 2)
	a, b := instance(w.renter, w.machine, 0), instance(w.renter, w.machine, 1)
	addInstance(t, s, a)
	addInstance(t, s, b)
	chunk := func(id market.InstanceID, stream, data string, sec int) market.LogChunk {
		// Seq 99 must be ignored: the store numbers chunks.
		return market.LogChunk{Instance: id, Seq: 99, Stream: stream, Data: data, At: at(sec)}
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.AppendLogs(ctx, []market.LogChunk{
			chunk(a.ID, "stdout", "a1\n", 1), chunk(b.ID, "stderr", "b1\n", 1), chunk(a.ID, "stderr", "a2\n", 2),
		})
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		if err := tx.AppendLogs(ctx, nil); err != nil {
			return err
		}
		return tx.AppendLogs(ctx, []market.LogChunk{chunk(a.ID, "stdout", "a3 ünïcode\x00\n", 3)})
	})
	numbered := func(c market.LogChunk, seq int64) market.LogChunk { c.Seq = seq; return c }
	allA := []market.LogChunk{
		numbered(chunk(a.ID, "stdout", "a1\n", 1), 1),
		numbered(chunk(a.ID, "stderr", "a2\n", 2), 2),
		numbered(chunk(a.ID, "stdout", "a3 ünïcode\x00\n", 3), 3),
	}
	for _, tc := range []struct {
		name  string
		id    market.InstanceID
		after int64
		limit int
		want  []market.LogChunk
	}{
		{"all of a", a.ID, 0, 0, allA},
		{"after 1", a.ID, 1, 0, allA[1:]},
		{"after 1, limit 1", a.ID, 1, 1, allA[1:2]},
		{"limit 2", a.ID, 0, 2, allA[:2]},
		{"after the last", a.ID, 3, 0, nil},
		{"b numbered separately", b.ID, 0, 0, []market.LogChunk{numbered(chunk(b.ID, "stderr", "b1\n", 1), 1)}},
		{"unknown instance", "i-none", 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Logs(ctx, tc.id, tc.after, tc.limit)
				if err != nil {
					return err
				}
				diff(t, "Logs", got, tc.want, cmpopts.EquateEmpty())
				return nil
			})
		})
	}
}

func testEvents(t *testing.T, s coord.Store) {
	in := []market.Event{
		{At: at(1), Type: "account.created", Account: "a-1", Message: "signed up"},
		{At: at(2), Type: "machine.registered", Account: "a-2", Machine: "m-1", Message: "rig-1 registered"},
		{At: at(3), Type: "instance.running", Account: "a-1", Machine: "m-1", Instance: "i-1", Message: "running"},
		{At: at(3), Type: "instance.stopped", Account: "a-1", Machine: "m-1", Instance: "i-1", Message: "stopped"},
		{At: at(4), Type: "machine.offline", Machine: "m-2", Message: "no heartbeat for 90 s"},
	}
	for _, e := range in {
		e.Seq = 1000 // ignored: the store numbers events
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.AppendEvent(ctx, e) })
	}
	var all []market.Event
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		all, err = tx.Events(ctx, coord.EventFilter{})
		return err
	})
	if len(all) != len(in) {
		t.Fatalf("Events returned %d events, want %d", len(all), len(in))
	}
	for k, e := range all {
		if k > 0 && e.Seq >= all[k-1].Seq {
			t.Errorf("Events not newest first with increasing Seq: %d after %d", e.Seq, all[k-1].Seq)
		}
		want := in[len(in)-1-k]
		want.Seq = e.Seq
		diff(t, "event", e, want)
	}
	pick := func(k ...int) []market.Event { // indices into in, which all holds reversed
		var out []market.Event
		for _, i := range k {
			out = append(out, all[len(in)-1-i])
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    coord.EventFilter
		want []market.Event
	}{
		{"account", coord.EventFilter{Account: "a-1"}, pick(3, 2, 0)},
		{"machine", coord.EventFilter{Machine: "m-1"}, pick(3, 2, 1)},
		{"instance", coord.EventFilter{Instance: "i-1"}, pick(3, 2)},
		{"account and machine", coord.EventFilter{Account: "a-2", Machine: "m-1"}, pick(1)},
		{"limit", coord.EventFilter{Limit: 2}, pick(4, 3)},
		{"machine, limit", coord.EventFilter{Machine: "m-1", Limit: 1}, pick(3)},
		{"machine, states only", coord.EventFilter{Machine: "m-1", StatesOnly: true}, pick(1)},
		{"states only", coord.EventFilter{StatesOnly: true}, pick(4, 1)},
		{"machines", coord.EventFilter{Machines: []market.MachineID{"m-2", "m-1"}}, pick(4, 3, 2, 1)},
		{"machines, newest of each", coord.EventFilter{Machines: []market.MachineID{"m-2", "m-1"}, LimitEach: 1}, pick(4, 3)},
		{"machines, states only, newest of each", coord.EventFilter{Machines: []market.MachineID{"m-1", "m-2"}, StatesOnly: true, LimitEach: 5}, pick(4, 1)},
		{"no match", coord.EventFilter{Instance: "i-none"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Events(ctx, tc.f)
				if err != nil {
					return err
				}
				diff(t, "Events", got, tc.want, cmpopts.EquateEmpty())
				return nil
			})
		})
	}
}

// OutcomeCounts counts one machine's instance ends and check verdicts
// over a span of time, by type and message, and nothing else.
func testOutcomeCounts(t *testing.T, s coord.Store) {
	ev := func(min int, typ string, machine market.MachineID, msg string) market.Event {
		return market.Event{At: at(min), Type: typ, Machine: machine, Instance: "i-x", Message: msg}
	}
	in := []market.Event{
		ev(1, "instance.stopped", "m-1", "stopped by the renter"), // before from
		ev(2, "instance.stopped", "m-1", "stopped by the renter"), // at from
		ev(3, "instance.stopped", "m-1", "stopped by the renter"),
		ev(3, "instance.failed", "m-1", "host lost contact"),
		ev(4, "instance.preempted", "m-1", "outbid"),
		ev(4, "instance.running", "m-1", "running"), // not an outcome
		ev(5, "machine.verified", "m-1", "check c-1 passed"),
		ev(5, "machine.verify_failed", "m-1", "check c-2 failed"),
		ev(5, "machine.offline", "m-1", "no heartbeat"),
		ev(6, "instance.stopped", "m-2", "stopped by the renter"), // another machine
		ev(6, "machine.verified", "m-1", "check c-3 passed"),      // at to
		ev(7, "instance.stopped", "m-1", "stopped by the renter"), // after to
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		for _, e := range in {
			if err := tx.AppendEvent(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.OutcomeCounts(ctx, []coord.OutcomeSpan{{Machine: "m-1", From: at(2), To: at(6)}})
		if err != nil {
			return err
		}
		m1 := []coord.EventCount{
			{Machine: "m-1", Type: "instance.failed", Message: "host lost contact", N: 1},
			{Machine: "m-1", Type: "instance.preempted", Message: "outbid", N: 1},
			{Machine: "m-1", Type: "instance.stopped", Message: "stopped by the renter", N: 2},
			{Machine: "m-1", Type: "machine.verified", Message: "check c-1 passed", N: 1},
			{Machine: "m-1", Type: "machine.verified", Message: "check c-3 passed", N: 1},
			{Machine: "m-1", Type: "machine.verify_failed", Message: "check c-2 failed", N: 1},
		}
		diff(t, "OutcomeCounts", got, m1)
		// Several machines, each over its own span, in one call.
		both, err := tx.OutcomeCounts(ctx, []coord.OutcomeSpan{{Machine: "m-2", From: at(0), To: at(9)}, {Machine: "m-1", From: at(2), To: at(6)},
			{Machine: "m-3", From: at(0), To: at(9)}})
		if err != nil {
			return err
		}
		diff(t, "OutcomeCounts of three machines", both, append(slices.Clone(m1), coord.EventCount{Machine: "m-2", Type: "instance.stopped", Message: "stopped by the renter", N: 1}))
		none, err := tx.OutcomeCounts(ctx, []coord.OutcomeSpan{{Machine: "m-3", From: at(0), To: at(9)}})
		if err != nil {
			return err
		}
		diff(t, "OutcomeCounts of a machine without events", none, []coord.EventCount(nil), cmpopts.EquateEmpty())
		return nil
	})
}

func testRollback(t *testing.T, s coord.Store) {
	exists := func(t *testing.T, id market.AccountID) bool {
		t.Helper()
		var found bool
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.Account(ctx, id)
			if market.IsKind(err, market.NotFound) {
				return nil
			}
			found = err == nil
			return err
		})
		return found
	}

	t.Run("error", func(t *testing.T) {
		a := account("rollback@example.com")
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
			if err := tx.InsertAccount(ctx, a); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: t0, Type: "x", Account: a.ID}); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Errorf("Tx = %v, want errBoom", err)
		}
		if exists(t, a.ID) {
			t.Error("account written by a failed transaction exists")
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			evs, err := tx.Events(ctx, coord.EventFilter{Account: a.ID})
			if len(evs) != 0 {
				t.Errorf("events of a failed transaction: %v", evs)
			}
			return err
		})
	})

	t.Run("after commit", func(t *testing.T) {
		// Run once the transaction has committed: what it wrote is there
		// for another transaction; not run when it fails.
		a := account("after-commit@example.com")
		var ran int
		var seen bool
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			ran = 0
			tx.AfterCommit(func() { ran++; seen = exists(t, a.ID) })
			if ran != 0 {
				t.Error("AfterCommit ran its function before the commit")
			}
			return tx.InsertAccount(ctx, a)
		})
		if ran != 1 || !seen {
			t.Errorf("after the commit, AfterCommit's function ran %d times and saw the account: %v; want once, true", ran, seen)
		}
		ran = 0
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
			tx.AfterCommit(func() { ran++ })
			return errBoom
		})
		if !errors.Is(err, errBoom) || ran != 0 {
			t.Errorf("a failed transaction: Tx = %v and AfterCommit's function ran %d times; want errBoom and none", err, ran)
		}
		if r, ok := s.(coord.Reader); ok {
			ran = 0
			err := r.Read(t.Context(), func(tx coord.Tx) error { tx.AfterCommit(func() { ran++ }); return nil })
			if err != nil || ran != 1 {
				t.Errorf("outside a transaction: Read = %v and AfterCommit's function ran %d times; want nil and once", err, ran)
			}
		}
	})

	t.Run("panic", func(t *testing.T) {
		a := account("panic@example.com")
		func() {
			defer func() {
				if p := recover(); p != errBoom {
					t.Errorf("recovered %v, want the panic value errBoom", p)
				}
			}()
			_ = s.Tx(t.Context(), func(tx coord.Tx) error {
				if err := tx.InsertAccount(t.Context(), a); err != nil {
					return err
				}
				panic(errBoom)
			})
			t.Error("Tx returned instead of panicking")
		}()
		if exists(t, a.ID) {
			t.Error("account written by a panicking transaction exists")
		}
		// The store is still usable.
		a2 := account("panic@example.com")
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAccount(ctx, a2) })
		if !exists(t, a2.ID) {
			t.Error("account not found after commit")
		}
	})

	t.Run("atomic", func(t *testing.T) {
		// A failed step is undone, including a failed statement (on
		// Postgres it would abort the whole transaction otherwise); the
		// steps around it commit, and event numbers stay gapless.
		before, kept, undone, dup := account("before@example.com"), account("kept@example.com"), account("undone@example.com"), account("BEFORE@example.com")
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			if err := tx.InsertAccount(ctx, before); err != nil {
				return err
			}
			err := tx.Atomic(ctx, func() error {
				if err := tx.InsertAccount(ctx, undone); err != nil {
					return err
				}
				if err := tx.AppendEvent(ctx, market.Event{At: t0, Type: "x", Account: undone.ID}); err != nil {
					return err
				}
				return errBoom
			})
			if !errors.Is(err, errBoom) {
				t.Errorf("Atomic = %v, want errBoom", err)
			}
			err = tx.Atomic(ctx, func() error { return tx.InsertAccount(ctx, dup) })
			wantKind(t, "Atomic with a taken email", err, market.Conflict)
			return tx.Atomic(ctx, func() error {
				if err := tx.InsertAccount(ctx, kept); err != nil {
					return err
				}
				return tx.AppendEvent(ctx, market.Event{At: t0, Type: "x", Account: kept.ID})
			})
		})
		if !exists(t, before.ID) || !exists(t, kept.ID) {
			t.Error("the writes around a failed step were lost")
		}
		if exists(t, undone.ID) || exists(t, dup.ID) {
			t.Error("a failed step's write was committed")
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			evs, err := tx.Events(ctx, coord.EventFilter{Limit: 2})
			if err == nil && (len(evs) == 0 || evs[0].Account != kept.ID || (len(evs) == 2 && evs[0].Seq != evs[1].Seq+1)) {
				t.Errorf("newest events %+v: want the kept step's event, numbered right after the one before", evs)
			}
			return err
		})
	})

	t.Run("nested and repeated steps", func(t *testing.T) {
		// The SQL stores set savepoints lazily and share them between
		// steps (sqlstore/savepoint.go): every way steps nest and follow
		// each other must still undo exactly the failed step's writes.
		accts := map[string]market.Account{}
		acct := func(name string) market.Account {
			if _, ok := accts[name]; !ok {
				accts[name] = account(name + "@nested.example.com")
			}
			return accts[name]
		}
		want := map[string]bool{}
		insert := func(ctx context.Context, tx coord.Tx, name string, kept bool) error {
			want[name] = kept
			return tx.InsertAccount(ctx, acct(name))
		}
		step := func(ctx context.Context, tx coord.Tx, fn func() error) {
			t.Helper()
			if err := tx.Atomic(ctx, fn); err != nil && !errors.Is(err, errBoom) && !market.IsKind(err, market.Conflict) {
				t.Fatalf("Atomic: %v", err)
			}
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			// Outer writes nothing; the inner step writes and fails; the
			// outer then writes and succeeds.
			step(ctx, tx, func() error {
				step(ctx, tx, func() error {
					if err := insert(ctx, tx, "inner-failed", false); err != nil {
						return err
					}
					return errBoom
				})
				return insert(ctx, tx, "outer-kept", true)
			})
			// The inner step writes and succeeds; the outer fails after it.
			step(ctx, tx, func() error {
				step(ctx, tx, func() error { return insert(ctx, tx, "inner-of-failed", false) })
				return errBoom
			})
			// Outer writes, inner writes and fails, outer goes on.
			step(ctx, tx, func() error {
				if err := insert(ctx, tx, "outer-first", true); err != nil {
					return err
				}
				step(ctx, tx, func() error {
					if err := insert(ctx, tx, "inner-after-write", false); err != nil {
						return err
					}
					return errBoom
				})
				return insert(ctx, tx, "outer-second", true)
			})
			// A failed statement inside a step that shares its outer
			// step's savepoint; then the outer step goes on.
			step(ctx, tx, func() error {
				taken := account("outer-kept@nested.example.com") // another ID, the same email
				step(ctx, tx, func() error { return tx.InsertAccount(ctx, taken) })
				return insert(ctx, tx, "after-failed-statement", true)
			})
			// A step that only reads, then fails: nothing to undo.
			step(ctx, tx, func() error {
				if _, err := tx.Account(ctx, "a-none"); !market.IsKind(err, market.NotFound) {
					return err
				}
				return errBoom
			})
			// Many steps in a row, every third failing, some nested.
			for i := range 60 {
				step(ctx, tx, func() error {
					if err := insert(ctx, tx, fmt.Sprintf("row-%d", i), i%3 != 0); err != nil {
						return err
					}
					if i%5 == 0 {
						step(ctx, tx, func() error {
							if err := insert(ctx, tx, fmt.Sprintf("row-%d-inner", i), false); err != nil {
								return err
							}
							return errBoom
						})
					}
					if i%3 == 0 {
						return errBoom
					}
					return nil
				})
			}
			return insert(ctx, tx, "top-level", true)
		})
		for name, kept := range want {
			if got := exists(t, acct(name).ID); got != kept {
				t.Errorf("account %s committed: %v, want %v", name, got, kept)
			}
		}
	})

	t.Run("commit", func(t *testing.T) {
		a := account("commit@example.com")
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			if err := tx.InsertAccount(ctx, a); err != nil {
				return err
			}
			// A transaction sees its own writes.
			_, err := tx.AccountByEmail(ctx, "COMMIT@example.com")
			return err
		})
		if !exists(t, a.ID) {
			t.Error("committed account not found")
		}
	})
}
