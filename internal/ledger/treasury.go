package ledger

import (
	"cmp"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// move is a transfer of amount from one account to another.
func move(kind market.TransferKind, key, memo string, from, to market.LedgerAccount, amount market.Money, at time.Time) market.Transfer {
	return transfer(kind, key, at, memo,
		market.Entry{Account: from, Amount: -amount},
		market.Entry{Account: to, Amount: amount})
}

// Withdraw moves withdrawable earnings of a host into its withdrawal
// hold, in the asset of w.
func Withdraw(w market.Withdrawal, at time.Time) market.Transfer {
	return inAsset(w.Asset, move(market.TransferWithdraw, "withdraw:"+string(w.ID), "withdrawal "+string(w.ID)+" queued",
		market.Earnings(w.Account), market.Withdrawing(w.Account), w.Amount, at))
}

// Payout pays a queued withdrawal out of the ledger, to the world.
func Payout(w market.Withdrawal, at time.Time) market.Transfer {
	return inAsset(w.Asset, move(market.TransferPayout, "payout:"+string(w.ID), "withdrawal "+string(w.ID)+" paid out",
		market.Withdrawing(w.Account), market.WorldAccount, w.Amount, at))
}

// ReturnWithdrawal gives a rejected withdrawal back to the host's earnings.
func ReturnWithdrawal(w market.Withdrawal, reason string, at time.Time) market.Transfer {
	return inAsset(w.Asset, move(market.TransferWithdrawReturn, "withdraw-return:"+string(w.ID), "withdrawal "+string(w.ID)+" rejected: "+reason,
		market.Withdrawing(w.Account), market.Earnings(w.Account), w.Amount, at))
}

// inAsset is t in asset a; an empty a is the platform token.
func inAsset(a market.Asset, t market.Transfer) market.Transfer {
	if a != "" {
		t.Asset = a
	}
	return t
}

// Stake moves tokens from a user's available balance into its stake.
func Stake(user market.AccountID, key string, amount market.Money, at time.Time) market.Transfer {
	return move(market.TransferStake, "stake:"+key, "staked", market.Available(user), market.Staked(user), amount, at)
}

// Unstake moves staked tokens into the cooldown account.
func Unstake(user market.AccountID, id string, amount market.Money, at time.Time) market.Transfer {
	return move(market.TransferUnstake, "unstake:"+id, "unstaked ("+id+"), in cooldown", market.Staked(user), market.Unstaking(user), amount, at)
}

// ReleaseUnstake returns tokens whose cooldown ended to the available balance.
func ReleaseUnstake(user market.AccountID, id string, amount market.Money, at time.Time) market.Transfer {
	return move(market.TransferUnstakeRelease, "unstake-release:"+id, "cooldown of "+id+" ended", market.Unstaking(user), market.Available(user), amount, at)
}

// StakeChange is a change of one staker's stake at a moment.
type StakeChange struct {
	Account market.AccountID
	At      time.Time
	Delta   market.Money
}

// StakeTime integrates each account's stake over [start, end): the sum of
// stake x time held, in micro-tokens x microseconds. Changes before start
// make up the opening stake; changes at or after end are ignored. The result
// needs more than 64 bits (a million tokens for a day is 8.64e22).
func StakeTime(changes []StakeChange, start, end time.Time) map[market.AccountID]*big.Int {
	cs := slices.Clone(changes)
	slices.SortStableFunc(cs, func(a, b StakeChange) int { return a.At.Compare(b.At) })
	stake := map[market.AccountID]market.Money{}
	since := map[market.AccountID]time.Time{}
	out := map[market.AccountID]*big.Int{}
	add := func(a market.AccountID, until time.Time) {
		if stake[a] <= 0 {
			return
		}
		d := until.Sub(since[a]).Microseconds()
		if d <= 0 {
			return
		}
		v := new(big.Int).Mul(big.NewInt(int64(stake[a])), big.NewInt(d))
		if out[a] == nil {
			out[a] = new(big.Int)
		}
		out[a].Add(out[a], v)
	}
	for _, c := range cs {
		if !c.At.Before(end) {
			break
		}
		at := c.At
		if at.Before(start) {
			at = start
		}
		if _, ok := since[c.Account]; ok {
			add(c.Account, at)
		}
		stake[c.Account] += c.Delta
		since[c.Account] = at
	}
	for a := range stake {
		add(a, end)
	}
	return out
}

// Share is one staker's part of a distribution.
type Share struct {
	Account   market.AccountID
	StakeTime *big.Int
	Payout    market.Money
}

// Distribute splits pool pro rata to stake-time: each staker gets
// floor(pool x its stake-time / total stake-time). Integer division rounds
// every payout down, so the payouts sum to at most pool; the remainder
// (less than one micro-token per staker) is returned and stays in the fee
// account for the next period. With no stake-time nothing is paid.
// Shares come back ordered by account.
func Distribute(pool market.Money, stakeTime map[market.AccountID]*big.Int) (shares []Share, total *big.Int, remainder market.Money) {
	total = new(big.Int)
	for a, st := range stakeTime {
		if st != nil && st.Sign() > 0 {
			total.Add(total, st)
			shares = append(shares, Share{Account: a, StakeTime: st})
		}
	}
	slices.SortFunc(shares, func(a, b Share) int { return cmp.Compare(a.Account, b.Account) })
	if pool <= 0 || total.Sign() == 0 {
		return shares, total, pool
	}
	paid := market.Money(0)
	p := big.NewInt(int64(pool))
	for i := range shares {
		v := new(big.Int).Mul(p, shares[i].StakeTime)
		v.Quo(v, total)
		shares[i].Payout = market.Money(v.Int64()) // <= pool, so it fits
		paid += shares[i].Payout
	}
	return shares, total, pool - paid
}

// Dividend pays the shares out of the fee account in one transfer, keyed
// by the period so that a period is paid once. ok is false when nothing is
// paid.
func Dividend(period int64, shares []Share, at time.Time) (t market.Transfer, ok bool) {
	var paid market.Money
	entries := []market.Entry{{Account: market.FeesAccount}}
	for _, s := range shares {
		if s.Payout > 0 {
			entries = append(entries, market.Entry{Account: market.Available(s.Account), Amount: s.Payout})
			paid += s.Payout
		}
	}
	if paid == 0 {
		return market.Transfer{}, false
	}
	entries[0].Amount = -paid
	return transfer(market.TransferDividend, fmt.Sprintf("dividend:%d", period), at, fmt.Sprintf("dividends of period %d", period), entries...), true
}

// Period returns the index of the distribution period of length p that
// contains t, counting from the Unix epoch, and its bounds.
func Period(t time.Time, p time.Duration) (k int64, start, end time.Time) {
	us := t.UnixMicro()
	pu := p.Microseconds()
	k = us / pu
	if us < 0 && us%pu != 0 {
		k--
	}
	return k, PeriodStart(k, p), PeriodStart(k+1, p)
}

// PeriodStart is when period k of length p begins.
func PeriodStart(k int64, p time.Duration) time.Time {
	return time.UnixMicro(k * p.Microseconds()).UTC()
}

// CheckTransfers verifies the structure of the whole transfer log: the
// sequence numbers are 1..n with no gap or repeat, each transfer's entries
// sum to zero, and each charge takes exactly one amount from one renter
// account and splits it into one host's earnings and the platform fee
// (renter charge = host earnings + fee). It returns one list of problems
// per rule, keyed by the rule's name.
func CheckTransfers(ts []market.Transfer) map[string][]string {
	const maxReported = 20
	out := map[string][]string{RuleSeq: nil, RuleSumZero: nil, RuleChargeSplit: nil}
	report := func(rule, format string, args ...any) {
		if len(out[rule]) < maxReported {
			out[rule] = append(out[rule], fmt.Sprintf(format, args...))
		}
	}
	seqs := make([]int64, 0, len(ts))
	for _, t := range ts {
		seqs = append(seqs, t.Seq)
		var sum market.Money
		for _, e := range t.Entries {
			sum += e.Amount
		}
		if sum != 0 {
			report(RuleSumZero, "transfer %d (%s) entries sum to %s", t.Seq, t.Key, sum)
		}
		if t.Kind == market.TransferCharge || t.Kind == market.TransferCharges {
			if err := checkCharge(t); err != "" {
				report(RuleChargeSplit, "charge %d (%s): %s", t.Seq, t.Key, err)
			}
		}
	}
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != int64(i+1) {
			report(RuleSeq, "sequence numbers are not 1..%d: position %d holds %d", len(seqs), i+1, s)
			break
		}
	}
	return out
}

