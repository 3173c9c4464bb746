// Package postgres is the coordinator's Store on a Postgres database,
// through pgx's database/sql driver, for deployments that outgrow one
// SQLite file or run several coordinators.
//
// It holds only what is Postgres's own: the driver, the pool, the error
// codes, the isolation level and the retries. The SQL, the migrations and
// the coord.Tx implementation are shared with the SQLite store in
// internal/sqlstore. Of gpumarket's packages it imports market, coord and
// sqlstore, and never another adapter.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlstore"
)

// Isolation: transactions run SERIALIZABLE. coord.Store promises that
// transactions are serializable with respect to each other, and the
// coordinator relies on it: it reads an instance or a balance, decides, and
// writes the whole row back. READ COMMITTED would keep the store's own
// invariants (the unique gpu_allocations rows, the balance CHECK, the
// counter rows that number transfers without gaps) but would
// let two such read-decide-write transactions lose one another's update
// unless every read in coord took row locks, which the Store interface
// cannot express. SERIALIZABLE gives on Postgres what SQLite's single writer
// gives, at the price of transactions that fail with a serialization
// failure when they collide; Tx retries those, which the contract allows
// (fn may rerun).
//
// Events are the exception: a transaction leaves them in events_pending
// and they are numbered after it commits (sqlstore/events.go), since every
// agent report and instance create appends one and numbering them in the
// transaction made all of those collide on one counter row.

const (
	// maxAttempts bounds how often Tx runs fn when transactions keep
	// colliding. Hot rows (the transfer counter, one renter's balance, the
	// GPU allocations of one machine) make concurrent writers collide by
	// design. A jittered backoff spreads them out, and from attempt
	// exclusiveFrom on a transaction runs alone among this process's
	// transactions, so that within one coordinator it cannot be starved;
	// the remaining attempts are for collisions with other coordinators.
	maxAttempts   = 10
	exclusiveFrom = 3
	// firstBackoff is the longest wait before the second attempt; it
	// doubles for each further one.
	firstBackoff = 2 * time.Millisecond
	maxBackoff   = 250 * time.Millisecond

	// migrationLock serialises migrators of one database (coordinators
	// starting together): a transaction-scoped advisory lock, taken by each
	// migration transaction. The key is arbitrary but fixed.
	migrationLock = `SELECT pg_advisory_xact_lock(7147521230950981633)`

	// sweepEvery is how often a DB numbers events that no Tx numbered
	// after its commit (its process died in between).
	sweepEvery = time.Second
)

// deferral makes transactions leave their events for NumberEvents
// (sqlstore/events.go). The numberers of one database queue on a
// transaction-scoped advisory lock of their own.
var deferral = sqlstore.Deferral{
	TxID: `pg_current_xact_id()::text::bigint`,
	Lock: `pg_advisory_xact_lock(7147521230950981634)`,
}

// DB is a Store on one Postgres database.
type DB struct {
	db *sql.DB
	// gate is held shared by every transaction attempt and exclusively by
	// an attempt that has collided too often (see exclusiveFrom).
	gate sync.RWMutex

	// Numbering events after commit: committed counts the requests to
	// number (one after each commit that left events, one per sweep that
	// found some), numbered how many of them a finished NumberEvents run
	// covers (guarded by numbering, which lets one run
	// at a time), so that a caller whose events a run started after its
	// commit has numbered does not run another.
	committed atomic.Uint64
	numbering sync.Mutex
	numbered  uint64

	stop  context.CancelFunc
	swept sync.WaitGroup
}

var _ coord.Store = (*DB)(nil)

// maxOpenConns caps the pool: four connections per core (GOMAXPROCS),
// from 8 to 16. Under SERIALIZABLE more concurrent writers mean more
// collisions rather than more throughput, and many coordinators may share
// one server's max_connections (100 by default). On 2 cores, with the
// server on the same machine, 16 connections dispatched 10-15% fewer
// creates per second than 4 to 12 (docs/benchmarks.md).
func maxOpenConns() int { return min(max(4*runtime.GOMAXPROCS(0), 8), 16) }

