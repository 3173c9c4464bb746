package coord

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Statement returns the caller's statement of month ("2026-11", UTC):
// opening and closing balances per asset and account, and every movement
// of the month, with charges of consecutive minutes of one instance folded
// into one line with the minute range.
func (s *Service) Statement(ctx context.Context, caller market.Account, month string) (market.WalletStatement, error) {
	from, err := time.Parse("2006-01", month)
	if err != nil {
		return market.WalletStatement{}, market.Errorf("statement", market.Invalid, "month %q: write it as YYYY-MM, like 2026-11", month)
	}
	st := market.WalletStatement{Account: caller.ID, Month: month, From: from, To: from.AddDate(0, 1, 0),
		Balances: []market.StatementBalance{}, Lines: []market.StatementLine{}}
	var ts []market.Transfer
	var mcs []market.MinuteCharge
	err = s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if ts, err = tx.Transfers(ctx, caller.ID, 0, 0); err != nil {
			return err
		}
		var inMonth []market.Transfer
		for _, t := range ts {
			if !t.At.Before(st.From) && t.At.Before(st.To) {
				inMonth = append(inMonth, t)
			}
		}
		mcs, err = s.minutesOf(ctx, tx, inMonth)
		return err
	})
	if err != nil {
		return st, err
	}
	slices.Reverse(ts) // oldest first
	st.Balances, st.Lines = statementOf(caller.ID, st.From, st.To, ts, mcs)
	return st, nil
}

// statementOf computes the balances and lines of owner's statement of
// [from, to) from its transfers (oldest first) and the minute records of
// the charges batches among them.
func statementOf(owner market.AccountID, from, to time.Time, ts []market.Transfer, mcs []market.MinuteCharge) ([]market.StatementBalance, []market.StatementLine) {
	type key struct {
		asset   market.Asset
		account market.LedgerAccount
	}
	bal := map[key]*market.StatementBalance{}
	get := func(a market.Asset, acct market.LedgerAccount) *market.StatementBalance {
		k := key{a, acct}
		if bal[k] == nil {
			bal[k] = &market.StatementBalance{Asset: a, Account: acct}
		}
		return bal[k]
	}
	var month []market.Transfer
	for _, t := range ts {
		if !t.At.Before(to) {
			continue
		}
		inMonth := !t.At.Before(from)
		if inMonth {
			month = append(month, t)
		}
		for _, e := range t.Entries {
			if e.Account.Owner() != owner {
				continue
			}
			b := get(t.Asset, e.Account)
			switch {
			case !inMonth:
				b.Opening += e.Amount
			case e.Amount > 0:
				b.In += e.Amount
			default:
				b.Out -= e.Amount
			}
		}
	}
	balances := []market.StatementBalance{}
	for _, b := range bal {
		b.Closing = b.Opening + b.In - b.Out
		balances = append(balances, *b)
	}
	slices.SortFunc(balances, func(a, b market.StatementBalance) int {
		return cmp.Or(cmp.Compare(a.Asset, b.Asset), cmp.Compare(a.Account, b.Account))
	})

	// Lines: each transfer as the history shows it, charges folded into
	// runs of consecutive minutes per instance and account.
	lines := []market.StatementLine{}
	open := map[string]int{} // instance and account -> index of its last charge line
	for _, h := range historyOf(owner, month, mcs) {
		asset := h.Asset
		if h.Kind == market.TransferCharge && h.Instance != "" {
			k := fmt.Sprintf("%s|%s|%s", h.Instance, h.Account, asset)
			if i, ok := open[k]; ok && lines[i].ToMinute == h.Minute {
				lines[i].ToMinute++
				lines[i].Amount += h.Amount
				continue
			}
			open[k] = len(lines)
			lines = append(lines, market.StatementLine{Seq: h.Seq, At: h.At, Kind: h.Kind, Asset: asset, Account: h.Account, Amount: h.Amount,
				Instance: h.Instance, FromMinute: h.Minute, ToMinute: h.Minute + 1, Reason: "billed minutes"})
			continue
		}
		lines = append(lines, market.StatementLine{Seq: h.Seq, At: h.At, Kind: h.Kind, Asset: asset, Account: h.Account, Amount: h.Amount,
			Instance: h.Instance, Reason: h.Memo})
	}
	return balances, lines
}
