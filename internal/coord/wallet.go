package coord

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Wallet returns the caller's balances.
func (s *Service) Wallet(ctx context.Context, caller market.Account) (market.Wallet, error) {
	w := market.Wallet{Account: caller.ID, Asset: market.DefaultAsset}
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if w.Assets, err = assetBalances(ctx, tx, caller.ID); err != nil {
			return err
		}
		for _, b := range []struct {
			acct market.LedgerAccount
			dst  *market.Money
		}{
			{market.Available(caller.ID), &w.Available},
			{market.Escrow(caller.ID), &w.Escrow},
			{market.Earnings(caller.ID), &w.Earnings},
		} {
			v, err := tx.Balance(ctx, b.acct, market.DefaultAsset)
			if err != nil {
				return err
			}
			*b.dst = v
		}
		return nil
	})
	return w, err
}

// History lists the movements of the caller's accounts, newest first.
func (s *Service) History(ctx context.Context, caller market.Account, before int64, limit int) ([]market.HistoryEntry, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	var ts []market.Transfer
	var mcs []market.MinuteCharge
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if ts, err = tx.Transfers(ctx, caller.ID, before, limit); err != nil {
			return err
		}
		mcs, err = s.minutesOf(ctx, tx, ts)
		return err
	})
	return historyOf(caller.ID, ts, mcs), err
}

// minutesOf returns the minute records of the charges batches among ts.
func (s *Service) minutesOf(ctx context.Context, tx Tx, ts []market.Transfer) ([]market.MinuteCharge, error) {
	var seqs []int64
	for _, t := range ts {
		if t.Kind == market.TransferCharges || t.Kind == market.TransferCharge {
			seqs = append(seqs, t.Seq)
		}
	}
	if len(seqs) == 0 {
		return nil, nil
	}
	return tx.MinuteCharges(ctx, ChargeFilter{Transfers: seqs})
}

// historyOf is what owner sees of ts: its entries, with each charges
// batch shown as the charge of each minute it paid (so that a user's
// history lists every billed minute with its instance, whichever way the
// minute was paid). mcs holds the minute records of the batches.
func historyOf(owner market.AccountID, ts []market.Transfer, mcs []market.MinuteCharge) []market.HistoryEntry {
	bySeq := map[int64][]market.MinuteCharge{}
	for _, c := range mcs {
		bySeq[c.Transfer] = append(bySeq[c.Transfer], c)
	}
	out := []market.HistoryEntry{}
	for _, t := range ts {
		if t.Kind == market.TransferCharges {
			for _, c := range bySeq[t.Seq] {
				memo := fmt.Sprintf("minute %d of %s", c.Minute, c.Instance)
				if c.From.Owner() == owner {
					out = append(out, market.HistoryEntry{Seq: t.Seq, At: t.At, Kind: market.TransferCharge, Account: c.From, Asset: t.Asset, Amount: -c.Amount, Instance: c.Instance, Minute: c.Minute, Memo: memo})
				}
				if c.Host == owner {
					out = append(out, market.HistoryEntry{Seq: t.Seq, At: t.At, Kind: market.TransferCharge, Account: market.Earnings(owner), Asset: t.Asset, Amount: c.Amount - c.Fee, Instance: c.Instance, Minute: c.Minute, Memo: memo})
				}
			}
			continue
		}
		for _, e := range t.Entries {
			if e.Account.Owner() != owner {
				continue
			}
			out = append(out, market.HistoryEntry{Seq: t.Seq, At: t.At, Kind: t.Kind, Account: e.Account, Asset: t.Asset, Amount: e.Amount, Instance: t.Instance, Minute: t.Minute, Memo: t.Memo})
		}
	}
	return out
}

// Deposit credits tokens to an account; admins only. The idempotency key
// makes a retried deposit take effect once: the same key with the same
// request returns the first transfer, with another request it is refused.
func (s *Service) Deposit(ctx context.Context, caller market.Account, key string, req market.DepositRequest) (market.Transfer, error) {
	const op = "deposit"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return market.Transfer{}, err
	}
	return idempotent(ctx, s, caller, op, key, req, func(tx Tx) (market.Transfer, error) {
		switch {
		case req.Amount <= 0:
			return market.Transfer{}, market.Errorf(op, market.Invalid, "deposit amount must be above zero, got %s", req.Amount)
		case req.Account == "" && req.Email == "":
			return market.Transfer{}, market.Errorf(op, market.Invalid, "say whose account to credit: an account ID or an email")
		}
		var a market.Account
		var err error
		if req.Account != "" {
			a, err = tx.Account(ctx, req.Account)
		} else {
			a, err = tx.AccountByEmail(ctx, req.Email)
		}
		if err != nil {
			return market.Transfer{}, err
		}
		// The admin credit is the built-in deposit source (see
		// deposits.go): deposits made before idempotency records existed,
		// or by another admin with the same key, are found by their key.
		t, err := s.creditDeposit(ctx, tx, ExternalDeposit{Source: "admin", Ref: key, Account: a.ID, Asset: req.Asset, Amount: req.Amount,
			Memo: req.Memo})
		if market.IsKind(err, market.Conflict) {
			return t, market.Errorf(op, market.Conflict, "idempotency key %q was used for a different deposit; use a new key", key)
		}
		return t, err
	})
}

