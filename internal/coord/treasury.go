package coord

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Defaults of the money settings of Config.
const (
	DefaultSettlementDelay = 24 * time.Hour
	DefaultDividendPeriod  = 24 * time.Hour
	DefaultUnstakeCooldown = 7 * 24 * time.Hour
	DefaultMinWithdrawal   = market.Micro // one token
)

// Settlement. A host's earnings become withdrawable once the settlement
// delay has passed since the charge, payment or pool reward that credited
// them, in every asset alike. Rather than move each charge from a pending
// to a settled account (one more transfer per billed minute), the
// coordinator computes, per asset:
//
//	pending      = earnings credited in the last SettlementDelay (charges, payments, pool rewards)
//	withdrawable = earnings balance - pending
//
// Only withdrawals take money out of the earnings account, and only up to
// withdrawable, so pending earnings always stay in it: a refund for host
// downtime can still take them.

// pendingEarnings is what charges, payments and pool rewards credited
// host in asset within the settlement delay, less what refunds took back
// from it in that time (refunds take only unsettled earnings).
func (s *Service) pendingEarnings(ctx context.Context, tx Tx, host market.AccountID, asset market.Asset, now time.Time) (market.Money, error) {
	p, err := tx.Flow(ctx, FlowFilter{Account: market.Earnings(host), Kind: market.TransferCharge, Asset: asset,
		Kinds: []market.TransferKind{market.TransferCharges, market.TransferRefund, market.TransferPayment, market.TransferPoolRewards},
		From:  now.Add(-s.cfg.SettlementDelay)})
	return max(p, 0), err
}

func (s *Service) withdrawable(ctx context.Context, tx Tx, host market.AccountID, asset market.Asset, now time.Time) (bal, pending, free market.Money, err error) {
	if bal, err = tx.Balance(ctx, market.Earnings(host), asset); err != nil {
		return
	}
	if pending, err = s.pendingEarnings(ctx, tx, host, asset, now); err != nil {
		return
	}
	return bal, pending, max(bal-pending, 0), nil
}

// Withdraw moves withdrawable earnings of the caller, in the platform
// token or a project asset, into its withdrawal hold and queues a
// withdrawal for an admin (or a payout adapter) to complete or reject.
// Every asset has the same minimum amount and settlement delay.
func (s *Service) Withdraw(ctx context.Context, caller market.Account, key string, req market.WithdrawRequest) (market.Withdrawal, error) {
	const op = "withdraw"
	return idempotent(ctx, s, caller, op, key, req, func(tx Tx) (market.Withdrawal, error) {
		asset := cmp.Or(req.Asset, market.DefaultAsset)
		if err := s.checkAsset(ctx, tx, asset); err != nil {
			return market.Withdrawal{}, err
		}
		if req.Amount < s.cfg.MinWithdrawal {
			return market.Withdrawal{}, market.Errorf(op, market.Invalid, "the smallest withdrawal is %s %s; you asked for %s", s.cfg.MinWithdrawal, asset, req.Amount)
		}
		now := s.now()
		_, pending, free, err := s.withdrawable(ctx, tx, caller.ID, asset, now)
		if err != nil {
			return market.Withdrawal{}, err
		}
		if req.Amount > free {
			return market.Withdrawal{}, market.Errorf(op, market.InsufficientFunds,
				"you can withdraw %s %s now; %s more is pending and becomes withdrawable %s after it was earned", free, asset, pending, s.cfg.SettlementDelay)
		}
		w := market.Withdrawal{ID: market.WithdrawalID(market.NewID(market.WithdrawalPrefix)), Account: caller.ID, Asset: asset,
			Amount: req.Amount, State: market.WithdrawalPending, CreatedAt: now}
		if err := tx.InsertWithdrawal(ctx, w); err != nil {
			return w, err
		}
		if _, err := tx.ApplyTransfer(ctx, ledger.Withdraw(w, now)); err != nil {
			return w, err
		}
		return w, tx.AppendEvent(ctx, market.Event{At: now, Type: "wallet.withdraw", Account: caller.ID, Message: fmt.Sprintf("withdrawal %s of %s %s queued", w.ID, w.Amount, w.Asset)})
	})
}

// Withdrawals lists the caller's withdrawals; with all, an admin sees
// everyone's. state filters when not empty.
func (s *Service) Withdrawals(ctx context.Context, caller market.Account, all bool, state market.WithdrawalState) ([]market.Withdrawal, error) {
	f := WithdrawalFilter{Account: caller.ID, State: state}
	if all {
		if err := require(caller, "list all withdrawals", market.RoleAdmin); err != nil {
			return nil, err
		}
		f.Account = ""
	}
	var out []market.Withdrawal
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Withdrawals(ctx, f)
		return err
	})
	if out == nil {
		out = []market.Withdrawal{}
	}
	return out, err
}

// CompleteWithdrawal pays a pending withdrawal out to the world; admins only.
func (s *Service) CompleteWithdrawal(ctx context.Context, caller market.Account, key string, id market.WithdrawalID) (market.Withdrawal, error) {
	return s.decideWithdrawal(ctx, caller, key, id, market.WithdrawalCompleted, "")
}

// RejectWithdrawal returns a pending withdrawal to the host's earnings;
// admins only, with a reason the host sees.
func (s *Service) RejectWithdrawal(ctx context.Context, caller market.Account, key string, id market.WithdrawalID, reason string) (market.Withdrawal, error) {
	return s.decideWithdrawal(ctx, caller, key, id, market.WithdrawalRejected, reason)
}

func (s *Service) decideWithdrawal(ctx context.Context, caller market.Account, key string, id market.WithdrawalID, to market.WithdrawalState, reason string) (market.Withdrawal, error) {
	op := "complete withdrawal"
	if to == market.WithdrawalRejected {
		op = "reject withdrawal"
	}
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return market.Withdrawal{}, err
	}
	req := struct {
		ID     market.WithdrawalID `json:"id"`
		Reason string              `json:"reason,omitempty"`
	}{id, reason}
	return idempotent(ctx, s, caller, op, key, req, func(tx Tx) (market.Withdrawal, error) {
		reason := strings.TrimSpace(reason)
		if to == market.WithdrawalRejected && reason == "" {
			return market.Withdrawal{}, market.Errorf(op, market.Invalid, "say why the withdrawal is rejected (--reason); the host sees it")
		}
		w, err := tx.Withdrawal(ctx, id)
		if err != nil {
			return w, err
		}
		if w.State != market.WithdrawalPending {
			return w, market.Errorf(op, market.Conflict, "withdrawal %s is %s already", id, w.State)
		}
		now := s.now()
		t := ledger.Payout(w, now)
		if to == market.WithdrawalRejected {
			t = ledger.ReturnWithdrawal(w, reason, now)
		}
		if _, err := tx.ApplyTransfer(ctx, t); err != nil {
			return w, err
		}
		w.State, w.Reason, w.DecidedAt, w.DecidedBy = to, reason, &now, caller.ID
		if err := tx.UpdateWithdrawal(ctx, w); err != nil {
			return w, err
		}
		return w, tx.AppendEvent(ctx, market.Event{At: now, Type: "withdrawal." + string(to), Account: w.Account,
			Message: fmt.Sprintf("withdrawal %s of %s %s %s by %s %s", w.ID, w.Amount, w.Asset, to, caller.Email, reason)})
	})
}

// Staking.

// AddStake stakes tokens from the caller's available balance.
func (s *Service) AddStake(ctx context.Context, caller market.Account, key string, req market.StakeRequest) (market.StakeInfo, error) {
	const op = "stake"
	_, err := idempotent(ctx, s, caller, op, key, req, func(tx Tx) (market.Transfer, error) {
		if req.Amount <= 0 {
			return market.Transfer{}, market.Errorf(op, market.Invalid, "stake an amount above zero, not %s", req.Amount)
		}
		now := s.now()
		t, err := tx.ApplyTransfer(ctx, ledger.Stake(caller.ID, market.NewID("s-"), req.Amount, now))
		if err != nil {
			return t, err
		}
		return t, tx.AppendEvent(ctx, market.Event{At: now, Type: "stake.add", Account: caller.ID, Message: "staked " + req.Amount.String()})
	})
	if err != nil {
		return market.StakeInfo{}, err
	}
	return s.Stake(ctx, caller)
}

