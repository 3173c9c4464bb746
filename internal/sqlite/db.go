// Package sqlite is the coordinator's Store on an SQLite file, through the
// cgo-free modernc.org/sqlite driver.
//
// Its SQL (queries.go, migrations/) and its coord.Tx implementation over
// *sql.Tx (tx.go) are written for both SQLite and Postgres, so that a
// Postgres adapter can share them. It imports only market and coord of
// gpumarket's packages, and never another adapter.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// dsnParams are the connection settings of every connection: WAL so readers
// never block, a busy timeout instead of immediate "database is locked",
// enforced foreign keys, and BEGIN IMMEDIATE so that a transaction takes the
// write lock when it starts rather than failing when it first writes.
const dsnParams = "_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"

// DB is a Store on one SQLite file.
type DB struct {
	db *sql.DB
}

var _ coord.Store = (*DB)(nil)

// Open opens (creating if needed) the database at path and applies the
// migrations it lacks. It refuses a database written by a newer binary.
func Open(ctx context.Context, path string) (*DB, error) {
	db, err := sql.Open("sqlite", path+"?"+dsnParams)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// Every transaction takes SQLite's single write lock at BEGIN, so more
	// connections would only wait in SQLite's busy loop; queueing in
	// database/sql is fairer and faster. A Tx started inside another Tx's
	// fn therefore waits for its context: don't nest them.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := migrate(ctx, db, migrations, time.Now); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Tx runs fn in one transaction and commits if it returns nil. It rolls
// back when fn returns an error or panics; the panic then continues.
func (d *DB) Tx(ctx context.Context, fn func(tx coord.Tx) error) error {
	return runTx(ctx, d.db, classifySQLite, fn)
}

// runTx is Tx for any database/sql database the SQL of this package runs on.
func runTx(ctx context.Context, db *sql.DB, classify func(error) violation, fn func(tx coord.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback() // the error that led here matters more
		}
	}()
	if err := fn(&sqlTx{tx: tx, classify: classify}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	return nil
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }
