package sqlstore

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Pool rewards (DePIN): one pool_rewards transfer pays the rewarded
// minutes of a billing batch; each minute is a row of pool_rewards, whose
// primary key (instance, minute) rewards a minute at most once.

const (
	rewardColumns       = `instance_id, minute, transfer_seq, pool, host_id, amount, at`
	qInsertRewardsPfx   = `INSERT INTO pool_rewards (` + rewardColumns + `) VALUES `
	qRewardMinutes      = `SELECT ` + rewardColumns + ` FROM pool_rewards`
	qRewardMinutesOrder = ` ORDER BY instance_id, minute`
	qAddPoolPaid        = `UPDATE pools SET rewards_paid = rewards_paid + $2 WHERE name = $1`
	qSetPoolStopped     = `UPDATE pools SET rewards_stopped = $2 WHERE name = $1`
)

func (t *sqlTx) ApplyPoolRewards(ctx context.Context, tr market.Transfer, rs []market.RewardMinute) (market.Transfer, error) {
	const op = "apply pool rewards"
	if tr.Kind != market.TransferPoolRewards {
		return market.Transfer{}, market.Errorf(op, market.Invalid, "transfer %s is a %s, not a pool rewards batch", tr.ID, tr.Kind)
	}
	if len(rs) == 0 {
		return market.Transfer{}, market.Errorf(op, market.Invalid, "pool rewards batch %s pays no minute", tr.ID)
	}
	paid := map[string]market.Money{}
	for _, r := range rs {
		paid[r.Pool] += r.Amount
	}
	var out market.Transfer
	err := t.atomic(ctx, func() error {
		ts, err := t.ApplyTransfers(ctx, []market.Transfer{tr})
		if err != nil {
			return err
		}
		out = ts[0]
		_, err = t.writeRows(ctx, valuesWrite(qInsertRewardsPfx, "", 7, nil), len(rs), func(i int, a []any) []any {
			r := &rs[i]
			return append(a, string(r.Instance), r.Minute, out.Seq, r.Pool, string(r.Host), int64(r.Amount), micros(r.At))
		})
		if t.classify(err) == UniqueViolation {
			return market.Errorf(op, market.Conflict, "a minute of the %d rewarded (first: minute %d of %s) is already rewarded", len(rs), rs[0].Minute, rs[0].Instance)
		}
		if err != nil {
			return fmt.Errorf("%s: record rewarded minutes: %w", op, err)
		}
		for _, p := range slices.Sorted(maps.Keys(paid)) {
			res, err := t.tx.ExecContext(ctx, qAddPoolPaid, p, int64(paid[p]))
			if err != nil {
				return fmt.Errorf("%s: add to pool %s: %w", op, p, err)
			}
			if err := mustAffect(res, market.Errorf(op, market.NotFound, "pool %q not found", p)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return market.Transfer{}, err
	}
	return out, nil
}

func (t *sqlTx) SetPoolRewardsStopped(ctx context.Context, pool, why string) error {
	res, err := t.tx.ExecContext(ctx, qSetPoolStopped, pool, why)
	if err != nil {
		return fmt.Errorf("set rewards of pool %s: %w", pool, err)
	}
	return mustAffect(res, market.Errorf("set pool rewards", market.NotFound, "pool %q not found", pool))
}

func (t *sqlTx) RewardMinutes(ctx context.Context, instance market.InstanceID) ([]market.RewardMinute, error) {
	var w where
	if instance != "" {
		w.add("instance_id = ?", instance)
	}
	rows, err := t.tx.QueryContext(ctx, qRewardMinutes+w.sql()+qRewardMinutesOrder, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list rewarded minutes: %w", err)
	}
	return collect(rows, func(s scanner) (market.RewardMinute, error) {
		var r market.RewardMinute
		var inst, host string
		var amount, at int64
		err := s.Scan(&inst, &r.Minute, &r.Transfer, &r.Pool, &host, &amount, &at)
		r.Instance, r.Host, r.Amount, r.At = market.InstanceID(inst), market.AccountID(host), market.Money(amount), fromMicros(at)
		return r, err
	})
}