// RemoveStake unstakes tokens: they stop earning dividends now and return
// to the available balance when the cooldown ends.
func (s *Service) RemoveStake(ctx context.Context, caller market.Account, key string, req market.StakeRequest) (market.Unstake, error) {
	const op = "unstake"
	return idempotent(ctx, s, caller, op, key, req, func(tx Tx) (market.Unstake, error) {
		if req.Amount <= 0 {
			return market.Unstake{}, market.Errorf(op, market.Invalid, "unstake an amount above zero, not %s", req.Amount)
		}
		staked, err := tx.Balance(ctx, market.Staked(caller.ID), market.DefaultAsset)
		if err != nil {
			return market.Unstake{}, err
		}
		if req.Amount > staked {
			return market.Unstake{}, market.Errorf(op, market.InsufficientFunds, "you have %s %s staked; you cannot unstake %s", staked, market.DefaultAsset, req.Amount)
		}
		now := s.now()
		u := market.Unstake{ID: market.NewID("u-"), Account: caller.ID, Amount: req.Amount, At: now, ReleaseAt: now.Add(s.cfg.UnstakeCooldown)}
		if err := tx.InsertUnstake(ctx, u); err != nil {
			return u, err
		}
		if _, err := tx.ApplyTransfer(ctx, ledger.Unstake(caller.ID, u.ID, u.Amount, now)); err != nil {
			return u, err
		}
		return u, tx.AppendEvent(ctx, market.Event{At: now, Type: "stake.remove", Account: caller.ID,
			Message: fmt.Sprintf("unstaked %s; available at %s", u.Amount, u.ReleaseAt.Format(time.RFC3339))})
	})
}

// Stake shows the caller's stake, its cooldowns and the total staked.
func (s *Service) Stake(ctx context.Context, caller market.Account) (market.StakeInfo, error) {
	in := market.StakeInfo{Account: caller.ID, Asset: market.DefaultAsset, Unstakes: []market.Unstake{}}
	err := s.store.Tx(ctx, func(tx Tx) error {
		bal, err := tx.Balances(ctx, market.DefaultAsset)
		if err != nil {
			return err
		}
		for a, b := range bal {
			if o := a.Owner(); o != "" && a == market.Staked(o) {
				in.TotalStaked += b
			}
		}
		in.Staked, in.Unstaking = bal[market.Staked(caller.ID)], bal[market.Unstaking(caller.ID)]
		us, err := tx.Unstakes(ctx, UnstakeFilter{Account: caller.ID, Unreleased: true})
		if err != nil {
			return err
		}
		in.Unstakes = append(in.Unstakes, us...)
		in.Dividends, err = tx.Flow(ctx, FlowFilter{Account: market.Available(caller.ID), Kind: market.TransferDividend})
		return err
	})
	return in, err
}

// Statements returns dividend statements, newest first: the one of period
// when period >= 0, else the latest limit.
func (s *Service) Statements(ctx context.Context, period int64, limit int) ([]market.DividendStatement, error) {
	if limit <= 0 || limit > 1000 {
		limit = 10
	}
	out := []market.DividendStatement{}
	err := s.store.Tx(ctx, func(tx Tx) error {
		if period >= 0 {
			st, err := tx.Statement(ctx, period)
			out = append(out, st)
			return err
		}
		sts, err := tx.Statements(ctx, limit)
		out = append(out, sts...)
		return err
	})
	return out, err
}

// releaseUnstakes returns to their owners the stake removals whose cooldown
// has ended, in one transaction.
func (s *Service) releaseUnstakes(ctx context.Context) error {
	return s.store.Tx(ctx, func(tx Tx) error {
		now := s.now()
		due, err := tx.Unstakes(ctx, UnstakeFilter{Unreleased: true, DueBy: &now})
		if err != nil {
			return err
		}
		for _, u := range due {
			if _, err := tx.ApplyTransfer(ctx, ledger.ReleaseUnstake(u.Account, u.ID, u.Amount, now)); err != nil {
				return fmt.Errorf("release unstake %s: %w", u.ID, err)
			}
			u.Released = true
			if err := tx.UpdateUnstake(ctx, u); err != nil {
				return err
			}
		}
		return nil
	})
}

