package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Events numbered after commit (Postgres; see migration 0015).
//
// Numbering an event in its transaction means taking the next value of the
// 'event' counter row. SQLite's transactions queue for its one writer, so
// that costs nothing there. On Postgres every transaction that appends an
// event (an instance created, an agent's acknowledgement) would update the
// same row, and SERIALIZABLE transactions that update a row another one
// committed meanwhile fail and rerun: the counter made Postgres run its
// writers one at a time, and most of them twice.
//
// With a Deferral, AppendEvent writes to events_pending instead, keyed by
// the transaction's ID and the event's place in it; nothing there is
// shared between writers. After commit the adapter runs NumberEvents,
// which moves every committed pending event into events, numbered after
// the newest in (txid, n) order, one run at a time. So:
//   - numbers stay gapless, and the counter row has one writer;
//   - a number is given only to a committed event, and all the numbers of
//     one run become visible together, after every lower one: a reader
//     that follows events by number (other replicas, webhooks) never
//     misses one that commits late;
//   - a transaction that read what another wrote began after that one's
//     first write, so it has a higher ID: causes are numbered before
//     their effects;
//   - a transaction does not see its own events before it commits.

// Deferral is what deferred numbering needs from the adapter's database.
type Deferral struct {
	// TxID is an SQL expression for the current transaction's ID, which
	// is assigned at its first write and grows.
	TxID string
	// Lock is an SQL expression that makes NumberEvents runs wait for
	// one another, until the end of the transaction.
	Lock string
}

// deferEvent writes e to events_pending.
func (t *sqlTx) deferEvent(ctx context.Context, e market.Event) error {
	t.deferred++
	_, err := t.tx.ExecContext(ctx, `INSERT INTO events_pending (txid, n, `+pendingColumns+`) VALUES (`+t.deferral.TxID+`, $1, $2, $3, $4, $5, $6, $7)`,
		t.deferred, micros(e.At), e.Type, e.Account, e.Machine, e.Instance, e.Message)
	if err != nil {
		return fmt.Errorf("append event %s: %w", e.Type, err)
	}
	return nil
}

const (
	pendingColumns = `at, type, account_id, machine_id, instance_id, message`
	// numberBatch is how many pending events one statement takes.
	numberBatch = 10000
)

// NumberEvents moves the committed events of events_pending into events,
// numbered after the newest in (txid, n) order, and returns how many. Each
// run is one statement on its own (READ COMMITTED), which first takes
// d.Lock; it writes inside WITH (Postgres: the only database that defers
// numbering).
func NumberEvents(ctx context.Context, db *sql.DB, d Deferral) (int, error) {
	total := 0
	for {
		n, err := numberSome(ctx, db, d)
		total += n
		if err != nil || n < numberBatch {
			return total, err
		}
	}
}

// numberSome numbers at most numberBatch pending events, the lowest IDs
// first, in one statement (a transaction of its own: one round trip).
func numberSome(ctx context.Context, db *sql.DB, d Deferral) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, numberPending(d.Lock), counterEvent, numberBatch).Scan(&n); err != nil {
		return 0, fmt.Errorf("number events: %w", err)
	}
	return n, nil
}

// numberPending is the statement that moves the oldest pending events ($2
// at most) into events, numbered in (txid, n) order after the counter's
// value ($1), and returns how many it moved. Before it deletes a row it
// takes lock (the delete's condition on l is evaluated once, first), so
// that runs, each in a transaction of its own, wait for one another: they
// would otherwise lock the same pending rows in different orders. A run
// that waited reads from before the last one committed, and skips the
// rows that one deleted. The subquery picks the rows (a DELETE has no
// LIMIT on Postgres); the counter is not written when there are none.
func numberPending(lock string) string {
	return `WITH l AS MATERIALIZED (SELECT true AS locked FROM (SELECT ` + lock + `) AS lock),
p AS (DELETE FROM events_pending WHERE (SELECT locked FROM l) AND (txid, n) IN
  (SELECT txid, n FROM events_pending ORDER BY txid, n LIMIT $2)
  RETURNING txid, n, ` + pendingColumns + `),
c AS (INSERT INTO counters (name, value) SELECT $1, count(*) FROM p HAVING count(*) > 0
  ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value RETURNING value),
e AS (INSERT INTO events (` + eventColumns + `)
  SELECT c.value - (SELECT count(*) FROM p) + row_number() OVER (ORDER BY p.txid, p.n), p.at, p.type, p.account_id, p.machine_id, p.instance_id, p.message
  FROM p, c)
SELECT count(*) FROM p`
}
