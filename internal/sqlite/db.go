// Package sqlite is the coordinator's Store on an SQLite file, through the
// cgo-free modernc.org/sqlite driver.
//
// It holds only what is SQLite's own: the driver, the connection settings,
// the single-connection pool and the error codes. The SQL, the migrations
// and the coord.Tx implementation are shared with the Postgres store in
// internal/sqlstore. Of gpumarket's packages it imports market, coord and
// sqlstore, and never another adapter.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/sqlstore"

	msqlite "modernc.org/sqlite"
)

// dsnParams are the connection settings of every connection: WAL so readers
// never block, a busy timeout instead of immediate "database is locked",
// enforced foreign keys, and BEGIN IMMEDIATE so that a transaction takes the
// write lock when it starts rather than failing when it first writes. The
// one connection keeps up to 64 MiB of pages in its cache (the default, 2
// MiB, read most pages of a large market through a system call each time)
// and its statement journals in memory: every savepoint (Tx.Atomic, and
// the batch writes inside one) journals the pages it changes, which on
// disk cost a write call each.
const dsnParams = "_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)" +
	"&_pragma=cache_size(-65536)&_pragma=temp_store(MEMORY)&_txlock=immediate"

// DB is a Store on one SQLite file.
type DB struct {
	db *sql.DB
}

var _ coord.Store = (*DB)(nil)

// Open opens (creating if needed) the database at path and applies the
// migrations it lacks. It refuses a database written by a newer binary.
func Open(ctx context.Context, path string) (*DB, error) {
	base, err := msqlite.NewConnector(path + "?" + dsnParams)
	if err != nil {
		return nil, fmt.Errorf("open SQLite database %s: %w", path, err)
	}
	db := sql.OpenDB(cachingConnector{base}) // stmtcache.go
	// Every transaction takes SQLite's single write lock at BEGIN, so more
	// connections would only wait in SQLite's busy loop; queueing in
	// database/sql is fairer and faster. A Tx started inside another Tx's
	// fn therefore waits for its context: don't nest them.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		if dir := filepath.Dir(path); !strings.HasPrefix(path, "file:") && path != ":memory:" {
			if fi, serr := os.Stat(dir); serr != nil {
				return nil, fmt.Errorf("open SQLite database %s: the directory %s does not exist; create it or give a path in a directory that does", path, dir)
			} else if !fi.IsDir() {
				return nil, fmt.Errorf("open SQLite database %s: %s is a file, not a directory; give a path in a directory", path, dir)
			}
		}
		return nil, fmt.Errorf("open SQLite database %s: %w", path, err)
	}
	if err := sqlstore.Migrate(ctx, db, "", time.Now); err != nil {
		db.Close()
		return nil, fmt.Errorf("open SQLite database %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Tx runs fn in one transaction and commits if it returns nil. It rolls
// back when fn returns an error or panics; the panic then continues.
// Transactions never fail for concurrency here (each takes the one write
// lock when it begins), so fn runs once.
func (d *DB) Tx(ctx context.Context, fn func(tx coord.Tx) error) error {
	return sqlstore.RunTxRows(ctx, d.db, nil, classify, 1, fn)
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }
