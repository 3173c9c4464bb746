package coord

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Pool rewards (DePIN). A pool may pay its hosts a project asset for the
// GPUs rented on its machines: every minute of an instance that billing
// charges while the instance's machine is in the pool earns the host
// ledger.MinuteCharge(PerGPUHour * GPUs, minute) of the pool's asset, from
// the funding account's available balance, so that 60 minutes add up to
// the hourly rate exactly. The rewards are paid in the same transaction as
// the charges of those minutes, one transfer per pool and billing batch,
// and each (instance, minute) is recorded once (Tx.ApplyPoolRewards).
//
// When the funding account cannot pay a minute, that minute and the
// batch's later minutes of the pool go unrewarded (they are not owed
// later), the pool records why and an event says so; rewards resume with
// the first batch the account can pay again.

// rewardDue is the minutes [from, to) of an instance that billing just
// charged, on a machine of pool with gpus of its GPUs rented.
type rewardDue struct {
	inst     market.InstanceID
	host     market.AccountID
	pool     string
	gpus     int
	from, to int64
}

// rewardMinutes is the pure part of paying rewards: the minutes of due
// that the pool's reward pays from funds, in order, and whether it ran
// short (then the rest are not paid). Minutes whose reward rounds to zero
// are skipped.
func rewardMinutes(p market.Pool, due []rewardDue, funds market.Money, now time.Time) (rs []market.RewardMinute, short bool, next market.Money) {
	rw := p.Reward
	for _, d := range due {
		rate := rw.PerGPUHour * market.Money(d.gpus)
		for k := d.from; k < d.to; k++ {
			amt := ledger.MinuteCharge(rate, k)
			if amt <= 0 {
				continue
			}
			if funds < amt {
				return rs, true, amt
			}
			funds -= amt
			rs = append(rs, market.RewardMinute{Instance: d.inst, Minute: k, Pool: p.Name, Host: d.host, Amount: amt, At: now})
		}
	}
	return rs, false, 0
}

// rewardsTransfer is the transfer that pays rs from the pool's funding
// account: one entry for the funder, one per host, ordered by account.
func rewardsTransfer(rw market.PoolReward, rs []market.RewardMinute, now time.Time) market.Transfer {
	net := map[market.LedgerAccount]market.Money{}
	for _, r := range rs {
		net[market.Available(rw.From)] -= r.Amount
		net[market.Earnings(r.Host)] += r.Amount
	}
	entries := make([]market.Entry, 0, len(net))
	for _, a := range slices.Sorted(maps.Keys(net)) {
		entries = append(entries, market.Entry{Account: a, Amount: net[a]})
	}
	id := market.NewID(market.TransferPrefix)
	return market.Transfer{ID: market.TransferID(id), Key: "pool_rewards:" + id, Kind: market.TransferPoolRewards, Asset: rw.Asset,
		Entries: entries, Memo: fmt.Sprintf("pool %s: %d rewarded minutes", rs[0].Pool, len(rs)), At: now}
}