// maxPeriodsPerTick bounds the catch-up work of one tick (dev --speedup,
// a coordinator that was down for a long time).
const maxPeriodsPerTick = 100

// distribute pays the dividends of every distribution period that has
// ended and has no statement yet, oldest first, each with its statement in
// the same transaction. The first period is the one of the first stake:
// fees collected before anyone staked stay with the platform.
//
// The pool of a period is the fees charged in it plus what the previous
// period carried out. Each staker gets floor(pool x its stake-time / all
// stake-time) (see ledger.Distribute); what rounding leaves, and the whole
// pool when nobody was staked, stays in the fee account and is carried into
// the next period's pool.
func (s *Service) distribute(ctx context.Context) error {
	p := s.cfg.DividendPeriod
	return s.store.Tx(ctx, func(tx Tx) error {
		now := s.now()
		last, err := tx.Statements(ctx, 1)
		if err != nil {
			return err
		}
		var k int64
		var carry market.Money
		if len(last) > 0 {
			k, carry = last[0].Period+1, last[0].CarriedOut
		}
		if ledger.PeriodStart(k+1, p).After(now) {
			return nil
		}
		ts, err := tx.TransfersByKind(ctx, []market.TransferKind{market.TransferStake, market.TransferUnstake}, now)
		if err != nil {
			return err
		}
		if len(ts) == 0 {
			return nil
		}
		if len(last) == 0 {
			k, _, _ = ledger.Period(ts[0].At, p)
		}
		var changes []ledger.StakeChange
		for _, t := range ts {
			for _, e := range t.Entries {
				if o := e.Account.Owner(); o != "" && e.Account == market.Staked(o) {
					changes = append(changes, ledger.StakeChange{Account: o, At: t.At, Delta: e.Amount})
				}
			}
		}
		for n := 0; n < maxPeriodsPerTick; n++ {
			start, end := ledger.PeriodStart(k, p), ledger.PeriodStart(k+1, p)
			if end.After(now) {
				return nil
			}
			// Fees in: charged in the period, less what refunds took back.
			feesIn, err := tx.Flow(ctx, FlowFilter{Account: market.FeesAccount, Kind: market.TransferCharge,
				Kinds: []market.TransferKind{market.TransferCharges, market.TransferRefund}, From: start, To: end})
			if err != nil {
				return err
			}
			st := market.DividendStatement{Period: k, Start: start, End: end, Asset: market.DefaultAsset,
				FeesIn: feesIn, CarriedIn: carry, Pool: feesIn + carry, Shares: []market.StakeShare{}, At: now}
			shares, total, rest := ledger.Distribute(st.Pool, ledger.StakeTime(changes, start, end))
			st.TotalStakeTime, st.CarriedOut, st.Paid = total.String(), rest, st.Pool-rest
			for _, sh := range shares {
				st.Shares = append(st.Shares, market.StakeShare{Account: sh.Account, StakeTime: sh.StakeTime.String(), Payout: sh.Payout})
			}
			if t, ok := ledger.Dividend(k, shares, now); ok {
				if t, err = tx.ApplyTransfer(ctx, t); err != nil {
					return fmt.Errorf("pay dividends of period %d: %w", k, err)
				}
				st.TransferSeq = t.Seq
			}
			if err := tx.InsertStatement(ctx, st); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "dividend.paid",
				Message: fmt.Sprintf("period %d: %s of %s paid to %d stakers, %s carried", k, st.Paid, st.Pool, len(shares), st.CarriedOut)}); err != nil {
				return err
			}
			k, carry = k+1, st.CarriedOut
		}
		return nil
	})
}

// tickMoney is the money part of a background pass: charge running
// instances, release ended unstake cooldowns, pay due dividends, raise
// spend alerts. A failure of one does not hold back the others.
func (s *Service) tickMoney(ctx context.Context) error {
	return errors.Join(s.bill(ctx), s.releaseUnstakes(ctx), s.distribute(ctx), s.checkSpendAlerts(ctx))
}
