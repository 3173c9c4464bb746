package sqlstore

import (
	"fmt"
	"testing"
	"time"
)

// TestMigration0018BackfillsEntryKindsAndTimes upgrades a database whose
// ledger entries have no kind or time of their own (before migration
// 0018): each gets its transfer's, so that the sums over a window (Flow,
// FeesByDay), which now read the entries by kind and time, count the old
// entries as they count new ones.
func TestMigration0018BackfillsEntryKindsAndTimes(t *testing.T) {
	ctx := t.Context()
	db := oldDatabase(t, 18)
	for _, q := range []string{
		`INSERT INTO transfers (seq, id, idem_key, kind, asset, instance_id, minute, memo, at) VALUES (1, 't-1', 'deposit:x', 'deposit', 'GMT', '', 0, '', 10)`,
		`INSERT INTO transfer_entries (transfer_seq, idx, account, owner_id, amount) VALUES (1, 0, 'world', '', -5), (1, 1, 'user:a-r:available', 'a-r', 5)`,
		`INSERT INTO transfers (seq, id, idem_key, kind, asset, instance_id, minute, memo, at) VALUES (2, 't-2', 'payment:y', 'payment', 'GMT', '', 0, '', 20)`,
		`INSERT INTO transfer_entries (transfer_seq, idx, account, owner_id, amount) VALUES (2, 0, 'world', '', -7), (2, 1, 'user:a-r:available', 'a-r', 7)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := Migrate(ctx, db, "", time.Now); err != nil {
		t.Fatal(err)
	}
	rows, err := db.QueryContext(ctx, `SELECT transfer_seq, idx, kind, at FROM transfer_entries ORDER BY transfer_seq, idx`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got string
	for rows.Next() {
		var seq, idx, at int64
		var kind string
		if err := rows.Scan(&seq, &idx, &kind, &at); err != nil {
			t.Fatal(err)
		}
		got += fmt.Sprintf("%d/%d %s@%d ", seq, idx, kind, at)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := "1/0 deposit@10 1/1 deposit@10 2/0 payment@20 2/1 payment@20 "; got != want {
		t.Errorf("entries after the upgrade: %q, want %q", got, want)
	}
	for _, tc := range []struct {
		kind string
		from int64
		want int64
	}{{"deposit", 0, 5}, {"deposit", 15, 0}, {"payment", 15, 7}, {"payment", 21, 0}} {
		var sum int64
		if err := db.QueryRowContext(ctx, qFlowPrefix+"($4)", "user:a-r:available", tc.from, 0, tc.kind).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		if sum != tc.want {
			t.Errorf("%s into the renter's account since %d: %d, want %d", tc.kind, tc.from, sum, tc.want)
		}
	}
}
