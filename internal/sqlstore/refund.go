package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Refunds (migration 0007).

const (
	refundColumns   = `id, instance_id, renter_id, host_id, from_minute, to_minute, minutes, asset, amount, from_host, from_platform, reason, by_account, transfer_seq, at`
	qInsertRefund   = `INSERT INTO refunds (` + refundColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`
	qRefundExists   = `SELECT id FROM refunds WHERE id = $1`
	qRefunds        = `SELECT ` + refundColumns + ` FROM refunds` // + filter + order
	qRefundsOrdered = ` ORDER BY at, id`
)

func (t *sqlTx) InsertRefund(ctx context.Context, r market.Refund) error {
	const op = "insert refund"
	conflict := market.Errorf(op, market.Conflict, "refund %s exists", r.ID)
	if ok, err := t.exists(ctx, qRefundExists, r.ID); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if ok {
		return conflict
	}
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertRefund, string(r.ID), string(r.Instance), string(r.Renter), string(r.Host), r.FromMinute, r.ToMinute, r.Minutes,
			string(r.Asset), int64(r.Amount), int64(r.FromHost), int64(r.FromPlatform), r.Reason, string(r.By), r.TransferSeq, micros(r.At))
		switch t.classify(err) {
		case UniqueViolation:
			return conflict
		case ForeignKeyViolation:
			return market.Errorf(op, market.NotFound, "instance %s or transfer %d not found", r.Instance, r.TransferSeq)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, r.ID, err)
		}
		return nil
	})
}

func (t *sqlTx) Refunds(ctx context.Context, f coord.RefundFilter) ([]market.Refund, error) {
	var w where
	if f.Instance != "" {
		w.add("instance_id = ?", string(f.Instance))
	}
	if f.Renter != "" {
		w.add("renter_id = ?", string(f.Renter))
	}
	rows, err := t.tx.QueryContext(ctx, qRefunds+w.sql()+qRefundsOrdered, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list refunds: %w", err)
	}
	return collect(rows, func(s scanner) (market.Refund, error) {
		var r market.Refund
		var id, inst, renter, host, asset, by string
		var amount, fromHost, fromPlatform, at int64
		err := s.Scan(&id, &inst, &renter, &host, &r.FromMinute, &r.ToMinute, &r.Minutes, &asset, &amount, &fromHost, &fromPlatform, &r.Reason, &by, &r.TransferSeq, &at)
		r.ID, r.Instance, r.Renter, r.Host, r.Asset, r.By = market.RefundID(id), market.InstanceID(inst), market.AccountID(renter), market.AccountID(host), market.Asset(asset), market.AccountID(by)
		r.Amount, r.FromHost, r.FromPlatform, r.At = market.Money(amount), market.Money(fromHost), market.Money(fromPlatform), fromMicros(at)
		return r, err
	})
}

// Assets (migration 0007).

const (
	qInsertAsset = `INSERT INTO assets (name, kind, description, created_at) VALUES ($1, $2, $3, $4)`
	qAssetExists = `SELECT name FROM assets WHERE name = $1`
	qAssets      = `SELECT name, kind, description, created_at FROM assets ORDER BY name`
)

func (t *sqlTx) InsertAsset(ctx context.Context, a market.AssetInfo) error {
	const op = "insert asset"
	conflict := market.Errorf(op, market.Conflict, "asset %s exists", a.Name)
	if ok, err := t.exists(ctx, qAssetExists, string(a.Name)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if ok {
		return conflict
	}
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertAsset, string(a.Name), string(a.Kind), a.Description, micros(a.CreatedAt))
		if t.classify(err) == UniqueViolation {
			return conflict
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, a.Name, err)
		}
		return nil
	})
}

func (t *sqlTx) Assets(ctx context.Context) ([]market.AssetInfo, error) {
	rows, err := t.tx.QueryContext(ctx, qAssets)
	if err != nil {
		return nil, fmt.Errorf("list assets: %w", err)
	}
	return collect(rows, func(s scanner) (market.AssetInfo, error) {
		var a market.AssetInfo
		var name, kind string
		var at int64
		err := s.Scan(&name, &kind, &a.Description, &at)
		a.Name, a.Kind, a.CreatedAt = market.Asset(name), market.AssetKind(kind), fromMicros(at)
		return a, err
	})
}

// Spend limits (migration 0007).

const (
	spendColumns   = `account_id, max_per_hour, alert_at, webhook, alerted_at, updated_at`
	qPutSpendLimit = `INSERT INTO spend_limits (` + spendColumns + `) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id) DO UPDATE SET max_per_hour = excluded.max_per_hour, alert_at = excluded.alert_at,
