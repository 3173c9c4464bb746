package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gpumarket/gpumarket/internal/coord"
)

// Savepoints, lazily. Tx.Atomic (and the store's own steps that must fail
// whole) run inside a savepoint, so that a step refused leaves the
// transaction as it was. On Postgres every SAVEPOINT and RELEASE is a
// round trip to the server, and an instance create ran eight of them for
// some twenty statements. So:
//
//   - A step's savepoint is set only before its first write: a step that
//     only reads, or is refused before it writes, has nothing to undo.
//   - Steps opened with nothing written since an outer step's savepoint
//     was set share it: rolling back to it restores the state either
//     began from. (A create's first write is its instance; the instance
//     insert's own step then needs no savepoint of its own.)
//   - A savepoint no longer needed is not released at once: the release
//     goes with the next SAVEPOINT, in the same round trip, or not at all
//     (COMMIT releases every savepoint).
//
// The store's own steps (atomic: a transfer, an instance insert) set no
// savepoint at all, unless the transaction runs eagerly: nearly always
// their failure fails the coordinator's step around them (Tx.Atomic, which
// is undone to its own savepoint) or the whole transaction, and on
// Postgres each savepoint is a round trip and a subtransaction (past 64 in
// one transaction, every other session's snapshot checks get slower). A
// failed one that wrote leaves sqlTx.failed set until the coordinator's
// step around it is undone. If the caller goes on instead (runs another
// statement, or ends that step or the transaction without an error), the
// transaction is rolled back and run again eagerly, with a savepoint for
// every step, so that the step is undone alone as it would have been
// (RunTxConfig; Reruns counts them).
//
// Savepoints are named by their depth (sp_1 within none, sp_2 within
// sp_1, ...), so that a transaction uses a few statement texts however
// many steps it runs (SQLite's statement cache keeps each text it sees).
// Releasing or rolling back to one ends every savepoint set after it,
// which the bookkeeping below follows.

// failure is a step of the store's that failed after it wrote, with no
// savepoint of its own: depth is how many coordinator's steps were open
// around it.
type failure struct{ depth int }

// rerunSignal unwinds the transaction's function when it goes on after a
// failure not undone (a statement, or a coordinator's step that ends
// without an error): runTx recovers it and runs the transaction again,
// eagerly. So the function never sees what such a transaction would show
// (on Postgres, every statement refused; on SQLite, the step half done).
type rerunSignal struct{}

// goOn is called when the transaction's function goes on; after a
// failure not undone it unwinds the function (rerunSignal).
func (t *sqlTx) goOn() {
	if t.failed != nil {
		t.rerun = true
		panic(rerunSignal{})
	}
}

// run calls fn, and recovers rerunSignal (t.rerun is then set).
func (t *sqlTx) run(fn func(tx coord.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(rerunSignal); !ok {
				panic(p)
			}
		}
	}()
	return fn(t)
}

// frame is one open atomic step.
type frame struct {
	sp      int   // savepoint it rolls back to (sp_N); 0: none set yet (nothing written in it)
	owns    bool  // it set sp (rather than sharing an outer step's)
	version int64 // of the savepoint sp: the state it restores
}

// txConn runs a transaction's statements; before a statement that may
// write, it sets the savepoints the open steps lack.
type txConn struct {
	tx querier // the transaction, or the pool for reads (RunRead)
	t  *sqlTx
}

// querier is *sql.Tx or *sql.DB.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// errWriteInRead refuses a write outside a transaction (RunRead).
var errWriteInRead = errors.New("a write among reads run outside a transaction (Store.Read); run it in a transaction")

