package coord

import (
	"cmp"
	"context"
	"slices"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Wallet returns the caller's balances.
func (s *Service) Wallet(ctx context.Context, caller market.Account) (market.Wallet, error) {
	w := market.Wallet{Account: caller.ID, Asset: market.DefaultAsset}
	err := s.store.Tx(ctx, func(tx Tx) error {
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
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		ts, err = tx.Transfers(ctx, caller.ID, before, limit)
		return err
	})
	out := []market.HistoryEntry{}
	for _, t := range ts {
		for _, e := range t.Entries {
			if e.Account.Owner() != caller.ID {
				continue
			}
			out = append(out, market.HistoryEntry{Seq: t.Seq, At: t.At, Kind: t.Kind, Account: e.Account, Amount: e.Amount, Instance: t.Instance, Minute: t.Minute, Memo: t.Memo})
		}
	}
	return out, err
}

// Deposit credits tokens to an account; admins only. The idempotency key
// makes a retried deposit take effect once: the same key with the same
// request returns the first transfer, with another request it is refused.
func (s *Service) Deposit(ctx context.Context, caller market.Account, key string, req market.DepositRequest) (market.Transfer, error) {
	const op = "deposit"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return market.Transfer{}, err
	}
	switch {
	case key == "":
		return market.Transfer{}, market.Errorf(op, market.Invalid, "a deposit needs an Idempotency-Key header, so that a retry cannot credit twice")
	case req.Amount <= 0:
		return market.Transfer{}, market.Errorf(op, market.Invalid, "deposit amount must be above zero, got %s", req.Amount)
	case req.Account == "" && req.Email == "":
		return market.Transfer{}, market.Errorf(op, market.Invalid, "say whose account to credit: an account ID or an email")
	}
	var t market.Transfer
	err := s.store.Tx(ctx, func(tx Tx) error {
		var a market.Account
		var err error
		if req.Account != "" {
			a, err = tx.Account(ctx, req.Account)
		} else {
			a, err = tx.AccountByEmail(ctx, req.Email)
		}
		if err != nil {
			return err
		}
		want := ledger.Deposit(a.ID, req.Amount, "deposit:"+key, req.Memo, s.now())
		prev, err := tx.TransferByKey(ctx, want.Key)
		switch {
		case err == nil:
			if !slices.Equal(prev.Entries, want.Entries) {
				return market.Errorf(op, market.Conflict, "idempotency key %q was used for a different deposit; use a new key", key)
			}
			t = prev
			return nil
		case !market.IsKind(err, market.NotFound):
			return err
		}
		if t, err = tx.ApplyTransfer(ctx, want); err != nil {
			return err
		}
		return tx.AppendEvent(ctx, market.Event{At: t.At, Type: "wallet.deposit", Account: a.ID, Message: "deposit of " + req.Amount.String() + " by " + caller.Email})
	})
	return t, err
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

// Earnings reports what the caller earned as a host, per machine.
func (s *Service) Earnings(ctx context.Context, caller market.Account) (market.EarningsReport, error) {
	r := market.EarningsReport{Account: caller.ID, Asset: market.DefaultAsset, Machines: []market.MachineEarnings{}}
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if r.Total, err = tx.Balance(ctx, market.Earnings(caller.ID), market.DefaultAsset); err != nil {
			return err
		}
		ts, err := tx.Transfers(ctx, caller.ID, 0, 0)
		if err != nil {
			return err
		}
		machineOf := map[market.InstanceID]market.MachineID{}
		idx := map[market.MachineID]int{}
		for _, t := range ts {
			if t.Kind != market.TransferCharge {
				continue
			}
			for _, e := range t.Entries {
				if e.Account != market.Earnings(caller.ID) {
					continue
				}
				mid, ok := machineOf[t.Instance]
				if !ok {
					inst, err := tx.Instance(ctx, t.Instance)
					if err != nil {
						return err
					}
					mid = inst.Machine
					machineOf[t.Instance] = mid
				}
				i, ok := idx[mid]
				if !ok {
					i = len(r.Machines)
					idx[mid] = i
					r.Machines = append(r.Machines, market.MachineEarnings{Machine: mid})
				}
				r.Machines[i].Minutes++
				r.Machines[i].Amount += e.Amount
			}
		}
		slices.SortFunc(r.Machines, func(a, b market.MachineEarnings) int { return cmp.Compare(a.Machine, b.Machine) })
		return nil
	})
	return r, err
}
