package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"testing"

	msqlite "modernc.org/sqlite"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func openCached(t *testing.T) (*sql.DB, *cachingConn) {
	t.Helper()
	base, err := msqlite.NewConnector(t.TempDir() + "/c.db?" + dsnParams)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(cachingConnector{base})
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var cc *cachingConn
	if err := conn.Raw(func(dc any) error { cc = dc.(*cachingConn); return nil }); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	for k := range 3 {
		if _, err := db.ExecContext(t.Context(), `INSERT INTO t (k, v) VALUES ($1, $2)`, k, fmt.Sprint("v", k)); err != nil {
			t.Fatal(err)
		}
	}
	return db, cc
}

// A text run again reuses its statement, with new arguments; the same
// text run while its rows are still open runs uncached and both read
// right; a bad text is an error and is not cached.
func TestStatementCache(t *testing.T) {
	db0, cc := openCached(t)
	ctx := t.Context()
	db, err := db0.BeginTx(ctx, nil) // one connection: nested reads need the same transaction
	if err != nil {
		t.Fatal(err)
	}
	defer db.Rollback()
	const q = `SELECT v FROM t WHERE k >= $1 ORDER BY k`
	read := func(rows *sql.Rows) []string {
		t.Helper()
		var out []string
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	outer, err := db.QueryContext(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !outer.Next() {
		t.Fatal("no first row")
	}
	inner, err := db.QueryContext(ctx, q, 0) // same text, outer still open
	if err != nil {
		t.Fatal(err)
	}
	if got := read(inner); fmt.Sprint(got) != "[v0 v1 v2]" {
		t.Errorf("inner read %v, want [v0 v1 v2]", got)
	}
	inner.Close()
	var first string
	if err := outer.Scan(&first); err != nil {
		t.Fatal(err)
	}
	if rest := read(outer); first != "v1" || fmt.Sprint(rest) != "[v2]" {
		t.Errorf("outer read %s then %v, want v1 then [v2]", first, rest)
	}
	outer.Close()
	for range 3 {
		rows, err := db.QueryContext(ctx, q, 2)
		if err != nil {
			t.Fatal(err)
		}
		if got := read(rows); fmt.Sprint(got) != "[v2]" {
			t.Errorf("reused statement read %v, want [v2]", got)
		}
		rows.Close()
	}
	if _, err := db.ExecContext(ctx, `UPDATE t SET v = $1 WHERE k = $2`, "x", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `SELEC nonsense`); err == nil {
		t.Error("a bad statement ran")
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cs, ok := cc.stmts[q]; !ok || cs.busy {
		t.Errorf("query cached %v, busy %v; want cached and free", ok, ok && cs.busy)
	}
	if _, ok := cc.stmts[`UPDATE t SET v = $1 WHERE k = $2`]; !ok {
		t.Error("exec statement not cached")
	}
	if _, ok := cc.stmts[`SELEC nonsense`]; ok {
		t.Error("a statement that failed to prepare was cached")
	}
}

// A transaction of many atomic steps uses a few savepoint texts, however
// many steps it runs: the cache keeps every text it sees, up to its limit,
// so one text per step would fill it and leave later queries uncached.
func TestManyStepsFewTexts(t *testing.T) {
	db, err := Open(t.Context(), t.TempDir()+"/steps.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	cached := func() int {
		t.Helper()
		conn, err := db.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var n int
		if err := conn.Raw(func(dc any) error { n = len(dc.(*cachingConn).stmts); return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	run := func(from, steps int) {
		t.Helper()
		err := db.Tx(ctx, func(tx coord.Tx) error {
			for k := from; k < from+steps; k++ {
				err := tx.Atomic(ctx, func() error {
					a := market.Account{ID: market.AccountID(fmt.Sprint("a-", k)), Email: fmt.Sprint(k, "@steps.example.com"),
						PasswordHash: "x", Roles: []market.Role{market.RoleRenter}}
					if err := tx.InsertAccount(ctx, a); err != nil {
						return err
					}
					if k%2 == 0 {
						return errSkip // undone
					}
					return nil
				})
				if err != nil && err != errSkip {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	run(0, 50)
	before := cached()
	run(50, 400)
	if after := cached(); after != before {
		t.Errorf("statements cached: %d after 50 steps, %d after 400 more; want no more", before, after)
	}
}

var errSkip = errors.New("skip")