// readOnly reports whether query only reads: a SELECT.
func readOnly(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n(")
	return len(q) >= 6 && strings.EqualFold(q[:6], "SELECT")
}

func (c *txConn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := c.t.beforeStatement(ctx, query); err != nil {
		return nil, err
	}
	return c.tx.ExecContext(ctx, query, args...)
}

func (c *txConn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := c.t.beforeStatement(ctx, query); err != nil {
		return nil, err
	}
	return c.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query; when a savepoint it needs cannot be set, the
// transaction cannot commit (sqlTx.broken), and after a failure not undone
// it is run again (sqlTx.rerun); the statement still runs, since a
// *sql.Row cannot carry the error. A write among reads (RunRead) is a bug
// of the caller's: it panics.
func (c *txConn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if err := c.t.beforeStatement(ctx, query); errors.Is(err, errWriteInRead) {
		panic(fmt.Sprintf("sqlstore: %v: %s", err, query))
	}
	return c.tx.QueryRowContext(ctx, query, args...)
}

// PrepareContext prepares query; a write statement's savepoint is set now,
// so the statement must run in the step that prepared it.
func (c *txConn) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if err := c.t.beforeStatement(ctx, query); err != nil {
		return nil, err
	}
	return c.tx.PrepareContext(ctx, query)
}

// beforeStatement unwinds the transaction's function after a failure not
// undone (goOn), and runs beforeWrite.
func (t *sqlTx) beforeStatement(ctx context.Context, query string) error {
	if t.reads && !readOnly(query) {
		return errWriteInRead
	}
	t.goOn()
	t.flushKept(ctx)
	return t.beforeWrite(ctx, query)
}

// beforeWrite notes a write (any statement but a SELECT) and first sets
// the savepoint of the open steps that have none. Every open step without
// a savepoint has seen no write since it opened, so they all share one:
// the innermost savepoint set, if nothing was written since, else a new
// one, set in the same round trip as the pending release.
func (t *sqlTx) beforeWrite(ctx context.Context, query string) error {
	if readOnly(query) {
		return nil
	}
	if t.broken != nil {
		return t.broken
	}
	if n := len(t.frames); n > 0 && t.frames[n-1].sp == 0 {
		first := n - 1
		for first > 0 && t.frames[first-1].sp == 0 {
			first--
		}
		sp, version, owns := 0, t.version, false
		if first > 0 && t.frames[first-1].version == t.version {
			sp = t.frames[first-1].sp
		} else {
			// The savepoints no longer needed are the last ones set
			// (sqlTx.sps); releasing the first of them releases the rest.
			var cmd string
			kept := len(t.sps)
			if j := slices.Index(t.sps, true); j >= 0 {
				cmd, kept = fmt.Sprintf("RELEASE SAVEPOINT sp_%d; ", j+1), j
			}
			cmd += fmt.Sprintf("SAVEPOINT sp_%d", kept+1)
			if _, err := t.tx.tx.ExecContext(ctx, cmd); err != nil {
				t.broken = fmt.Errorf("savepoint: %w", err)
				return t.broken
			}
			t.sps = append(t.sps[:kept], false)
			sp, owns = len(t.sps), true
		}
		for i := first; i < n; i++ {
			t.frames[i] = frame{sp: sp, owns: owns && i == first, version: version}
		}
	}
	t.writes++
	t.version = t.writes
	return nil
}

// atomic runs fn as one of the store's steps: as step when the
// transaction runs eagerly, else with no savepoint (see above).
func (t *sqlTx) atomic(ctx context.Context, fn func() error) error {
	if t.eager {
		return t.step(ctx, fn)
	}
	if t.broken != nil {
		return t.broken
	}
	// What it writes at once, and what it keeps for later that is then
	// written within it (behind.go), it cannot undo; what it keeps that
	// is not yet written, it forgets.
	t.atomics = append(t.atomics, atomicFrame{mark: t.kept.mark(), direct: t.writes - t.flushWrites})
	err := fn()
	f := t.atomics[len(t.atomics)-1]
	t.atomics = t.atomics[:len(t.atomics)-1]
	if err != nil {
		if (f.own || t.writes-t.flushWrites != f.direct) && t.failed == nil {
			t.failed = &failure{depth: len(t.frames)}
		}
		if t.kept.mark() != f.mark {
			t.kept.undo(f.mark)
			t.held = nil
		}
	}
	return err
}

// step runs fn as one step: if fn fails, everything it wrote is undone
// and the transaction stays usable (on Postgres a failed statement would
// otherwise abort the whole transaction).
func (t *sqlTx) step(ctx context.Context, fn func() error) error {
	if t.broken != nil {
		return t.broken
	}
	// The writes kept before it are written first, so that its savepoint
	// (set before its first write) undoes only its own, and what is kept
	// when it fails is all its own.
	t.flushKept(ctx)
	t.frames = append(t.frames, frame{})
	depth := len(t.frames)
	err := fn()
	f := t.frames[len(t.frames)-1]
	t.frames = t.frames[:len(t.frames)-1]
	if err != nil && !t.kept.empty() {
		t.kept = behind{}
		t.held = nil
	}
	failedInside := t.failed != nil && t.failed.depth >= depth
	if err == nil {
		t.goOn() // after a failure inside, fn went on: unwinds
		if f.owns {
			t.sps[f.sp-1] = true // no longer needed
		}
		return err
	}
	if f.sp == 0 {
		if failedInside { // cannot happen: a write sets the savepoint first
			t.goOn()
		}
		return err // nothing written: nothing to undo
	}
	if failedInside {
		t.failed = nil // undone below, with the rest of fn's writes
	}
	cmd := fmt.Sprintf("ROLLBACK TO SAVEPOINT sp_%d", f.sp)
	if _, rerr := t.tx.tx.ExecContext(ctx, cmd); rerr != nil {
		t.broken = fmt.Errorf("rollback to savepoint: %w", rerr)
		return fmt.Errorf("%w (and %w)", err, t.broken)
	}
	// The savepoints set after sp are gone; sp remains, as it was. What
	// the undone writes left in t.held is forgotten.
	t.version = f.version
	t.held = nil
	t.sps = t.sps[:f.sp]
	if f.owns {
		t.sps[f.sp-1] = true
	}
	return err
}