// Rules of CheckTransfers.
const (
	RuleSeq         = "transfer sequence numbers have no gaps"
	RuleSumZero     = "each transfer's entries sum to zero"
	RuleChargeSplit = "renter charge = host earnings + fee for every charge and charges batch"
)

func checkCharge(t market.Transfer) string {
	var paid, earned, fee market.Money
	var payers, hosts, fees int
	for _, e := range t.Entries {
		a := e.Account
		switch {
		case a == market.FeesAccount:
			fees++
			fee += e.Amount
		case a.Owner() != "" && a == market.Earnings(a.Owner()):
			hosts++
			earned += e.Amount
		case a.Owner() != "" && (a == market.Available(a.Owner()) || a == market.Escrow(a.Owner())):
			payers++
			paid -= e.Amount
			if e.Amount > 0 {
				return fmt.Sprintf("renter account %s is credited %s", a, e.Amount)
			}
		default:
			return fmt.Sprintf("account %s has no place in a charge", a)
		}
	}
	switch {
	case t.Kind == market.TransferCharge && (payers != 1 || hosts != 1 || fees != 1):
		return fmt.Sprintf("%d renter, %d host and %d fee entries; want one each", payers, hosts, fees)
	case payers < 1 || hosts < 1 || fees != 1:
		return fmt.Sprintf("%d renter, %d host and %d fee entries; want at least one renter and one host, and one fee", payers, hosts, fees)
	case paid < 0 || earned < 0 || fee < 0:
		return fmt.Sprintf("negative part: renter pays %s, host earns %s, fee %s", paid, earned, fee)
	case paid != earned+fee:
		return fmt.Sprintf("renter pays %s but host earns %s and fee is %s", paid, earned, fee)
	}
	return ""
}