// Faucet credits the caller the configured demo amount. It exists only
// where the operator enabled it (dev mode).
func (s *Service) Faucet(ctx context.Context, caller market.Account) (market.Wallet, error) {
	if s.cfg.Faucet <= 0 {
		return market.Wallet{}, market.Errorf("faucet", market.Forbidden, "the faucet exists only in `gpumarket dev`; ask an admin for a deposit")
	}
	err := s.store.Tx(ctx, func(tx Tx) error {
		_, err := tx.ApplyTransfer(ctx, ledger.Deposit(caller.ID, s.cfg.Faucet, "faucet:"+market.NewID(""), "dev faucet", s.now()))
		return err
	})
	if err != nil {
		return market.Wallet{}, err
	}
	return s.Wallet(ctx, caller)
}

// Earnings reports what the caller earned as a host: per asset, the
// earnings balance split into pending (still in the settlement delay) and
// withdrawable, and what is queued for withdrawal; and the billed minutes
// per machine and per UTC day.
func (s *Service) Earnings(ctx context.Context, caller market.Account) (market.EarningsReport, error) {
	r := market.EarningsReport{Account: caller.ID, Asset: market.DefaultAsset, SettlementDelay: s.cfg.SettlementDelay.String(),
		Assets: []market.AssetEarnings{}, Machines: []market.MachineEarnings{}, Days: []market.DayEarnings{}}
	err := s.store.Tx(ctx, func(tx Tx) error {
		now := s.now()
		assets, err := assetNames(ctx, tx)
		if err != nil {
			return err
		}
		for _, a := range assets {
			e := market.AssetEarnings{Asset: a}
			if e.Total, e.Pending, e.Withdrawable, err = s.withdrawable(ctx, tx, caller.ID, a, now); err != nil {
				return err
			}
			if e.Withdrawing, err = tx.Balance(ctx, market.Withdrawing(caller.ID), a); err != nil {
				return err
			}
			if a == market.DefaultAsset {
				r.Total, r.Pending, r.Withdrawable, r.Withdrawing = e.Total, e.Pending, e.Withdrawable, e.Withdrawing
			} else if e == (market.AssetEarnings{Asset: a}) {
				continue // a project asset this host never earned
			}
			r.Assets = append(r.Assets, e)
		}
		ts, err := tx.Transfers(ctx, caller.ID, 0, 0)
		if err != nil {
			return err
		}
		cutoff := now.Add(-s.cfg.SettlementDelay)
		mcs, err := s.minutesOf(ctx, tx, ts)
		if err != nil {
			return err
		}
		type rented struct {
			machine market.MachineID
			gpus    int64
		}
		instOf := map[market.InstanceID]rented{}
		idx := map[market.MachineID]int{}
		days := map[string]int{}
		for _, c := range mcs {
			if c.Host != caller.ID {
				continue
			}
			earned := c.Amount - c.Fee
			in, ok := instOf[c.Instance]
			if !ok {
				inst, err := tx.Instance(ctx, c.Instance)
				if err != nil {
					return err
				}
				in = rented{inst.Machine, int64(len(inst.GPUs))}
				instOf[c.Instance] = in
			}
			mid := in.machine
			i, ok := idx[mid]
			if !ok {
				i = len(r.Machines)
				idx[mid] = i
				r.Machines = append(r.Machines, market.MachineEarnings{Machine: mid})
			}
			day := c.At.UTC().Format(time.DateOnly)
			d, ok := days[day]
			if !ok {
				d = len(r.Days)
				days[day] = d
				r.Days = append(r.Days, market.DayEarnings{Day: day})
			}
			r.Machines[i].Minutes++
			r.Machines[i].GPUMinutes += in.gpus
			r.Machines[i].Amount += earned
			r.Days[d].Minutes++
			r.Days[d].GPUMinutes += in.gpus
			r.Days[d].Amount += earned
			if !c.At.Before(cutoff) {
				r.Machines[i].Pending += earned
				r.Days[d].Pending += earned
			}
		}
		slices.SortFunc(r.Machines, func(a, b market.MachineEarnings) int { return cmp.Compare(a.Machine, b.Machine) })
		slices.SortFunc(r.Days, func(a, b market.DayEarnings) int { return cmp.Compare(b.Day, a.Day) })
		return nil
	})
	return r, err
}
