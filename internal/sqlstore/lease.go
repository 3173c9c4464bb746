package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

const (
	leaseColumns = `name, holder, generation, acquired_at, expires_at`
	qLease       = `SELECT ` + leaseColumns + ` FROM leases WHERE name = $1`
	qPutLease    = `INSERT INTO leases (` + leaseColumns + `) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, generation = excluded.generation,
acquired_at = excluded.acquired_at, expires_at = excluded.expires_at`

	// qClaimMachines is followed by touchBatch rows of
	// (CAST($n AS TEXT), CAST($n+1 AS BIGINT)); $1 is the node. Both
	// databases name the columns of a VALUES list column1, column2, and
	// accept UPDATE ... FROM; the casts give Postgres the parameters' types.
	qClaimMachines = `UPDATE machines SET beat_node = $1,
last_seen_at = CASE WHEN v.column2 > machines.last_seen_at THEN v.column2 ELSE machines.last_seen_at END
FROM (VALUES %s) AS v
WHERE machines.id = v.column1 AND machines.online`
	qReleaseMachines = `UPDATE machines SET beat_node = '',
last_seen_at = CASE WHEN v.column2 > machines.last_seen_at THEN v.column2 ELSE machines.last_seen_at END
FROM (VALUES %s) AS v
WHERE machines.id = v.column1 AND machines.beat_node = $1`
	qClaims   = `SELECT id, online, beat_node FROM machines WHERE id IN (%s)`
	qBeatNode = `INSERT INTO node_beats (node, at) VALUES ($1, $2) ON CONFLICT (node) DO UPDATE SET at = excluded.at`
	// Two ranges of machines_beat_node around node, so that a node holding
	// every claim finds the answer without walking its own.
	qOtherVouch  = `SELECT 1 FROM node_beats WHERE node <> $1 AND at >= $2 LIMIT 1`
	qClaimsBelow = `SELECT 1 FROM machines WHERE beat_node > '' AND beat_node < $1 LIMIT 1`
	qClaimsAbove = `SELECT 1 FROM machines WHERE beat_node > $1 LIMIT 1`
	qVouchedAll  = `SELECT m.id, n.at FROM machines m JOIN node_beats n ON n.node = m.beat_node`
	qVouchedFor  = qVouchedAll + ` WHERE m.id IN (%s)`
	// touchBatch is how many machines one statement names.
	touchBatch = 500
)

func (t *sqlTx) Lease(ctx context.Context, name string) (coord.Lease, error) {
	var l coord.Lease
	var acquired, expires int64
	err := t.tx.QueryRowContext(ctx, qLease, name).Scan(&l.Name, &l.Holder, &l.Generation, &acquired, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return l, market.Errorf("get lease", market.NotFound, "lease %s has never been taken", name)
	}
	if err != nil {
		return l, fmt.Errorf("get lease %s: %w", name, err)
	}
	l.AcquiredAt, l.ExpiresAt = fromMicros(acquired), fromMicros(expires)
	return l, nil
}

func (t *sqlTx) PutLease(ctx context.Context, l coord.Lease) error {
	if _, err := t.tx.ExecContext(ctx, qPutLease, l.Name, l.Holder, l.Generation, micros(l.AcquiredAt), micros(l.ExpiresAt)); err != nil {
		return fmt.Errorf("put lease %s: %w", l.Name, err)
	}
	return nil
}

