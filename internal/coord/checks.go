package coord

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Names of the ledger invariants, in the order the check reports them.
const (
	checkBalances   = "all balances sum to zero per asset and no user account is negative"
	checkMinutes    = "every started instance was charged minutes 0..n-1 exactly once"
	checkCharged    = "each instance's recorded charge equals its charges in the ledger"
	checkEscrow     = "each renter's escrow equals what their unsettled instances hold"
	checkWithdrawal = "each withdrawal hold equals the host's pending withdrawals"
	checkUnstaking  = "each unstaking account equals its unreleased stake removals"
	checkDividends  = "each dividend statement adds up and matches its transfer"
	checkRefund     = "each refund pays back exactly its charged minutes, each minute once"
)

// maxDetails is how many violations of one invariant a report lists.
const maxDetails = 20

// CheckLedger verifies the ledger's invariants (see LedgerCheck) and
// returns an error naming every broken one.
func (s *Service) CheckLedger(ctx context.Context) error {
	r, err := s.checkLedger(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range r.Checks {
		if !c.OK {
			errs = append(errs, fmt.Errorf("%s: %s", c.Name, strings.Join(c.Details, "; ")))
		}
	}
	if len(errs) > 0 {
		return market.Errorf("check ledger", market.Internal, "%w", errors.Join(errs...))
	}
	return nil
}

// LedgerCheck verifies every invariant of the ledger and reports each with
// its result; admins only. A broken invariant is a finding, not an error:
// the error is for failing to check.
func (s *Service) LedgerCheck(ctx context.Context, caller market.Account) (market.LedgerReport, error) {
	if err := require(caller, "check ledger", market.RoleAdmin); err != nil {
		return market.LedgerReport{}, err
	}
	return s.checkLedger(ctx)
}

func (s *Service) checkLedger(ctx context.Context) (market.LedgerReport, error) {
	r := market.LedgerReport{At: s.now()}
	found := map[string][]string{}
	order := []string{checkBalances, ledger.RuleSumZero, ledger.RuleSeq, ledger.RuleChargeSplit, ledger.RuleMinuteCharges, checkMinutes, checkCharged, checkEscrow, checkWithdrawal, checkUnstaking, checkDividends, checkRefund}
	add := func(name, format string, args ...any) {
		if len(found[name]) < maxDetails {
			found[name] = append(found[name], fmt.Sprintf(format, args...))
		}
	}
	err := s.store.Tx(ctx, func(tx Tx) error {
		// Each asset balances on its own.
		assets, err := assetNames(ctx, tx)
		if err != nil {
			return err
		}
		bals := map[market.Asset]map[market.LedgerAccount]market.Money{}
		for _, a := range assets {
			b, err := tx.Balances(ctx, a)
			if err != nil {
				return err
			}
			if err := ledger.Check(b); err != nil {
				add(checkBalances, "%s: %s", a, market.Message(err))
			}
			bals[a] = b
		}
		bal := bals[market.DefaultAsset]

		ts, err := tx.Transfers(ctx, "", 0, 0)
		if err != nil {
			return err
		}
		r.Transfers = int64(len(ts))
		for rule, probs := range ledger.CheckTransfers(ts) {
			for _, p := range probs {
				add(rule, "%s", p)
			}
		}
		mcs, err := tx.MinuteCharges(ctx, ChargeFilter{})
		if err != nil {
			return err
		}
		for _, p := range ledger.CheckMinuteCharges(ts, mcs) {
			add(ledger.RuleMinuteCharges, "%s", p)
		}
		charged := map[market.InstanceID]market.Money{}
		minutes := map[market.InstanceID][]int64{}
		for _, c := range mcs {
			charged[c.Instance] += c.Amount
			minutes[c.Instance] = append(minutes[c.Instance], c.Minute)
		}

		insts, err := tx.Instances(ctx, InstanceFilter{})
		if err != nil {
			return err
		}
		escrow := map[market.AccountID]market.Money{}
		for _, inst := range insts {
			if err := ledger.CheckMinutes(inst.ID, minutes[inst.ID], inst.BilledMins); err != nil {
				add(checkMinutes, "%s", market.Message(err))
			}
			if charged[inst.ID] != inst.Charged {
				add(checkCharged, "instance %s records %s charged but its charges total %s", inst.ID, inst.Charged, charged[inst.ID])
			}
			escrow[inst.Renter] += inst.Escrow
			if inst.Settled && inst.Escrow != 0 {
				add(checkEscrow, "instance %s is settled but still holds %s in escrow", inst.ID, inst.Escrow)
			}
		}
		ws, err := tx.Withdrawals(ctx, WithdrawalFilter{State: market.WithdrawalPending})
		if err != nil {
			return err
		}
		// Withdrawals hold their own asset: check each asset's holds.
		held := map[market.Asset]map[market.AccountID]market.Money{}
		for _, w := range ws {
			a := cmp.Or(w.Asset, market.DefaultAsset)
			if held[a] == nil {
				held[a] = map[market.AccountID]market.Money{}
			}
			held[a][w.Account] += w.Amount
		}
		for _, a := range assets {
			for _, acct := range slices.Sorted(maps.Keys(bals[a])) {
				if owner := acct.Owner(); owner != "" && acct == market.Withdrawing(owner) && bals[a][acct] != held[a][owner] {
					add(checkWithdrawal, "withdrawal hold of %s is %s %s but its pending withdrawals total %s", owner, bals[a][acct], a, held[a][owner])
				}
			}
		}
		for _, a := range slices.Sorted(maps.Keys(held)) {
			for _, owner := range slices.Sorted(maps.Keys(held[a])) {
				if held[a][owner] != bals[a][market.Withdrawing(owner)] {
					add(checkWithdrawal, "pending withdrawals of %s total %s %s but the hold has %s", owner, held[a][owner], a, bals[a][market.Withdrawing(owner)])
				}
			}
		}
		us, err := tx.Unstakes(ctx, UnstakeFilter{Unreleased: true})
		if err != nil {
			return err
		}
		cooling := map[market.AccountID]market.Money{}
		for _, u := range us {
			cooling[u.Account] += u.Amount
		}
		for _, acct := range slices.Sorted(maps.Keys(bal)) {
			b, owner := bal[acct], acct.Owner()
			switch {
			case owner == "":
			case acct == market.Escrow(owner) && b != escrow[owner]:
				add(checkEscrow, "escrow of %s is %s but its instances hold %s", owner, b, escrow[owner])
			case acct == market.Unstaking(owner) && b != cooling[owner]:
				add(checkUnstaking, "unstaking account of %s is %s but its unreleased removals total %s", owner, b, cooling[owner])
			}
		}
		for _, owner := range slices.Sorted(maps.Keys(escrow)) {
			if escrow[owner] != bal[market.Escrow(owner)] {
				add(checkEscrow, "instances of %s hold %s in escrow but the account has %s", owner, escrow[owner], bal[market.Escrow(owner)])
			}
		}
		for _, owner := range slices.Sorted(maps.Keys(cooling)) {
			if cooling[owner] != bal[market.Unstaking(owner)] {
				add(checkUnstaking, "unreleased removals of %s total %s but the account has %s", owner, cooling[owner], bal[market.Unstaking(owner)])
			}
		}
		if err := checkRefunds(ctx, tx, ts, mcs, add); err != nil {
			return err
		}
		return s.checkStatements(ctx, tx, ts, bal, add)
	})
	if err != nil {
		return r, err
	}
	r.OK = true
	for _, name := range order {
		c := market.LedgerCheck{Name: name, OK: len(found[name]) == 0, Details: found[name]}
		r.OK = r.OK && c.OK
		r.Checks = append(r.Checks, c)
	}
	return r, nil
}

// checkStatements verifies that each dividend statement adds up (pool =
// fees in + carried in = paid + carried out, payouts sum to paid, each
// period carries in what the one before carried out), that its transfer
// paid exactly its shares, and that the fee account still holds the last
// carry.
func (s *Service) checkStatements(ctx context.Context, tx Tx, ts []market.Transfer, bal map[market.LedgerAccount]market.Money, add func(name, format string, args ...any)) error {
	sts, err := tx.Statements(ctx, 0)
	if err != nil {
		return err
	}
	bySeq := map[int64]market.Transfer{}
	for _, t := range ts {
		if t.Kind == market.TransferDividend {
			bySeq[t.Seq] = t
		}
	}
	slices.Reverse(sts) // oldest first
	for i, st := range sts {
		var paid market.Money
		want := map[market.LedgerAccount]market.Money{}
		for _, sh := range st.Shares {
			paid += sh.Payout
			if sh.Payout > 0 {
				want[market.Available(sh.Account)] = sh.Payout
			}
		}
		if st.Pool != st.FeesIn+st.CarriedIn || st.Pool != st.Paid+st.CarriedOut || paid != st.Paid || st.CarriedOut < 0 {
			add(checkDividends, "period %d: fees in %s + carried in %s, pool %s, payouts %s, paid %s, carried out %s do not add up",
				st.Period, st.FeesIn, st.CarriedIn, st.Pool, paid, st.Paid, st.CarriedOut)
		}
		if i > 0 && (st.Period != sts[i-1].Period+1 || st.CarriedIn != sts[i-1].CarriedOut) {
			add(checkDividends, "period %d follows period %d and carries in %s, not the %s carried out", st.Period, sts[i-1].Period, st.CarriedIn, sts[i-1].CarriedOut)
		}
		if st.Paid == 0 {
			continue
		}
		t, ok := bySeq[st.TransferSeq]
		if !ok {
			add(checkDividends, "period %d paid %s but its transfer %d is not a dividend", st.Period, st.Paid, st.TransferSeq)
			continue
		}
		want[market.FeesAccount] = -st.Paid
		got := map[market.LedgerAccount]market.Money{}
		for _, e := range t.Entries {
			got[e.Account] += e.Amount
		}
		if !maps.Equal(got, want) {
			add(checkDividends, "period %d: transfer %d pays %v, the statement says %v", st.Period, t.Seq, got, want)
		}
	}
	if n := len(sts); n > 0 && bal[market.FeesAccount] < sts[n-1].CarriedOut {
		add(checkDividends, "the fee account holds %s, less than the %s carried out of period %d", bal[market.FeesAccount], sts[n-1].CarriedOut, sts[n-1].Period)
	}
	return nil
}