// payRewards pays, inside tx, the pool rewards of the minutes of due and
// records when a pool's rewards stop or resume.
func (s *Service) payRewards(ctx context.Context, tx Tx, due []rewardDue, now time.Time) error {
	if len(due) == 0 {
		return nil
	}
	ps, err := tx.Pools(ctx)
	if err != nil {
		return err
	}
	byPool := map[string][]rewardDue{}
	for _, d := range due {
		byPool[d.pool] = append(byPool[d.pool], d)
	}
	for _, p := range ps {
		if p.Reward == nil || len(byPool[p.Name]) == 0 {
			continue
		}
		rw := *p.Reward
		funds, err := tx.Balance(ctx, market.Available(rw.From), rw.Asset)
		if err != nil {
			return err
		}
		rs, short, next := rewardMinutes(p, byPool[p.Name], funds, now)
		if len(rs) > 0 {
			if _, err := tx.ApplyPoolRewards(ctx, rewardsTransfer(rw, rs, now), rs); err != nil {
				return fmt.Errorf("pay rewards of pool %s: %w", p.Name, err)
			}
		}
		switch {
		case short && rw.Stopped == "":
			why := fmt.Sprintf("funding account %s cannot pay a minute's reward of %s %s; deposit %s there to resume", rw.From, next, rw.Asset, rw.Asset)
			if err := tx.SetPoolRewardsStopped(ctx, p.Name, why); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "pool.rewards_stopped", Account: rw.From,
				Message: fmt.Sprintf("pool %s: rewards stopped: %s", p.Name, why)}); err != nil {
				return err
			}
		case !short && rw.Stopped != "":
			if err := tx.SetPoolRewardsStopped(ctx, p.Name, ""); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "pool.rewards_resumed", Account: rw.From,
				Message: fmt.Sprintf("pool %s: rewards resumed", p.Name)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPoolReward validates and completes the reward terms of a pool being
// set: the asset must exist, the rate be positive and From name an account
// (by ID or email), which it is turned into.
func (s *Service) checkPoolReward(ctx context.Context, tx Tx, op string, rw *market.PoolReward, old *market.PoolReward) error {
	switch {
	case rw.PerGPUHour <= 0:
		return market.Errorf(op, market.Invalid, "the reward per GPU-hour must be above zero, got %s", rw.PerGPUHour)
	case rw.PerGPUHour > market.Tokens(1_000_000): // far from overflowing rate * GPUs * minutes
		return market.Errorf(op, market.Invalid, "the reward per GPU-hour %s is above the limit of 1000000", rw.PerGPUHour)
	case rw.From == "":
		return market.Errorf(op, market.Invalid, "name the funding account that pays the rewards (--reward-from EMAIL)")
	}
	if err := s.checkAsset(ctx, tx, rw.Asset); err != nil {
		return err
	}
	var acct market.Account
	var err error
	if strings.Contains(string(rw.From), "@") {
		acct, err = tx.AccountByEmail(ctx, string(rw.From))
	} else {
		acct, err = tx.Account(ctx, rw.From)
	}
	if err != nil {
		return market.Errorf(op, market.Invalid, "funding account %s: %s", rw.From, market.Message(err))
	}
	rw.From, rw.Paid, rw.Stopped = acct.ID, 0, ""
	if old != nil {
		if old.Asset != rw.Asset && old.Paid > 0 {
			return market.Errorf(op, market.Invalid, "pool already paid %s %s in rewards; it cannot switch to %s (create another pool)", old.Paid, old.Asset, rw.Asset)
		}
		rw.Paid, rw.Stopped = old.Paid, old.Stopped
	}
	return nil
}

// setMachinePoolByHost moves the caller's machine m into pool ("" or
// "none": out of its pool). Hosts may only join and leave open pools: an
// open pool is the operator's approval given in advance; a closed pool's
// machines are the operator's to assign (gpumarket admin pool assign).
func setMachinePoolByHost(ctx context.Context, tx Tx, caller market.Account, m market.MachineID, pool string, now time.Time) error {
	const op = "set machine pool"
	if pool == "none" {
		pool = ""
	}
	cur, err := tx.MachinePool(ctx, m)
	if err != nil || cur == pool {
		return err
	}
	admin := caller.Has(market.RoleAdmin)
	if cur != "" && !admin {
		p, err := tx.Pool(ctx, cur)
		if err != nil {
			return err
		}
		if !p.Open {
			return market.Errorf(op, market.Forbidden, "machine %s is in pool %s, which is not open to hosts; ask an operator to move it (gpumarket admin pool unassign)", m, cur)
		}
	}
	if pool != "" && !admin {
		p, err := tx.Pool(ctx, pool)
		if market.IsKind(err, market.NotFound) {
			return market.Errorf(op, market.Invalid, "pool %q not found; ask an operator for the name of a pool open to hosts", pool)
		} else if err != nil {
			return err
		}
		if !p.Open {
			return market.Errorf(op, market.Forbidden, "pool %s is not open to hosts; ask an operator to assign your machine (gpumarket admin pool assign %s %s)", pool, pool, m)
		}
	}
	if err := tx.SetMachinePool(ctx, m, pool); err != nil {
		return err
	}
	msg := fmt.Sprintf("machine %s left pool %s", m, cur)
	if pool != "" {
		msg = fmt.Sprintf("machine %s joined pool %s", m, pool)
	}
	return tx.AppendEvent(ctx, market.Event{At: now, Type: "pool.assigned", Account: caller.ID, Machine: m, Message: msg})
}