// RefundTransfer pays renter back fromHost + fromPlatform, taken from the
// host's earnings and the platform's fees, keyed by the refund so that a
// refund is paid once.
func RefundTransfer(renter, host market.AccountID, id market.RefundID, fromHost, fromPlatform market.Money, memo string, at time.Time) market.Transfer {
	entries := []market.Entry{{Account: market.Available(renter), Amount: fromHost + fromPlatform}}
	if fromHost > 0 {
		entries = append(entries, market.Entry{Account: market.Earnings(host), Amount: -fromHost})
	}
	if fromPlatform > 0 {
		entries = append(entries, market.Entry{Account: market.FeesAccount, Amount: -fromPlatform})
	}
	return transfer(market.TransferRefund, "refund:"+string(id), at, memo, entries...)
}

// SplitRefund decides where a refund of amount comes from: the host's
// unsettled earnings first, up to hostShare (what the host earned from the
// refunded minutes) and pending (its earnings still in the settlement
// delay, no more than its earnings balance); the platform's fees for the
// rest. It never creates money: ok is false when the fees (feesBalance)
// cannot cover the rest.
func SplitRefund(amount, hostShare, pending, feesBalance market.Money) (fromHost, fromPlatform market.Money, ok bool) {
	fromHost = max(min(amount, hostShare, pending), 0)
	fromPlatform = amount - fromHost
	return fromHost, fromPlatform, fromPlatform <= feesBalance
}