webhook = excluded.webhook, alerted_at = excluded.alerted_at, updated_at = excluded.updated_at`
	qSpendLimit  = `SELECT ` + spendColumns + ` FROM spend_limits WHERE account_id = $1`
	qSpendLimits = `SELECT ` + spendColumns + ` FROM spend_limits` // + WHERE account_id IN (...)
	qSpendAlerts = `SELECT ` + spendColumns + ` FROM spend_limits WHERE alert_at > 0 ORDER BY account_id`
)

func scanSpendLimit(s scanner) (coord.SpendLimit, error) {
	var l coord.SpendLimit
	var acct string
	var maxRate, alertAt, alerted, updated int64
	err := s.Scan(&acct, &maxRate, &alertAt, &l.Limits.Webhook, &alerted, &updated)
	l.Account, l.Limits.MaxPerHour, l.Limits.AlertAt = market.AccountID(acct), market.Money(maxRate), market.Money(alertAt)
	if alerted != 0 {
		l.AlertedAt = fromMicros(alerted)
	}
	l.UpdatedAt = fromMicros(updated)
	return l, err
}

func (t *sqlTx) PutSpendLimit(ctx context.Context, l coord.SpendLimit) error {
	var alerted int64
	if !l.AlertedAt.IsZero() {
		alerted = micros(l.AlertedAt)
	}
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qPutSpendLimit, string(l.Account), int64(l.Limits.MaxPerHour), int64(l.Limits.AlertAt), l.Limits.Webhook, alerted, micros(l.UpdatedAt))
		if t.classify(err) == ForeignKeyViolation {
			return market.Errorf("set spend limits", market.NotFound, "account %s not found", l.Account)
		}
		if err != nil {
			return fmt.Errorf("set spend limits of %s: %w", l.Account, err)
		}
		return nil
	})
}

func (t *sqlTx) SpendLimit(ctx context.Context, account market.AccountID) (coord.SpendLimit, error) {
	l, err := scanSpendLimit(t.tx.QueryRowContext(ctx, qSpendLimit, string(account)))
	if errors.Is(err, sql.ErrNoRows) {
		return l, market.Errorf("get spend limits", market.NotFound, "account %s set no spend limits", account)
	}
	if err != nil {
		return l, fmt.Errorf("get spend limits of %s: %w", account, err)
	}
	return l, nil
}

func (t *sqlTx) SpendLimitsOf(ctx context.Context, accounts []market.AccountID) (map[market.AccountID]coord.SpendLimit, error) {
	out := make(map[market.AccountID]coord.SpendLimit, len(accounts))
	if len(accounts) == 0 {
		return out, nil
	}
	ls, err := chunked(accounts, func(ids []string) ([]coord.SpendLimit, error) {
		var w where
		w.in("account_id", ids)
		rows, err := t.tx.QueryContext(ctx, qSpendLimits+w.sql(), w.args...)
		if err != nil {
			return nil, err
		}
		return collect(rows, scanSpendLimit)
	})
	if err != nil {
		return nil, fmt.Errorf("get spend limits: %w", err)
	}
	for _, l := range ls {
		out[l.Account] = l
	}
	return out, nil
}

func (t *sqlTx) SpendAlerts(ctx context.Context) ([]coord.SpendLimit, error) {
	rows, err := t.tx.QueryContext(ctx, qSpendAlerts)
	if err != nil {
		return nil, fmt.Errorf("list spend alerts: %w", err)
	}
	return collect(rows, scanSpendLimit)
}