func (t *sqlTx) OtherNodes(ctx context.Context, node string, since time.Time) (bool, error) {
	for _, q := range []struct {
		sql  string
		args []any
	}{{qOtherVouch, []any{node, micros(since)}}, {qClaimsBelow, []any{node}}, {qClaimsAbove, []any{node}}} {
		ok, err := t.exists(ctx, q.sql, q.args...)
		if err != nil {
			return false, fmt.Errorf("look for other coordinators: %w", err)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func (t *sqlTx) ClaimMachines(ctx context.Context, node string, seen map[market.MachineID]time.Time) ([]market.MachineID, error) {
	ids := sortedIDs(seen)
	var missed []market.MachineID
	for chunk := range slices.Chunk(ids, touchBatch) {
		// Read first: a claim the node already holds costs no write.
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = string(id)
		}
		rows, err := t.tx.QueryContext(ctx, fmt.Sprintf(qClaims, placeholders(1, len(chunk))), args...)
		if err != nil {
			return nil, fmt.Errorf("read claims of %d machines: %w", len(chunk), err)
		}
		type state struct {
			online bool
			node   string
		}
		found := map[market.MachineID]state{}
		for rows.Next() {
			var id market.MachineID
			var c state
			if err := rows.Scan(&id, &c.online, &c.node); err != nil {
				rows.Close()
				return nil, err
			}
			found[id] = c
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		var claims []market.MachineID
		for _, id := range chunk {
			switch c, ok := found[id]; {
			case !ok || !c.online:
				missed = append(missed, id)
			case c.node != node:
				claims = append(claims, id)
			}
		}
		if len(claims) > 0 {
			if err := t.touch(ctx, qClaimMachines, node, claims, seen); err != nil {
				return nil, fmt.Errorf("claim %d machines: %w", len(claims), err)
			}
		}
	}
	return missed, nil
}

func (t *sqlTx) ReleaseMachines(ctx context.Context, node string, seen map[market.MachineID]time.Time) error {
	for chunk := range slices.Chunk(sortedIDs(seen), touchBatch) {
		if err := t.touch(ctx, qReleaseMachines, node, chunk, seen); err != nil {
			return fmt.Errorf("release %d machines: %w", len(chunk), err)
		}
	}
	return nil
}

// touch runs query (qClaimMachines or qReleaseMachines) for ids.
func (t *sqlTx) touch(ctx context.Context, query, node string, ids []market.MachineID, seen map[market.MachineID]time.Time) error {
	rows := make([]string, len(ids))
	args := make([]any, 0, 1+2*len(ids))
	args = append(args, node)
	for i, id := range ids {
		rows[i] = fmt.Sprintf("(CAST($%d AS TEXT), CAST($%d AS BIGINT))", 2*i+2, 2*i+3)
		args = append(args, string(id), micros(seen[id]))
	}
	_, err := t.tx.ExecContext(ctx, fmt.Sprintf(query, strings.Join(rows, ", ")), args...)
	return err
}

func (t *sqlTx) BeatNode(ctx context.Context, node string, at time.Time) error {
	if _, err := t.tx.ExecContext(ctx, qBeatNode, node, micros(at)); err != nil {
		return fmt.Errorf("record beat of node %s: %w", node, err)
	}
	return nil
}

func (t *sqlTx) VouchedSeen(ctx context.Context, ids []market.MachineID) (map[market.MachineID]time.Time, error) {
	out := map[market.MachineID]time.Time{}
	for chunk := range slices.Chunk(ids, touchBatch) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = string(id)
		}
		if err := t.readVouched(ctx, out, fmt.Sprintf(qVouchedFor, placeholders(1, len(chunk))), args...); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (t *sqlTx) AllVouchedSeen(ctx context.Context) (map[market.MachineID]time.Time, error) {
	out := map[market.MachineID]time.Time{}
	if err := t.readVouched(ctx, out, qVouchedAll); err != nil {
		return nil, err
	}
	return out, nil
}

// readVouched adds to out the (machine, vouched at) rows of query.
func (t *sqlTx) readVouched(ctx context.Context, out map[market.MachineID]time.Time, query string, args ...any) error {
	rows, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read vouched heartbeats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id market.MachineID
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return fmt.Errorf("read vouched heartbeats: %w", err)
		}
		out[id] = fromMicros(at)
	}
	return rows.Err()
}

func sortedIDs(seen map[market.MachineID]time.Time) []market.MachineID {
	ids := make([]market.MachineID, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	// A fixed order keeps concurrent writers from deadlocking on rows.
	slices.Sort(ids)
	return ids
}

// placeholders returns "$from, $from+1, ..." n times.
func placeholders(from, n int) string {
	ph := make([]string, n)
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", from+i)
	}
	return strings.Join(ph, ", ")
}
