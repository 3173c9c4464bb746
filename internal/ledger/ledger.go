// Package ledger builds the double-entry transfers of gpumarket and checks
// the ledger's invariants. It is pure: it computes transfers and verdicts
// from values passed in and does no I/O.
//
// It imports only internal/market.
package ledger

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// BasisPoints is a fraction in hundredths of a percent: 1000 = 10%.
type BasisPoints int64

// Deposit credits amount to a user's available balance from the world.
func Deposit(user market.AccountID, amount market.Money, key, memo string, at time.Time) market.Transfer {
	return transfer(market.TransferDeposit, key, at, memo,
		market.Entry{Account: market.WorldAccount, Amount: -amount},
		market.Entry{Account: market.Available(user), Amount: amount})
}

// Hold moves amount from a renter's available balance into escrow for an
// instance.
func Hold(renter market.AccountID, inst market.InstanceID, amount market.Money, at time.Time) market.Transfer {
	t := transfer(market.TransferHold, "hold:"+string(inst), at, "escrow for one hour of "+string(inst),
		market.Entry{Account: market.Available(renter), Amount: -amount},
		market.Entry{Account: market.Escrow(renter), Amount: amount})
	t.Instance = inst
	return t
}

// Release returns what is left of an instance's escrow to the renter.
func Release(renter market.AccountID, inst market.InstanceID, amount market.Money, at time.Time) market.Transfer {
	t := transfer(market.TransferRelease, "release:"+string(inst), at, "escrow released by "+string(inst),
		market.Entry{Account: market.Escrow(renter), Amount: -amount},
		market.Entry{Account: market.Available(renter), Amount: amount})
	t.Instance = inst
	return t
}

// Charge bills one minute of an instance: amount leaves the renter's
// account from (available or escrow) and splits into the host's earnings and
// the platform fee. The key makes a minute chargeable once.
func Charge(from market.LedgerAccount, host market.AccountID, inst market.InstanceID, minute int64, amount market.Money, fee BasisPoints, at time.Time) market.Transfer {
	f := Fee(amount, fee)
	t := transfer(market.TransferCharge, ChargeKey(inst, minute), at, fmt.Sprintf("minute %d of %s", minute, inst),
		market.Entry{Account: from, Amount: -amount},
		market.Entry{Account: market.Earnings(host), Amount: amount - f},
		market.Entry{Account: market.FeesAccount, Amount: f})
	t.Instance = inst
	t.Minute = minute
	return t
}

// MinuteRecord is the record of minute k of an instance, paid from the
// account from, split as Charge would split it. Charges pays many of them
// in one transfer.
func MinuteRecord(from market.LedgerAccount, host market.AccountID, inst market.InstanceID, minute int64, amount market.Money, fee BasisPoints, at time.Time) market.MinuteCharge {
	return market.MinuteCharge{Instance: inst, Minute: minute, From: from, Host: host, Amount: amount, Fee: Fee(amount, fee), At: at}
}

// Charges is the batch transfer that pays every minute of cs: each paying
// account gives the sum of its minutes, each host earns the sum of
// Amount - Fee of its minutes and the platform the sum of the fees. Its
// entries are ordered by account. key must be unique; the minutes' own
// uniqueness is kept by their (instance, minute) records.
func Charges(cs []market.MinuteCharge, key string, at time.Time) market.Transfer {
	net := ChargesNet(cs)
	entries := make([]market.Entry, 0, len(net))
	for _, a := range slices.Sorted(maps.Keys(net)) {
		entries = append(entries, market.Entry{Account: a, Amount: net[a]})
	}
	return transfer(market.TransferCharges, key, at, fmt.Sprintf("%d minute charges", len(cs)), entries...)
}

// ChargesNet is the net change per account of paying cs.
func ChargesNet(cs []market.MinuteCharge) map[market.LedgerAccount]market.Money {
	net := map[market.LedgerAccount]market.Money{}
	for _, c := range cs {
		net[c.From] -= c.Amount
		net[market.Earnings(c.Host)] += c.Amount - c.Fee
		net[market.FeesAccount] += c.Fee
	}
	return net
}

// ChargeKey is the idempotency key of the charge for one minute.
func ChargeKey(inst market.InstanceID, minute int64) string {
	return fmt.Sprintf("charge:%s:%d", inst, minute)
}

// Fee is the platform's share of amount, rounded down.
func Fee(amount market.Money, fee BasisPoints) market.Money {
	return amount.MulDiv(int64(fee), 10_000)
}

// MinuteCharge is what minute k (counting from 0) of a rental priced at
// perHour costs. Minutes are priced so that any 60 consecutive minutes
// starting at a multiple of 60 add up to exactly perHour: no micro-token is
// lost to rounding.
func MinuteCharge(perHour market.Money, k int64) market.Money {
	return perHour.MulDiv(k+1, 60) - perHour.MulDiv(k, 60)
}

// DayMinuteCharge is what minute k (counting from 0) of a rental priced at
// perDay costs (spot instances). Like MinuteCharge, any 1440 consecutive
// minutes starting at a multiple of 1440 add up to exactly perDay.
func DayMinuteCharge(perDay market.Money, k int64) market.Money {
	return perDay.MulDiv(k+1, 1440) - perDay.MulDiv(k, 1440)
}

// MinutesCost is the total of minutes [0, n).
func MinutesCost(perHour market.Money, n int64) market.Money {
	return perHour.MulDiv(n, 60)
}

