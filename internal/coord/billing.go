package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// bill charges every started, unsettled instance for the minutes it has
// completed, each in its own transaction, and stops the instances whose
// renter cannot pay the next minute.
func (s *Service) bill(ctx context.Context) error {
	var insts []market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		insts, err = tx.Instances(ctx, InstanceFilter{Billable: true})
		return err
	})
	if err != nil {
		return fmt.Errorf("list billable instances: %w", err)
	}
	var errs []error
	for _, inst := range insts {
		if err := s.billInstance(ctx, inst.ID); err != nil {
			errs = append(errs, fmt.Errorf("bill %s: %w", inst.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) billInstance(ctx context.Context, id market.InstanceID) error {
	var stopped *market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		inst, err := tx.Instance(ctx, id)
		if err != nil {
			return err
		}
		if inst.Settled {
			return nil
		}
		now := s.now()
		before := inst
		if err := s.settle(ctx, tx, &inst, now); err != nil {
			return err
		}
		if inst.Active() && inst.State != market.InstanceStopping {
			avail, err := tx.Balance(ctx, market.Available(inst.Renter), market.DefaultAsset)
			if err != nil {
				return err
			}
			if next := minuteCharge(inst, inst.BilledMins); avail < next {
				s.beginStop(&inst, now, fmt.Sprintf("out of funds: the next minute costs %s and %s is available", next, avail))
				if err := s.settle(ctx, tx, &inst, now); err != nil {
					return err
				}
				if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "instance.stopping", Account: inst.Renter, Machine: inst.Machine, Instance: inst.ID, Message: inst.Reason}); err != nil {
					return err
				}
				stopped = &inst
			}
		}
		if equalBilling(before, inst) {
			return nil
		}
		return tx.UpdateInstance(ctx, inst)
	})
	if err == nil && stopped != nil {
		s.hub.notify(machineTopic(stopped.Machine))
	}
	return err
}

func equalBilling(a, b market.Instance) bool {
	return a.BilledMins == b.BilledMins && a.Settled == b.Settled && a.State == b.State && a.Escrow == b.Escrow && a.Generation == b.Generation
}

// dueMinutes is how many minutes of inst must be charged at now: every
// minute it completed, and once billing has ended (StopAt passed), the last
// partial minute too.
func dueMinutes(inst market.Instance, now time.Time) (due int64, final bool) {
	if inst.StartedAt == nil {
		return 0, inst.StopAt != nil || inst.State.Terminal()
	}
	end := now
	if inst.StopAt != nil && inst.StopAt.Before(end) {
		end = *inst.StopAt
	}
	final = inst.StopAt != nil && !inst.StopAt.After(now)
	ran := end.Sub(*inst.StartedAt)
	if ran <= 0 {
		return 0, final
	}
	due = int64(ran / time.Minute)
	if final && ran%time.Minute != 0 {
		due++
	}
	return due, final
}

// settle charges inst's due minutes inside tx, and once inst is terminal
// and fully charged, releases what is left of its escrow and marks it
// settled. It changes inst; the caller writes it.
func (s *Service) settle(ctx context.Context, tx Tx, inst *market.Instance, now time.Time) error {
	if inst.Settled {
		return nil
	}
	due, final := dueMinutes(*inst, now)
	if inst.BilledMins < due {
		m, err := tx.Machine(ctx, inst.Machine)
		if err != nil {
			return err
		}
		for k := inst.BilledMins; k < due; k++ {
			amt := minuteCharge(*inst, k)
			from := market.Available(inst.Renter)
			avail, err := tx.Balance(ctx, from, market.DefaultAsset)
			if err != nil {
				return err
			}
			if avail < amt {
				if inst.Escrow < amt {
					// Neither balance nor escrow can pay: billing ends at
					// the start of this minute and the host is told.
					stop := inst.StartedAt.Add(time.Duration(k) * time.Minute)
					inst.StopAt, due, final = &stop, k, true
					if inst.Active() && inst.State != market.InstanceStopping {
						s.beginStop(inst, now, "out of funds: escrow and balance exhausted")
					}
					if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "billing.unpaid", Account: m.Owner, Machine: m.ID, Instance: inst.ID,
						Message: fmt.Sprintf("renter could not pay minute %d; billing ended", k)}); err != nil {
						return err
					}
					break
				}
				from = market.Escrow(inst.Renter)
				inst.Escrow -= amt
			}
			if _, err := tx.ApplyTransfer(ctx, ledger.Charge(from, m.Owner, inst.ID, k, amt, s.feeOf(*inst), now)); err != nil {
				return fmt.Errorf("charge minute %d: %w", k, err)
			}
			inst.BilledMins++
			inst.Charged += amt
		}
	}
	if !final || !inst.State.Terminal() || inst.BilledMins < due {
		return nil
	}
	if inst.Escrow > 0 {
		if _, err := tx.ApplyTransfer(ctx, ledger.Release(inst.Renter, inst.ID, inst.Escrow, now)); err != nil {
			return fmt.Errorf("release escrow: %w", err)
		}
		inst.Escrow = 0
	}
	inst.Settled = true
	return nil
}
