package coord

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// Bonds. A host may bond tokens per GPU on a machine: they move from its
// available balance into the machine's bond account, rank the machine
// higher, and are slashed by verify's schedule to the renters affected
// when a check fails or the machine goes down under their rentals. Every
// movement is a ledger transfer, so the ledger's invariants cover them.

// maxBondPerGPU bounds what one GPU may carry, against typos.
var maxBondPerGPU = market.Tokens(1_000_000)

// SetBond sets a machine's bond per GPU. Raising it takes the difference
// from the host's available balance; lowering it returns the difference,
// but not while instances run on the machine (a host must not escape a
// slash it is about to earn).
func (s *Service) SetBond(ctx context.Context, caller market.Account, id market.MachineID, req market.BondRequest) (market.Bond, error) {
	const op = "bond machine"
	if req.PerGPU < 0 || req.PerGPU > maxBondPerGPU {
		return market.Bond{}, market.Errorf(op, market.Invalid, "bond per GPU %s must be between 0 and %s", req.PerGPU, maxBondPerGPU)
	}
	var b market.Bond
	err := s.store.Tx(ctx, func(tx Tx) error {
		m, err := ownMachine(ctx, tx, caller, id, op)
		if err != nil {
			return err
		}
		if len(m.GPUs) == 0 {
			return market.Errorf(op, market.Invalid, "machine %s reported no GPUs; there is nothing to bond", id)
		}
		acct := market.MachineBond(m.Owner, m.ID)
		cur, err := tx.Balance(ctx, acct, market.DefaultAsset)
		if err != nil {
			return err
		}
		want := req.PerGPU * market.Money(len(m.GPUs))
		now := s.now()
		var t market.Transfer
		switch {
		case want > cur:
			t = bondTransfer(market.TransferBond, market.Available(m.Owner), acct, want-cur, fmt.Sprintf("bond of %s raised to %s per GPU", id, req.PerGPU))
		case want < cur:
			active, err := tx.Instances(ctx, InstanceFilter{Machine: id, ActiveOnly: true})
			if err != nil {
				return err
			}
			if len(active) > 0 {
				return market.Errorf(op, market.Conflict, "machine %s has %d instances running; lower its bond when it is idle", id, len(active))
			}
			t = bondTransfer(market.TransferUnbond, acct, market.Available(m.Owner), cur-want, fmt.Sprintf("bond of %s lowered to %s per GPU", id, req.PerGPU))
		}
		if t.Kind != "" {
			t.At = now
			if _, err := tx.ApplyTransfer(ctx, t); err != nil {
				if market.IsKind(err, market.InsufficientFunds) {
					return market.Errorf(op, market.InsufficientFunds, "bonding %s per GPU on %d GPUs needs %s more than the bond holds; deposit first (gpumarket wallet)", req.PerGPU, len(m.GPUs), want-cur)
				}
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.bond", Account: m.Owner, Machine: id, Message: t.Memo}); err != nil {
				return err
			}
		}
		b, err = bondOf(ctx, tx, m)
		return err
	})
	if err != nil {
		return market.Bond{}, err
	}
	s.refreshMachineFacts(ctx, id)
	return b, nil
}

func bondTransfer(kind market.TransferKind, from, to market.LedgerAccount, amount market.Money, memo string) market.Transfer {
	return market.Transfer{
		ID: market.TransferID(market.NewID(market.TransferPrefix)), Key: string(kind) + ":" + market.NewID(""),
		Kind: kind, Asset: market.DefaultAsset, Memo: memo,
		Entries: []market.Entry{{Account: from, Amount: -amount}, {Account: to, Amount: amount}},
	}
}

