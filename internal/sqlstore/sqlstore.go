// Package sqlstore is the part of the coordinator's Store that SQLite and
// Postgres share: the migrations (migrations/), the SQL (queries.go), the
// coord.Tx implementation over a *sql.Tx (tx.go) and the migration runner.
// Everything here is written in the SQL both databases accept; what differs
// (driver, connection settings, error codes, isolation and retries) lives
// in the adapters, internal/sqlite and internal/postgres, which supply it.
//
// It imports only market and coord of gpumarket's packages. Only the SQL
// adapters import it; it never imports an adapter.
package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"

	"github.com/gpumarket/gpumarket/internal/coord"
)

// Violation classifies a constraint error from the database, so that the
// generic code in tx.go can turn it into a market.Error kind. Each adapter
// supplies a Classifier for its driver's error codes.
type Violation int

// Constraint violations the store distinguishes.
const (
	NoViolation Violation = iota
	UniqueViolation
	ForeignKeyViolation
	CheckViolation
)

// Classifier maps a driver error (nil included) to the constraint it
// violated, or NoViolation.
type Classifier func(error) Violation

// RunTx runs fn in one transaction of db, begun with opts, and commits if fn
// returns nil. It rolls back when fn returns an error or panics; the panic
// then continues. It does not retry: an adapter whose database can fail a
// transaction for concurrency (Postgres) wraps RunTx in its retry loop.
func RunTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, classify Classifier, fn func(tx coord.Tx) error) error {
	return RunTxRows(ctx, db, opts, classify, DefaultRowsPerStatement, fn)
}

// DefaultRowsPerStatement is how many rows a batch write (ApplyTransfers,
// RecordBilling) puts in one statement unless the adapter says otherwise:
// many, for a database that pays a round trip per statement (Postgres).
const DefaultRowsPerStatement = 200

// RunTxRows is RunTx for an adapter whose batch writes are fastest with
// rowsPerStmt rows per statement. modernc.org/sqlite binds parameters in
// time that grows with their number in the statement and pays no round
// trip, so SQLite writes batches fastest one row per (prepared, reused)
// statement: rowsPerStmt 1.
func RunTxRows(ctx context.Context, db *sql.DB, opts *sql.TxOptions, classify Classifier, rowsPerStmt int, fn func(tx coord.Tx) error) error {
	c, err := RunTxConfig(ctx, db, opts, TxConfig{Classify: classify, RowsPerStmt: rowsPerStmt}, fn)
	c.RunAfterCommit()
	return err
}

// TxConfig is what RunTxConfig needs to know of the adapter's database.
type TxConfig struct {
	Classify Classifier
	// RowsPerStmt is how many rows a batch write puts in one statement
	// (see RunTxRows); 0 means 1.
	RowsPerStmt int
	// Defer, when set, makes AppendEvent leave events for NumberEvents to
	// number after commit instead of numbering them in the transaction.
	Defer *Deferral
	// WritingCTEs: the database runs INSERT and UPDATE inside WITH
	// (Postgres), so that a transfer is written in one statement.
	WritingCTEs bool
	// WriteBehind: Tx.WriteBehind keeps writes for later (behind.go); it
	// needs WritingCTEs, Defer and arrays as parameters (Postgres).
	WriteBehind bool
}

// RunTxConfig is RunTx for an adapter described by c. It leaves to the
// adapter what follows a commit: the functions given to Tx.AfterCommit
// (Committed.RunAfterCommit, once the adapter holds none of its own
// locks), then, if the transaction left events to number (c.Defer set),
// NumberEvents, so that they are listed once its Tx returns.
func RunTxConfig(ctx context.Context, db *sql.DB, opts *sql.TxOptions, c TxConfig, fn func(tx coord.Tx) error) (Committed, error) {
	done, rerun, err := runTx(ctx, db, opts, c, false, fn)
	if rerun {
		reruns.Add(1)
		done, _, err = runTx(ctx, db, opts, c, true, fn)
	}
	return done, err
}

// Committed is what a committed transaction leaves to its adapter (the
// zero value when it did not commit).
type Committed struct {
	Deferred    bool     // it left events to number (TxConfig.Defer)
	afterCommit []func() // Tx.AfterCommit's
}

// RunAfterCommit runs the functions given to Tx.AfterCommit, in order.
func (c Committed) RunAfterCommit() {
	for _, fn := range c.afterCommit {
		fn()
	}
}

// RunRead runs fn's statements outside a transaction, each on its own
// (on Postgres, READ COMMITTED: each sees what was committed before it),
// and refuses writes. It saves a transaction's BEGIN and COMMIT, and its
// reads take no part in other transactions' serialization checks, where
// fn's reads need not agree with one another.
func RunRead(ctx context.Context, db *sql.DB, c TxConfig, fn func(tx coord.Tx) error) error {
	t := &sqlTx{classify: c.Classify, rowsPerStmt: max(c.RowsPerStmt, 1), ctes: c.WritingCTEs, eager: true, reads: true}
	t.tx = &txConn{tx: db, t: t}
	return fn(t)
}

// reruns counts the transactions run again eagerly (Reruns).
var reruns atomic.Int64

// Reruns is how many transactions this process ran a second time because
// a caller went on after a step of the store failed, with savepoints set
// for every step (savepoint.go).
func Reruns() int64 { return reruns.Load() }

// runTx runs fn in one transaction. With eager unset, the store's steps
// set no savepoints; when fn goes on after one of them failed, it rolls
// back and reports rerun.
func runTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, c TxConfig, eager bool, fn func(tx coord.Tx) error) (done Committed, rerun bool, err error) {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return Committed{}, false, fmt.Errorf("begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback() // the error that led here matters more
		}
	}()
	t := &sqlTx{classify: c.Classify, rowsPerStmt: max(c.RowsPerStmt, 1), deferral: c.Defer, ctes: c.WritingCTEs, eager: eager,
		allowBehind: c.WriteBehind && c.WritingCTEs && c.Defer != nil}
	t.tx = &txConn{tx: tx, t: t}
	err = t.run(func(coord.Tx) error {
		if err := fn(t); err != nil || t.failed != nil {
			return err
		}
		t.flushKept(ctx) // what is kept, before the commit
		return nil
	})
	switch {
	case t.rerun || (err == nil && t.failed != nil):
		// fn went on after a step failed that set no savepoint: what that
		// step wrote cannot be undone alone.
		return Committed{}, true, nil
	case err != nil:
		// Everything is undone: the same outcome as with every savepoint.
		return Committed{}, false, err
	case t.broken != nil:
		return Committed{}, false, t.broken
	}
	if err := tx.Commit(); err != nil {
		return Committed{}, false, fmt.Errorf("commit: %w", err)
	}
	committed = true
	return Committed{Deferred: t.deferred > 0, afterCommit: t.afterCommit}, false, nil
}
