package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
)

// The store's queries are a few hundred fixed texts run over and over on
// one connection, and SQLite parses and plans each text every time it is
// run through database/sql's Query and Exec (a third of the time of an
// instance create). cachingConnector hands out connections that keep each
// text's prepared statement and run it again.

// Limits of a connection's statement cache: texts with many arguments are
// the IN lists of batch reads, one text per length, not worth keeping.
const (
	maxCachedStmts = 512
	maxCachedArgs  = 64
)

type cachingConnector struct{ base driver.Connector }

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	p, okP := conn.(driver.ConnPrepareContext)
	q, okQ := conn.(driver.QueryerContext)
	e, okE := conn.(driver.ExecerContext)
	if !okP || !okQ || !okE {
		conn.Close()
		return nil, errors.New("sqlite driver connection lacks PrepareContext, QueryContext or ExecContext")
	}
	return &cachingConn{Conn: conn, prep: p, query: q, exec: e, stmts: map[string]*cachedStmt{}}, nil
}

func (c cachingConnector) Driver() driver.Driver { return c.base.Driver() }

// cachingConn is a driver connection with a statement cache. database/sql
// uses a connection from one goroutine at a time, so it needs no lock of
// its own; mu guards only against a Close racing a Rows.Close.
type cachingConn struct {
	driver.Conn
	prep  driver.ConnPrepareContext
	query driver.QueryerContext
	exec  driver.ExecerContext
	mu    sync.Mutex
	stmts map[string]*cachedStmt
}

// cachedStmt is a prepared statement; busy while rows read from it are
// open (a second use of the same text meanwhile runs uncached).
type cachedStmt struct {
	st   driver.Stmt
	busy bool
}

// stmt returns the cached statement of query, preparing it if needed, or
// nil when query is not to be cached or its statement is in use.
func (c *cachingConn) stmt(ctx context.Context, query string, args int) (*cachedStmt, error) {
	if args > maxCachedArgs {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs, ok := c.stmts[query]; ok {
		if cs.busy {
			return nil, nil
		}
		return cs, nil
	}
	if len(c.stmts) >= maxCachedStmts {
		return nil, nil
	}
	st, err := c.prep.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	_, okQ := st.(driver.StmtQueryContext)
	_, okE := st.(driver.StmtExecContext)
	if !okQ || !okE {
		st.Close()
		return nil, nil
	}
	cs := &cachedStmt{st: st}
	c.stmts[query] = cs
	return cs, nil
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.stmt(ctx, query, len(args))
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.query.QueryContext(ctx, query, args)
	}
	rows, err := cs.st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	cs.busy = true
	c.mu.Unlock()
	return &cachedRows{Rows: rows, conn: c, cs: cs}, nil
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.stmt(ctx, query, len(args))
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.exec.ExecContext(ctx, query, args)
	}
	return cs.st.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.prep.PrepareContext(ctx, query)
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	return nil, errors.New("sqlite driver connection lacks BeginTx")
}

func (c *cachingConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *cachingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *cachingConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// Close finalizes the cached statements, then closes the connection.
func (c *cachingConn) Close() error {
	c.mu.Lock()
	var errs []error
	for _, cs := range c.stmts {
		errs = append(errs, cs.st.Close())
	}
	c.stmts = nil
	c.mu.Unlock()
	return errors.Join(append(errs, c.Conn.Close())...)
}

// cachedRows frees its statement for the next use when closed (the
// driver resets a prepared statement's rows instead of finalizing it).
type cachedRows struct {
	driver.Rows
	conn *cachingConn
	cs   *cachedStmt
	once sync.Once
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.once.Do(func() {
		r.conn.mu.Lock()
		r.cs.busy = false
		r.conn.mu.Unlock()
	})
	return err
}