// bondOf reads a machine's bond: its account's balance and what was
// slashed from it.
func bondOf(ctx context.Context, tx Tx, m market.Machine) (market.Bond, error) {
	acct := market.MachineBond(m.Owner, m.ID)
	total, err := tx.Balance(ctx, acct, market.DefaultAsset)
	if err != nil {
		return market.Bond{}, err
	}
	slashed, err := tx.Flow(ctx, FlowFilter{Account: acct, Kind: market.TransferSlash})
	if err != nil {
		return market.Bond{}, err
	}
	return market.Bond{Machine: m.ID, Total: total, Slashed: -slashed, PerGPU: bondPerGPU(total, m)}, nil
}

// bondPerGPU is the share of a bond of total behind each of m's GPUs.
func bondPerGPU(total market.Money, m market.Machine) market.Money {
	if n := len(m.GPUs); n > 0 {
		return total / market.Money(n)
	}
	return 0
}

// slash pays bp basis points of a machine's bond to the renters of insts,
// pro rata to their GPUs (verify.SlashShares), with an event for the host
// and each renter. With no instance, or no bond, nothing moves.
func (s *Service) slash(ctx context.Context, tx Tx, m market.Machine, insts []market.Instance, bp int64, why string) error {
	if len(insts) == 0 {
		return nil
	}
	acct := market.MachineBond(m.Owner, m.ID)
	bond, err := tx.Balance(ctx, acct, market.DefaultAsset)
	if err != nil || bond <= 0 {
		return err
	}
	gpus := map[market.AccountID]int{}
	for _, i := range insts {
		gpus[i.Renter] += len(i.GPUs)
	}
	amount := verify.SlashAmount(bond, bp)
	shares := verify.SlashShares(amount, gpus)
	if amount <= 0 || len(shares) == 0 {
		return nil
	}
	now := s.now()
	t := market.Transfer{
		ID: market.TransferID(market.NewID(market.TransferPrefix)), Key: "slash:" + market.NewID(""),
		Kind: market.TransferSlash, Asset: market.DefaultAsset, At: now,
		Memo:    fmt.Sprintf("%s of the bond of %s: %s", amount, m.ID, why),
		Entries: []market.Entry{{Account: acct, Amount: -amount}},
	}
	renters := slices.Sorted(func(yield func(market.AccountID) bool) {
		for r := range shares {
			if !yield(r) {
				return
			}
		}
	})
	var paid []string
	for _, r := range renters {
		t.Entries = append(t.Entries, market.Entry{Account: market.Available(r), Amount: shares[r]})
		paid = append(paid, fmt.Sprintf("%s to %s", shares[r], r))
	}
	if _, err := tx.ApplyTransfer(ctx, t); err != nil {
		return fmt.Errorf("slash the bond of %s: %w", m.ID, err)
	}
	if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.slashed", Account: m.Owner, Machine: m.ID,
		Message: fmt.Sprintf("%s (%d bp) of the bond slashed (%s): %s", amount, bp, why, strings.Join(paid, ", "))}); err != nil {
		return err
	}
	for _, r := range renters {
		if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "bond.paid", Account: r, Machine: m.ID,
			Message: fmt.Sprintf("%s paid to you from the bond of machine %s (%s)", shares[r], m.ID, why)}); err != nil {
			return err
		}
	}
	return nil
}

// slashForCheck slashes a machine whose check failed, to the renters of
// its running instances.
func (s *Service) slashForCheck(ctx context.Context, tx Tx, m market.Machine, c market.Check) error {
	insts, err := tx.Instances(ctx, InstanceFilter{Machine: m.ID, ActiveOnly: true})
	if err != nil {
		return err
	}
	return s.slash(ctx, tx, m, insts, verify.SlashFailedCheckBP, "check "+string(c.ID)+" failed")
}

// slashForDowntime slashes a machine that went offline, to the renters of
// the instances that failed with it.
func (s *Service) slashForDowntime(ctx context.Context, tx Tx, m market.Machine, failed []market.Instance) error {
	return s.slash(ctx, tx, m, failed, verify.SlashDowntimeBP, "the machine went offline during the rental")
}
