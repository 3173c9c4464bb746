package postgres

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
	"github.com/gpumarket/gpumarket/internal/sqlstore"
	"github.com/gpumarket/gpumarket/internal/storetest"
)

func freshDatabase(t testing.TB) string { return pgtest.FreshDatabase(t) }

func openFresh(t testing.TB) *DB {
	t.Helper()
	db, err := Open(t.Context(), freshDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestStore(t *testing.T) {
	pgtest.ServerURL(t)
	storetest.Run(t, func(t *testing.T) coord.Store { return openFresh(t) })
}

// Read runs reads outside a transaction: they see what is committed, and
// a write among them is refused, not run.
func TestReadOutsideATransaction(t *testing.T) {
	db := openFresh(t)
	defer db.Close()
	var _ coord.Reader = db
	ctx := t.Context()
	a := market.Account{ID: "a-reader", Email: "reader@example.com", PasswordHash: "x", Roles: []market.Role{market.RoleRenter}}
	if err := db.Tx(ctx, func(tx coord.Tx) error { return tx.InsertAccount(ctx, a) }); err != nil {
		t.Fatal(err)
	}
	err := db.Read(ctx, func(tx coord.Tx) error {
		got, err := tx.Account(ctx, a.ID)
		if err == nil && got.Email != a.Email {
			t.Errorf("Account = %+v, want %+v", got, a)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	err = db.Read(ctx, func(tx coord.Tx) error {
		return tx.InsertAPIKey(ctx, market.APIKey{ID: "k-1", Owner: a.ID, Name: "x", Prefix: "p", Hash: []byte("h")})
	})
	if err == nil || !strings.Contains(err.Error(), "outside a transaction") {
		t.Fatalf("a write in Read: %v, want it refused", err)
	}
	err = db.Tx(ctx, func(tx coord.Tx) error {
		keys, err := tx.APIKeys(ctx, a.ID)
		if len(keys) != 0 {
			t.Errorf("API keys after the refused write: %v", keys)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStepsRerunOnlyWhenGonePast(t *testing.T) {
	storetest.Reruns(t, openFresh(t), sqlstore.Reruns)
}

func TestWriteBehind(t *testing.T) {
	storetest.WriteBehind(t, openFresh(t), sqlstore.Reruns, true)
}

// What a transaction runs at its commit (Tx.AfterCommit) runs with the
// gate let go, even after the transaction ran alone (exclusive): it may
// wait for another transaction that waits for the gate.
func TestAfterCommitRunsWithTheGateFree(t *testing.T) {
	db := openFresh(t)
	defer db.Close()
	for _, exclusive := range []bool{false, true} {
		var free, ran bool
		err := db.attempt(t.Context(), exclusive, func(tx coord.Tx) error {
			tx.AfterCommit(func() {
				ran = true
				if free = db.gate.TryLock(); free {
					db.gate.Unlock()
				}
			})
			return tx.AppendEvent(t.Context(), market.Event{At: time.Now(), Type: "test.gate"})
		})
		if err != nil || !ran || !free {
			t.Errorf("exclusive %v: attempt = %v; AfterCommit's function ran: %v, with the gate free: %v; want nil, true, true", exclusive, err, ran, free)
		}
	}
}

func TestReopen(t *testing.T) {
	dbURL := freshDatabase(t)
	// Coordinators starting together migrate one database once.
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Go(func() {
			db, err := Open(t.Context(), dbURL)
			if err != nil {
				t.Errorf("open %d: %v", k, err)
				return
			}
			db.Close()
		})
	}
	wg.Wait()
	db, err := Open(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
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

func TestRefuseNewerSchema(t *testing.T) {
	dbURL := freshDatabase(t)
	db, err := Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.db.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, openErr := Open(t.Context(), dbURL)
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

func TestOpenBadURL(t *testing.T) {
	_, err := Open(t.Context(), "postgres://user:secret@127.0.0.1:1/nothing?connect_timeout=2")
	if err == nil {
		t.Fatal("Open of a server that is not there succeeded")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q shows the password", err)
	}
}

func TestRetry(t *testing.T) {
	db := openFresh(t)
	defer db.Close()
	for _, tc := range []struct {
		name     string
		failures int // attempts that fail with code before one succeeds
		code     string
		wantRuns int
		wantErr  bool
		wantKind market.Kind // when wantErr
	}{
		{name: "serialization failure", failures: 2, code: codeSerializationFailure, wantRuns: 3},
		{name: "deadlock", failures: 1, code: codeDeadlockDetected, wantRuns: 2},
		{name: "gives up", failures: 1000, code: codeSerializationFailure, wantRuns: maxAttempts, wantErr: true, wantKind: market.Unavailable},
		{name: "other errors are not retried", failures: 1000, code: "XX000", wantRuns: 1, wantErr: true, wantKind: market.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			err := db.Tx(t.Context(), func(tx coord.Tx) error {
				runs++
				if _, err := tx.Balance(t.Context(), market.WorldAccount, market.DefaultAsset); err != nil {
					return err
				}
				if runs <= tc.failures {
					return fmt.Errorf("simulated: %w", &pgconn.PgError{Code: tc.code, Message: "simulated"})
				}
				return nil
			})
			if runs != tc.wantRuns {
				t.Errorf("fn ran %d times, want %d", runs, tc.wantRuns)
			}
			switch {
			case !tc.wantErr && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.wantErr && !market.IsKind(err, tc.wantKind):
				t.Errorf("got %v (kind %v), want kind %v", err, market.KindOf(err), tc.wantKind)
			}
		})
	}
}

func TestInsufficientFundsMessage(t *testing.T) {
	db := openFresh(t)
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
