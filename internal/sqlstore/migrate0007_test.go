package sqlstore

import (
	"database/sql"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

// TestMigration0007BackfillsMinuteCharges upgrades a database that holds
// charges made one transfer each (before migration 0007): every charged
// minute gets its record, with payer, host, amount and fee taken from the
// charge's entries, so that ChargedMinutes and the ledger check see the
// old charges as they see new ones.
func TestMigration0007BackfillsMinuteCharges(t *testing.T) {
	ctx := t.Context()
	db := oldDatabase(t, 7)
	for _, q := range []string{
		`INSERT INTO transfers (seq, id, idem_key, kind, asset, instance_id, minute, memo, at) VALUES (1, 't-1', 'charge:i-1:0', 'charge', 'GMT', 'i-1', 0, '', 10)`,
		`INSERT INTO transfer_entries VALUES (1, 0, 'user:a-r:escrow', 'a-r', -1000)`,
		`INSERT INTO transfer_entries VALUES (1, 1, 'host:a-h:earnings', 'a-h', 900)`,
		`INSERT INTO transfer_entries VALUES (1, 2, 'platform:fees', '', 100)`,
		`INSERT INTO transfers (seq, id, idem_key, kind, asset, instance_id, minute, memo, at) VALUES (2, 't-2', 'deposit:x', 'deposit', 'GMT', '', 0, '', 11)`,
		`INSERT INTO transfer_entries VALUES (2, 0, 'world', '', -5)`,
		`INSERT INTO transfer_entries VALUES (2, 1, 'user:a-r:available', 'a-r', 5)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := Migrate(ctx, db, "", time.Now); err != nil {
		t.Fatal(err)
	}
	rows, err := db.QueryContext(ctx, `SELECT instance_id, minute, transfer_seq, payer, host_id, amount, fee, at FROM minute_charges`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var inst, payer, host string
		var minute, seq, amount, fee, at int64
		if err := rows.Scan(&inst, &minute, &seq, &payer, &host, &amount, &fee, &at); err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Join([]string{inst, strconv.FormatInt(minute, 10), strconv.FormatInt(seq, 10), payer, host,
			strconv.FormatInt(amount, 10), strconv.FormatInt(fee, 10), strconv.FormatInt(at, 10)}, " "))
	}
	if want := "i-1 0 1 user:a-r:escrow a-h 1000 100 10"; len(got) != 1 || got[0] != want {
		t.Errorf("minute_charges after the upgrade = %q, want [%q]", got, want)
	}
}

// oldDatabase is a SQLite database (closed when the test ends) migrated
// up to migration n, excluded: one written by an older binary.
func oldDatabase(t *testing.T, n int) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", t.TempDir()+"/old.db?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	if err := migrate(t.Context(), db, migrationsBefore(t, n), "", time.Now); err != nil {
		t.Fatal(err)
	}
	return db
}

// migrationsBefore is the embedded migrations numbered below n: the schema
// of a database written by an older binary.
func migrationsBefore(t *testing.T, n int) fstest.MapFS {
	t.Helper()
	old := fstest.MapFS{}
	err := fs.WalkDir(migrations, "migrations", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		k, _ := strconv.Atoi(strings.SplitN(path.Base(p), "_", 2)[0])
		if k < n {
			b, err := fs.ReadFile(migrations, p)
			old[p] = &fstest.MapFile{Data: b}
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return old
}