// Open connects to the database at url (postgres://user:pass@host:port/db?...)
// and applies the migrations it lacks. It refuses a database written by a
// newer binary. The database must exist.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message names the URL with its password hidden.
		return nil, fmt.Errorf("open postgres database: %w", err)
	}
	where := fmt.Sprintf("postgres database %s on %s:%d", cfg.Database, cfg.Host, cfg.Port)
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(maxOpenConns())
	db.SetMaxIdleConns(maxOpenConns())
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s (check that Postgres runs there and that the URL's user, password and database are right): %w", where, err)
	}
	if err := sqlstore.Migrate(ctx, db, migrationLock, time.Now); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	d := &DB{db: db}
	sweepCtx, stop := context.WithCancel(context.Background())
	d.stop = stop
	d.swept.Go(func() { d.sweep(sweepCtx) })
	return d, nil
}

// Tx runs fn in one SERIALIZABLE transaction and commits if it returns nil.
// It rolls back when fn returns an error or panics; the panic then
// continues. When the transaction fails because it collided with another
// (a serialization failure or a deadlock), Tx runs fn again in a new
// transaction, up to maxAttempts times, and then gives up with an
// Unavailable error. Don't call Tx inside fn: the inner call may wait for
// the outer to finish.
func (d *DB) Tx(ctx context.Context, fn func(tx coord.Tx) error) error {
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		err := d.attempt(ctx, attempt >= exclusiveFrom, fn)
		if err == nil || !retryable(err) {
			return err
		}
		if attempt == maxAttempts {
			return &market.Error{Op: "transaction", Kind: market.Unavailable, Err: fmt.Errorf(
				"the database is busy with conflicting changes (%d attempts failed); try again: %w", attempt, err)}
		}
		// Full jitter: colliding transactions wake at different times.
		wait := time.Duration(rand.Int64N(int64(backoff))) + time.Millisecond/10
		backoff = min(2*backoff, maxBackoff)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return errors.Join(err, ctx.Err())
		case <-timer.C:
		}
	}
}

// Read runs fn's reads outside a transaction, each statement on its own
// at READ COMMITTED (coord.Reader): no BEGIN and COMMIT, and no part in
// the serialization checks of the transactions that write.
func (d *DB) Read(ctx context.Context, fn func(tx coord.Tx) error) error {
	return sqlstore.RunRead(ctx, d.db, sqlstore.TxConfig{Classify: classify, RowsPerStmt: sqlstore.DefaultRowsPerStatement, WritingCTEs: true}, fn)
}

// attempt runs fn in one transaction, alone among this DB's transactions
// when exclusive. What follows its commit (Tx.AfterCommit's functions,
// numbering its events) runs after the gate is let go: a function run at
// the commit may wait for another transaction (a lock it holds), which
// may wait for the gate.
func (d *DB) attempt(ctx context.Context, exclusive bool, fn func(tx coord.Tx) error) error {
	c, err := func() (sqlstore.Committed, error) {
		if exclusive {
			d.gate.Lock()
			defer d.gate.Unlock()
		} else {
			d.gate.RLock()
			defer d.gate.RUnlock()
		}
		return sqlstore.RunTxConfig(ctx, d.db, &sql.TxOptions{Isolation: sql.LevelSerializable},
			sqlstore.TxConfig{Classify: classify, RowsPerStmt: sqlstore.DefaultRowsPerStatement, Defer: &deferral, WritingCTEs: true, WriteBehind: true}, fn)
	}()
	c.RunAfterCommit()
	if err == nil && c.Deferred {
		// The transaction has committed: its result stands whatever
		// happens here. If numbering fails, the sweep numbers its events.
		_ = d.numberEvents(context.WithoutCancel(ctx))
	}
	return err
}

// numberEvents numbers the events of every transaction committed so far,
// unless a run that started after the last of them has done it.
func (d *DB) numberEvents(ctx context.Context) error {
	want := d.committed.Add(1)
	d.numbering.Lock()
	defer d.numbering.Unlock()
	if d.numbered >= want {
		return nil
	}
	covers := d.committed.Load()
	if _, err := sqlstore.NumberEvents(ctx, d.db, deferral); err != nil {
		return err
	}
	d.numbered = covers
	return nil
}

// sweep numbers, every sweepEvery until ctx ends, the events left pending
// by transactions whose process stopped between commit and numbering.
func (d *DB) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var pending bool
		if err := d.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM events_pending)`).Scan(&pending); err == nil && pending {
			_ = d.numberEvents(ctx) // retried next time
		}
	}
}

// Close stops the sweep and closes the pool.
func (d *DB) Close() error {
	d.stop()
	d.swept.Wait()
	return d.db.Close()
}
