package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Replica signals (migration 0013).

const (
	signalColumns = `instance_id, queue, queue_at, healthy, health_at, util, util_at, at`
	// qPutSignals is followed by rows of 8 parameters. Of each value the
	// one reported later (on a tie, the one written last) wins: two coordinators may hold reports of one
	// replica when its agent moved between them.
	qPutSignals = `INSERT INTO replica_signals (` + signalColumns + `) VALUES %s
ON CONFLICT (instance_id) DO UPDATE SET
queue = CASE WHEN excluded.queue_at >= replica_signals.queue_at THEN excluded.queue ELSE replica_signals.queue END,
queue_at = CASE WHEN excluded.queue_at >= replica_signals.queue_at THEN excluded.queue_at ELSE replica_signals.queue_at END,
healthy = CASE WHEN excluded.health_at >= replica_signals.health_at THEN excluded.healthy ELSE replica_signals.healthy END,
health_at = CASE WHEN excluded.health_at >= replica_signals.health_at THEN excluded.health_at ELSE replica_signals.health_at END,
util = CASE WHEN excluded.util_at >= replica_signals.util_at THEN excluded.util ELSE replica_signals.util END,
util_at = CASE WHEN excluded.util_at >= replica_signals.util_at THEN excluded.util_at ELSE replica_signals.util_at END,
at = CASE WHEN excluded.at > replica_signals.at THEN excluded.at ELSE replica_signals.at END`
	qSignals     = `SELECT ` + signalColumns + ` FROM replica_signals WHERE at >= $1`
	qPruneSignal = `DELETE FROM replica_signals WHERE at < $1`
	// signalBatch is how many rows one statement writes.
	signalBatch = 200
)

func (t *sqlTx) PutReplicaSignals(ctx context.Context, sigs []coord.ReplicaSignal) error {
	for len(sigs) > 0 {
		n := min(len(sigs), signalBatch)
		rows := make([]string, n)
		args := make([]any, 0, 8*n)
		for i, s := range sigs[:n] {
			rows[i] = "(" + placeholders(8*i+1, 8) + ")"
			q, h, u := sql.NullInt64{}, sql.NullBool{}, sql.NullFloat64{}
			var qAt, hAt, uAt int64
			if s.Queue != nil {
				q, qAt = sql.NullInt64{Int64: *s.Queue, Valid: true}, micros(s.QueueAt)
			}
			if s.Healthy != nil {
				h, hAt = sql.NullBool{Bool: *s.Healthy, Valid: true}, micros(s.HealthAt)
			}
			if s.Util != nil {
				u, uAt = sql.NullFloat64{Float64: *s.Util, Valid: true}, micros(s.UtilAt)
			}
			args = append(args, string(s.Instance), q, qAt, h, hAt, u, uAt, micros(s.At))
		}
		if _, err := t.tx.ExecContext(ctx, fmt.Sprintf(qPutSignals, strings.Join(rows, ", ")), args...); err != nil {
			return fmt.Errorf("write %d replica signals: %w", n, err)
		}
		sigs = sigs[n:]
	}
	return nil
}

func (t *sqlTx) ReplicaSignals(ctx context.Context, since time.Time) (map[market.InstanceID]coord.ReplicaSignal, error) {
	rows, err := t.tx.QueryContext(ctx, qSignals, micros(since))
	if err != nil {
		return nil, fmt.Errorf("read replica signals: %w", err)
	}
	list, err := collect(rows, func(sc scanner) (coord.ReplicaSignal, error) {
		var s coord.ReplicaSignal
		var q sql.NullInt64
		var h sql.NullBool
		var u sql.NullFloat64
		var qAt, hAt, uAt, at int64
		if err := sc.Scan(&s.Instance, &q, &qAt, &h, &hAt, &u, &uAt, &at); err != nil {
			return s, err
		}
		if q.Valid {
			s.Queue, s.QueueAt = &q.Int64, fromMicros(qAt)
		}
		if h.Valid {
			s.Healthy, s.HealthAt = &h.Bool, fromMicros(hAt)
		}
		if u.Valid {
			s.Util, s.UtilAt = &u.Float64, fromMicros(uAt)
		}
		s.At = fromMicros(at)
		return s, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read replica signals: %w", err)
	}
	out := make(map[market.InstanceID]coord.ReplicaSignal, len(list))
	for _, s := range list {
		out[s.Instance] = s
	}
	return out, nil
}

func (t *sqlTx) PruneReplicaSignals(ctx context.Context, before time.Time) error {
	if _, err := t.tx.ExecContext(ctx, qPruneSignal, micros(before)); err != nil {
		return fmt.Errorf("delete old replica signals: %w", err)
	}
	return nil
}
