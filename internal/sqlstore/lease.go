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

	// qTouchMachines is followed by touchBatch rows of
	// (CAST($n AS TEXT), CAST($n+1 AS BIGINT)). Both databases name the
	// columns of a VALUES list column1, column2, and accept UPDATE ... FROM
	// and RETURNING; the casts give Postgres the parameters' types.
	qTouchMachines = `UPDATE machines SET last_seen_at = CASE WHEN v.column2 > machines.last_seen_at THEN v.column2 ELSE machines.last_seen_at END
FROM (VALUES %s) AS v
WHERE machines.id = v.column1 AND machines.online
RETURNING machines.id`
	// touchBatch is how many machines one statement touches.
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

func (t *sqlTx) TouchMachines(ctx context.Context, seen map[market.MachineID]time.Time) ([]market.MachineID, error) {
	ids := make([]market.MachineID, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	// A fixed order keeps concurrent flushes from deadlocking on rows.
	slices.Sort(ids)
	var missed []market.MachineID
	for chunk := range slices.Chunk(ids, touchBatch) {
		rows := make([]string, len(chunk))
		args := make([]any, 0, 2*len(chunk))
		for i, id := range chunk {
			rows[i] = fmt.Sprintf("(CAST($%d AS TEXT), CAST($%d AS BIGINT))", 2*i+1, 2*i+2)
			args = append(args, string(id), micros(seen[id]))
		}
		touched, err := t.touched(ctx, fmt.Sprintf(qTouchMachines, strings.Join(rows, ", ")), args)
		if err != nil {
			return nil, fmt.Errorf("touch %d machines: %w", len(chunk), err)
		}
		for _, id := range chunk {
			if !touched[id] {
				missed = append(missed, id)
			}
		}
	}
	return missed, nil
}

func (t *sqlTx) touched(ctx context.Context, query string, args []any) (map[market.MachineID]bool, error) {
	rows, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	touched := map[market.MachineID]bool{}
	for rows.Next() {
		var id market.MachineID
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		touched[id] = true
	}
	return touched, rows.Err()
}
