package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// migrations holds the schema as numbered, forward-only SQL files
// (0001_init.sql, 0002_...), one set for SQLite and Postgres. A shipped file
// is never edited.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int64
	Name    string // file name, 0001_init.sql
	SQL     string
}

// Migrations returns the migrations this binary knows, ordered by version.
func Migrations() ([]Migration, error) { return loadMigrations(migrations) }

// loadMigrations reads the *.sql files of dir "migrations" in fsys, ordered
// by version.
func loadMigrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and '_'", base)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: base, SQL: string(b)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return cmp.Compare(a.Version, b.Version) })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].Name, ms[i].Name)
		}
	}
	return ms, nil
}

const (
	qCreateMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`
	qNewestMigration  = `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`
	qMigrationApplied = `SELECT version FROM schema_migrations WHERE version = $1`
	qRecordMigration  = `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`
)

// Migrate applies to db, in order and each in its own transaction, the
// migrations it lacks. It refuses a database whose newest migration is newer
// than any this binary knows: that database was written by a newer binary.
//
// lock, when not empty, is a statement run first in each of its
// transactions to serialise migrators of the same database (on Postgres a
// transaction-scoped advisory lock, so that coordinators starting together
// do not apply a migration twice). SQLite needs none: its transactions
// already take the write lock when they begin.
func Migrate(ctx context.Context, db *sql.DB, lock string, now func() time.Time) error {
	return migrate(ctx, db, migrations, lock, now)
}

func migrate(ctx context.Context, db *sql.DB, fsys fs.FS, lock string, now func() time.Time) error {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	var known int64
	if len(ms) > 0 {
		known = ms[len(ms)-1].Version
	}
	var newest int64
	err = inTx(ctx, db, lock, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, qCreateMigrations); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		if err := tx.QueryRowContext(ctx, qNewestMigration).Scan(&newest); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if newest > known {
		return fmt.Errorf("database schema version %d is newer than version %d, the newest this binary knows; run a newer gpumarket (or restore a backup made by this version)", newest, known)
	}
	for _, m := range ms {
		if m.Version <= newest {
			continue
		}
		if err := inTx(ctx, db, lock, func(tx *sql.Tx) error { return apply(ctx, tx, m, now) }); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// inTx runs fn in a transaction that first runs lock (unless empty).
func inTx(ctx context.Context, db *sql.DB, lock string, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			return fmt.Errorf("lock migrations: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func apply(ctx context.Context, tx *sql.Tx, m Migration, now func() time.Time) error {
	// Another process may have applied it since we looked.
	var v int64
	err := tx.QueryRowContext(ctx, qMigrationApplied, m.Version).Scan(&v)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, qRecordMigration, m.Version, now().UnixMicro()); err != nil {
		return err
	}
	return nil
}
