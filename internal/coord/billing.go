package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// billBatch is how many instances one billing transaction covers. The
// tick charges a page of instances in one transaction and one charges
// transfer, whose entries are the net per account and whose minutes are
// recorded one row each (Tx.ApplyCharges): at 100,000 running instances
// that is 20 commits and 20 transfers a minute rather than 100,000 of each. A page holds SQLite's write lock for tens of milliseconds, so
// API calls wait at most that long behind billing.
const billBatch = 5000

// bill charges every started, unsettled instance for the minutes it has
// completed and stops the instances whose renter cannot pay the next minute.
//
// Instances whose due minutes are plain charges (the common case: a running
// instance whose renter can pay) are charged in batches of billBatch per
// transaction. The others (out of funds, or ended and due their escrow
// release) and every instance of a batch that failed go through
// billInstance, one transaction each, which changes their state too.
func (s *Service) bill(ctx context.Context) error {
	var slow []market.InstanceID
	var errs []error
	var after market.InstanceID
	for {
		var page, pageSlow []market.InstanceID
		err := s.store.Tx(ctx, func(tx Tx) error {
			rows, err := tx.BillableInstances(ctx, after, billBatch)
			if err != nil {
				return err
			}
			page = page[:0]
			for _, r := range rows {
				page = append(page, r.ID)
			}
			pageSlow, err = s.chargeBatch(ctx, tx, rows, s.now())
			return err
		})
		switch {
		case err == nil:
			slow = append(slow, pageSlow...)
		case errors.Is(err, errNotLeader) || ctx.Err() != nil || len(page) == 0:
			return errors.Join(append(errs, fmt.Errorf("bill instances after %q: %w", after, err))...)
		default:
			// The batch as a whole was refused (a concurrent change to a
			// balance or an instance): charge its instances one by one.
			s.log.Warn("billing batch failed; billing its instances one by one", "instances", len(page), "err", err)
			slow = append(slow, page...)
		}
		if len(page) < billBatch {
			break
		}
		after = page[len(page)-1]
	}
	for _, id := range slow {
		if err := s.billInstance(ctx, id); err != nil {
			if errors.Is(err, errNotLeader) || ctx.Err() != nil {
				return errors.Join(append(errs, err)...)
			}
			errs = append(errs, fmt.Errorf("bill %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// chargeBatch charges, inside tx, the due minutes of every instance of rows
// whose billing is plain charges, with one charges transfer (one ledger
// entry per account, one record per minute) and one RecordBilling for all
// of them, and returns the others.
func (s *Service) chargeBatch(ctx context.Context, tx Tx, rows []BillingRow, now time.Time) (slow []market.InstanceID, err error) {
	if len(rows) == 0 {
		return nil, nil
	}
	// Each renter's available account, made once per renter.
	availOf := make(map[market.AccountID]market.LedgerAccount, len(rows)/4)
	var accts []market.LedgerAccount
	for _, r := range rows {
		if _, ok := availOf[r.Renter]; !ok {
			a := market.Available(r.Renter)
			availOf[r.Renter] = a
			accts = append(accts, a)
		}
	}
	avail, err := tx.BalancesOf(ctx, market.DefaultAsset, accts)
	if err != nil {
		return nil, err
	}
	cs := make([]market.MinuteCharge, 0, len(rows))
	ups := make([]BillingUpdate, 0, len(rows))
	var rewards []rewardDue
	for i := range rows {
		r := &rows[i]
		a := availOf[r.Renter]
		inst := market.Instance{ID: r.ID, Renter: r.Renter, Kind: r.Kind, State: r.State, PricePerHour: r.PricePerHour, PricePerDay: r.PricePerDay,
			Escrow: r.Escrow, Charged: r.Charged, BilledMins: r.BilledMins}
		if !r.StartedAt.IsZero() {
			inst.StartedAt = &r.StartedAt
		}
		if !r.StopAt.IsZero() {
			inst.StopAt = &r.StopAt
		}
		n := len(cs)
		var ok bool
		var u BillingUpdate
		cs, u, avail[a], ok = s.plainCharges(cs, inst, r.Host, a, avail[a], now)
		switch {
		case !ok:
			slow = append(slow, r.ID)
		case len(cs) > n:
			ups = append(ups, u)
			if r.Pool != "" {
				rewards = append(rewards, rewardDue{inst: r.ID, host: r.Host, pool: r.Pool, gpus: r.GPUs, from: u.FromMins, to: u.BilledMins})
			}
		}
	}
	if len(cs) == 0 {
		return slow, nil
	}
	t := ledger.Charges(cs, "charges:"+market.NewID(""), now)
	if _, err := tx.ApplyCharges(ctx, t, cs); err != nil {
		return nil, fmt.Errorf("charge %d minutes of %d instances: %w", len(cs), len(ups), err)
	}
	if err := tx.RecordBilling(ctx, ups); err != nil {
		return nil, err
	}
	if err := s.payRewards(ctx, tx, rewards, now); err != nil {
		return nil, err
	}
	return slow, nil
}

// plainCharges appends to cs the charges of inst due at now, paid from
// avail (the balance of availAcct, the renter's available account) and
// then from the instance's escrow, as settle would make them, when they
// are all there is to do: ok is false, and cs comes back unchanged, when
// the instance must change state (its renter cannot pay a due minute or,
// while it runs, the next one; or it has ended and its escrow is due back).
// It returns the instance's billing state after the charges and what is
// left of avail.
func (s *Service) plainCharges(cs []market.MinuteCharge, inst market.Instance, host market.AccountID, availAcct market.LedgerAccount, avail market.Money, now time.Time) (_ []market.MinuteCharge, u BillingUpdate, left market.Money, ok bool) {
	u = BillingUpdate{Instance: inst.ID, FromMins: inst.BilledMins, BilledMins: inst.BilledMins, Charged: inst.Charged, Escrow: inst.Escrow}
	if inst.Settled {
		return cs, u, avail, true
	}
	due, final := dueMinutes(inst, now)
	if final && inst.State.Terminal() {
		return cs, u, avail, false
	}
	n, left := len(cs), avail
	fee := s.feeOf(inst)
	for k := inst.BilledMins; k < due; k++ {
		amt := minuteCharge(inst, k)
		from := availAcct
		if left < amt {
			if u.Escrow < amt {
				return cs[:n], u, avail, false
			}
			from = market.Escrow(inst.Renter)
			u.Escrow -= amt
		} else {
			left -= amt
		}
		cs = append(cs, ledger.MinuteRecord(from, host, inst.ID, k, amt, fee, now))
		u.BilledMins++
		u.Charged += amt
	}
	inst.BilledMins = u.BilledMins
	if inst.Active() && inst.State != market.InstanceStopping && left < minuteCharge(inst, inst.BilledMins) {
		return cs[:n], u, avail, false
	}
	return cs, u, left, true
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
		s.machineChanged(stopped.Machine)
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
		first := inst.BilledMins
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
		if err := s.rewardSettled(ctx, tx, *inst, m.Owner, first, now); err != nil {
			return err
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

// rewardSettled pays the pool rewards of the minutes [from,
// inst.BilledMins) that settle just charged, when inst's machine is in a
// pool.
func (s *Service) rewardSettled(ctx context.Context, tx Tx, inst market.Instance, host market.AccountID, from int64, now time.Time) error {
	if inst.BilledMins <= from {
		return nil
	}
	pool, err := tx.MachinePool(ctx, inst.Machine)
	if err != nil || pool == "" {
		return err
	}
	return s.payRewards(ctx, tx, []rewardDue{{inst: inst.ID, host: host, pool: pool, gpus: len(inst.GPUs), from: from, to: inst.BilledMins}}, now)
}
