package sqlite

import (
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
// (0001_init.sql, 0002_...). A shipped file is never edited.
//
//go:embed migrations/*.sql
var migrations embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

// loadMigrations reads the *.sql files of dir "migrations" in fsys, ordered
// by version.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
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
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return int(a.version - b.version) })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].name, ms[i].name)
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

// migrate applies, in order and each in its own transaction, the migrations
// of fsys that db lacks. It refuses a database whose newest migration is
// newer than any in fsys: that database was written by a newer binary.
func migrate(ctx context.Context, db *sql.DB, fsys fs.FS, now func() time.Time) error {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	var known int64
	if len(ms) > 0 {
		known = ms[len(ms)-1].version
	}
	if _, err := db.ExecContext(ctx, qCreateMigrations); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var newest int64
	if err := db.QueryRowContext(ctx, qNewestMigration).Scan(&newest); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if newest > known {
		return fmt.Errorf("database schema version %d is newer than version %d, the newest this binary knows; run a newer gpumarket (or restore a backup made by this version)", newest, known)
	}
	for _, m := range ms {
		if m.version <= newest {
			continue
		}
		if err := apply(ctx, db, m, now); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

func apply(ctx context.Context, db *sql.DB, m migration, now func() time.Time) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	// Another process may have applied it since we looked.
	var v int64
	err = tx.QueryRowContext(ctx, qMigrationApplied, m.version).Scan(&v)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, qRecordMigration, m.version, now().UnixMicro()); err != nil {
		return err
	}
	return tx.Commit()
}
