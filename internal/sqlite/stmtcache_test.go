package sqlite

import (
	"database/sql"
	"fmt"
	"testing"

	msqlite "modernc.org/sqlite"
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
