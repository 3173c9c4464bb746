package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlstore"
	"github.com/gpumarket/gpumarket/internal/storetest"
)

func openTemp(t testing.TB) *DB {
	t.Helper()
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "gpumarket.db"))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) coord.Store { return openTemp(t) })
}

func TestStepsRerunOnlyWhenGonePast(t *testing.T) {
	storetest.Reruns(t, openTemp(t), sqlstore.Reruns)
}

// SQLite writes at once: WriteBehind changes nothing there.
func TestWriteBehind(t *testing.T) {
	storetest.WriteBehind(t, openTemp(t), sqlstore.Reruns, false)
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpumarket.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	a := market.Account{ID: "a-1", Email: "Kept@example.com", Roles: []market.Role{market.RoleAdmin}}
	if err := db.Tx(t.Context(), func(tx coord.Tx) error { return tx.InsertAccount(t.Context(), a) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	err = db.Tx(t.Context(), func(tx coord.Tx) error {
		got, err := tx.AccountByEmail(t.Context(), "kept@example.com")
		if err == nil && got.ID != a.ID {
			t.Errorf("reopened account = %v, want %v", got, a)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	ms, err := sqlstore.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if n != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d (one per migration, not repeated)", n, len(ms))
	}
}

// A database path in a directory that is missing, or that is a file, is
// refused with a message that says so, once, naming the database.
func TestOpenInAMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing", "gm.db"), "the directory " + filepath.Join(dir, "missing") + " does not exist; create it"},
		{filepath.Join(file, "gm.db"), file + " is a file, not a directory"},
	} {
		_, err := Open(t.Context(), tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), tc.path) != 1 {
			t.Errorf("Open(%s): %v, want one mention of the path and %q", tc.path, err, tc.want)
		}
	}
}

func TestRefuseNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpumarket.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.db.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, openErr := Open(t.Context(), path)
	if openErr == nil {
		t.Fatal("Open of a database from a newer binary succeeded")
	}
	ms, err := sqlstore.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	known := ms[len(ms)-1].Version
	for _, want := range []string{"9999", "version " + strconv.FormatInt(known, 10)} {
		if !strings.Contains(openErr.Error(), want) {
			t.Errorf("error %q does not mention %q", openErr, want)
		}
	}
}

func TestInsufficientFundsMessage(t *testing.T) {
	db := openTemp(t)
	defer db.Close()
	avail := market.Available("a-1")
	err := db.Tx(t.Context(), func(tx coord.Tx) error {
		_, err := tx.ApplyTransfer(t.Context(), market.Transfer{
			ID: "t-1", Key: "k1", Kind: market.TransferHold, Asset: market.DefaultAsset,
			Entries: []market.Entry{{Account: avail, Amount: -market.Tokens(2)}, {Account: market.Escrow("a-1"), Amount: market.Tokens(2)}},
		})
		return err
	})
	if !market.IsKind(err, market.InsufficientFunds) {
		t.Fatalf("got %v, want InsufficientFunds", err)
	}
	msg := market.Message(err)
	for _, want := range []string{string(avail), "2.00 GMT short"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
}

func BenchmarkApplyTransfer(b *testing.B) {
	db := openTemp(b)
	defer db.Close()
	ctx := context.Background()
	avail := market.Available("a-bench")
	deposit := market.Transfer{ID: "t-0", Key: "deposit", Kind: market.TransferDeposit, Asset: market.DefaultAsset,
		Entries: []market.Entry{{Account: market.WorldAccount, Amount: -market.Tokens(1_000_000)}, {Account: avail, Amount: market.Tokens(1_000_000)}}}
	if err := db.Tx(ctx, func(tx coord.Tx) error { _, err := tx.ApplyTransfer(ctx, deposit); return err }); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var n int64
	for b.Loop() {
		n++
		tr := market.Transfer{
			ID: market.TransferID(market.NewID(market.TransferPrefix)), Key: market.NewID("k-"),
			Kind: market.TransferCharge, Asset: market.DefaultAsset, Instance: "i-bench", Minute: n,
			Entries: []market.Entry{
				{Account: avail, Amount: -1000},
				{Account: market.Earnings("a-host"), Amount: 900},
				{Account: market.FeesAccount, Amount: 100},
			},
		}
		if err := db.Tx(ctx, func(tx coord.Tx) error { _, err := tx.ApplyTransfer(ctx, tr); return err }); err != nil {
			b.Fatal(err)
		}
	}
}