func transfer(kind market.TransferKind, key string, at time.Time, memo string, entries ...market.Entry) market.Transfer {
	return market.Transfer{
		ID:      market.TransferID(market.NewID(market.TransferPrefix)),
		Key:     key,
		Kind:    kind,
		Asset:   market.DefaultAsset,
		Entries: entries,
		Memo:    memo,
		At:      at,
	}
}

// Validate checks a transfer before it is applied: a key, at least two
// entries, no zero or duplicate account, entries summing to zero.
func Validate(t market.Transfer) error {
	const op = "validate transfer"
	if t.Key == "" {
		return market.Errorf(op, market.Invalid, "transfer has no idempotency key")
	}
	if len(t.Entries) < 2 {
		return market.Errorf(op, market.Invalid, "transfer %s has %d entries; it needs at least 2", t.Key, len(t.Entries))
	}
	var sum market.Money
	seen := map[market.LedgerAccount]bool{}
	for _, e := range t.Entries {
		if e.Account == "" {
			return market.Errorf(op, market.Invalid, "transfer %s has an entry without an account", t.Key)
		}
		if seen[e.Account] {
			return market.Errorf(op, market.Invalid, "transfer %s names account %s twice", t.Key, e.Account)
		}
		seen[e.Account] = true
		sum += e.Amount
	}
	if sum != 0 {
		return market.Errorf(op, market.Invalid, "entries of transfer %s sum to %s, not zero", t.Key, sum)
	}
	return nil
}

// Check verifies the balance invariants of one asset: all balances sum to
// zero and no account that may not go negative is negative. It lists every
// violation it finds.
func Check(balances map[market.LedgerAccount]market.Money) error {
	var sum market.Money
	var problems []string
	for _, a := range slices.Sorted(maps.Keys(balances)) {
		b := balances[a]
		sum += b
		if b < 0 && !a.MayGoNegative() {
			problems = append(problems, fmt.Sprintf("account %s is negative: %s", a, b))
		}
	}
	if sum != 0 {
		problems = append(problems, fmt.Sprintf("balances sum to %s, not zero", sum))
	}
	if len(problems) > 0 {
		return market.Errorf("ledger check", market.Internal, "%s", strings.Join(problems, "; "))
	}
	return nil
}

// CheckMinutes verifies that the charged minutes of an instance are exactly
// 0..n-1, each once, and that n equals the minutes the instance records.
func CheckMinutes(inst market.InstanceID, charged []int64, billed int64) error {
	s := slices.Clone(charged)
	slices.Sort(s)
	for i, m := range s {
		if m != int64(i) {
			return market.Errorf("ledger check", market.Internal, "instance %s: charged minutes %v are not 0..%d each once", inst, s, len(s)-1)
		}
	}
	if int64(len(s)) != billed {
		return market.Errorf("ledger check", market.Internal, "instance %s: %d minutes charged but %d recorded as billed", inst, len(s), billed)
	}
	return nil
}

// RuleMinuteCharges is the rule CheckMinuteCharges verifies.
const RuleMinuteCharges = "each charged minute is recorded once and its transfer pays exactly its minutes"

// CheckMinuteCharges verifies that the minute records and the charge
// transfers agree: every charge or charges transfer moves exactly the net
// of the minutes that name it (a charge pays its own one minute), each
// minute names such a transfer, and no minute has a negative part or a fee
// above its amount. It returns the problems found, at most 20.
func CheckMinuteCharges(ts []market.Transfer, cs []market.MinuteCharge) []string {
	const maxReported = 20
	var out []string
	report := func(format string, args ...any) {
		if len(out) < maxReported {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	bySeq := map[int64][]market.MinuteCharge{}
	for _, c := range cs {
		if c.Amount < 0 || c.Fee < 0 || c.Fee > c.Amount {
			report("minute %d of %s: amount %s, fee %s", c.Minute, c.Instance, c.Amount, c.Fee)
		}
		bySeq[c.Transfer] = append(bySeq[c.Transfer], c)
	}
	for _, t := range ts {
		if t.Kind != market.TransferCharge && t.Kind != market.TransferCharges {
			continue
		}
		mine := bySeq[t.Seq]
		delete(bySeq, t.Seq)
		if t.Kind == market.TransferCharge && (len(mine) != 1 || mine[0].Instance != t.Instance || mine[0].Minute != t.Minute) {
			report("charge %d (%s) has %d minute records, want its own one", t.Seq, t.Key, len(mine))
			continue
		}
		want := ChargesNet(mine)
		got := map[market.LedgerAccount]market.Money{}
		for _, e := range t.Entries {
			got[e.Account] += e.Amount
		}
		maps.DeleteFunc(want, func(_ market.LedgerAccount, v market.Money) bool { return v == 0 })
		maps.DeleteFunc(got, func(_ market.LedgerAccount, v market.Money) bool { return v == 0 })
		if !maps.Equal(got, want) {
			report("transfer %d (%s) moves %v but its %d minutes add up to %v", t.Seq, t.Key, got, len(mine), want)
		}
	}
	for _, seq := range slices.Sorted(maps.Keys(bySeq)) {
		c := bySeq[seq][0]
		report("%d minute records (minute %d of %s, ...) name transfer %d, which is not a charge", len(bySeq[seq]), c.Minute, c.Instance, seq)
	}
	return out
}
