package coord

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Spend limits. A renter may cap what its rentals cost per hour: the
// hourly price of its active instances (spot ones at their price per day
// / 24) plus what its open bids that are not running would cost per hour
// if they won. A create or a bid that would take that above the cap is
// refused. A renter may also ask for an alert when what it was charged in
// the last hour reaches a threshold: the background tick appends a
// wallet.spend_alert event (and POSTs it to the renter's webhook, when
// set), at most once an hour.

// SetSpendLimits sets the caller's spend limits; zero turns one off.
func (s *Service) SetSpendLimits(ctx context.Context, caller market.Account, l market.SpendLimits) (market.SpendStatus, error) {
	const op = "set spend limits"
	switch {
	case l.MaxPerHour < 0 || l.AlertAt < 0:
		return market.SpendStatus{}, market.Errorf(op, market.Invalid, "limits must not be negative; 0 turns one off")
	case len(l.Webhook) > maxWebhookLen:
		return market.SpendStatus{}, market.Errorf(op, market.Invalid, "webhook URL is %d bytes; the limit is %d", len(l.Webhook), maxWebhookLen)
	}
	if l.Webhook != "" {
		if u, err := url.Parse(l.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return market.SpendStatus{}, market.Errorf(op, market.Invalid, "webhook %q must be an http or https URL", l.Webhook)
		}
	}
	err := s.store.Tx(ctx, func(tx Tx) error {
		prev, err := tx.SpendLimit(ctx, caller.ID)
		if err != nil && !market.IsKind(err, market.NotFound) {
			return err
		}
		return tx.PutSpendLimit(ctx, SpendLimit{Account: caller.ID, Limits: l, AlertedAt: prev.AlertedAt, UpdatedAt: s.now()})
	})
	if err != nil {
		return market.SpendStatus{}, err
	}
	return s.SpendStatus(ctx, caller)
}

// SpendStatus returns the caller's limits, its hourly rate and what it
// spent in the last hour.
func (s *Service) SpendStatus(ctx context.Context, caller market.Account) (market.SpendStatus, error) {
	st := market.SpendStatus{Account: caller.ID, Asset: market.DefaultAsset}
	err := s.store.Tx(ctx, func(tx Tx) error {
		l, err := tx.SpendLimit(ctx, caller.ID)
		switch {
		case err == nil:
			st.Limits = l.Limits
			if !l.AlertedAt.IsZero() {
				st.AlertedAt = ptr(l.AlertedAt)
			}
		case !market.IsKind(err, market.NotFound):
			return err
		}
		if st.RatePerHour, err = spendRate(ctx, tx, caller.ID); err != nil {
			return err
		}
		st.SpentLastHour, err = s.spentSince(ctx, tx, caller.ID, s.now().Add(-time.Hour))
		return err
	})
	return st, err
}

// spendRate is what renter's active instances and its open bids that are
// not running cost per hour.
func spendRate(ctx context.Context, tx Tx, renter market.AccountID) (market.Money, error) {
	insts, err := tx.Instances(ctx, InstanceFilter{Renter: renter, ActiveOnly: true})
	if err != nil {
		return 0, err
	}
	var rate market.Money
	for _, i := range insts {
		if i.State == market.InstanceStopping {
			continue // billing ended
		}
		if i.Kind == market.Spot {
			rate += i.PricePerDay / 24
		} else {
			rate += i.PricePerHour
		}
	}
	bids, err := tx.Bids(ctx, BidFilter{Bidder: renter, OpenOnly: true})
	if err != nil {
		return 0, err
	}
	for _, b := range bids {
		if b.State != market.BidWinning {
			rate += b.PricePerGPUDay * market.Money(b.GPUs) / 24
		}
	}
	return rate, nil
}

// spentSince is what renter was charged since t, net of refunds.
func (s *Service) spentSince(ctx context.Context, tx Tx, renter market.AccountID, t time.Time) (market.Money, error) {
	spent, err := spentSinceOf(ctx, tx, []market.AccountID{renter}, t)
	return spent[renter], err
}

// spentSinceOf is spentSince for each of renters (those who spent
// nothing: absent).
func spentSinceOf(ctx context.Context, tx Tx, renters []market.AccountID, t time.Time) (map[market.AccountID]market.Money, error) {
	accounts := make([]market.LedgerAccount, 0, 2*len(renters))
	for _, r := range renters {
		accounts = append(accounts, market.Available(r), market.Escrow(r))
	}
	flows, err := tx.FlowsOf(ctx, FlowFilter{Kind: market.TransferCharge, Kinds: []market.TransferKind{market.TransferCharges}, From: t}, accounts)
	if err != nil {
		return nil, err
	}
	spent := make(map[market.AccountID]market.Money, len(renters))
	for a, v := range flows {
		spent[a.Owner()] -= v
	}
	return spent, nil
}

// checkSpendCap refuses, inside tx, a rental or bid that would add more
// per hour to renter's spending than its cap allows.
func (s *Service) checkSpendCap(ctx context.Context, tx Tx, op string, renter market.AccountID, more market.Money) error {
	l, err := tx.SpendLimit(ctx, renter)
	if market.IsKind(err, market.NotFound) || (err == nil && l.Limits.MaxPerHour == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	rate, err := spendRate(ctx, tx, renter)
	if err != nil {
		return err
	}
	if rate+more > l.Limits.MaxPerHour {
		return market.Errorf(op, market.Conflict,
			"this would cost %s %s per hour; with your instances and open bids (%s per hour) that is %s, above your cap of %s per hour; stop something or raise the cap with `gpumarket wallet limits --max-per-hour`",
			more, market.DefaultAsset, rate, rate+more, l.Limits.MaxPerHour)
	}
	return nil
}

// checkSpendAlerts raises the alerts of renters whose spending in the last
// hour reached their threshold and who were not alerted in the last hour.
// Who may be due is read outside any transaction, every renter's spending
// together (FlowsOf: on Postgres, one statement per 2,500 renters): most
// ticks alert nobody, and a serializable transaction that read the
// spending of every renter with an alert would take part in the conflicts
// of every charge made meanwhile. Those due are read again, and alerted,
// in one transaction.
func (s *Service) checkSpendAlerts(ctx context.Context) error {
	now := s.now()
	var due []market.AccountID
	err := s.read(ctx, func(tx Tx) error {
		due = nil
		ls, err := tx.SpendAlerts(ctx)
		if err != nil {
			return err
		}
		var renters []market.AccountID
		for _, l := range ls {
			if l.AlertedAt.IsZero() || now.Sub(l.AlertedAt) >= time.Hour {
				renters = append(renters, l.Account)
			}
		}
		spent, err := spentSinceOf(ctx, tx, renters, now.Add(-time.Hour))
		if err != nil {
			return err
		}
		for _, l := range ls {
			if v, ok := spent[l.Account]; ok && v >= l.Limits.AlertAt {
				due = append(due, l.Account)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spend alerts: %w", err)
	}
	if len(due) == 0 {
		return nil
	}
	var fired []market.SpendAlert
	var hooks []string
	err = s.store.Tx(ctx, func(tx Tx) error {
		fired, hooks = nil, nil
		for _, renter := range due {
			l, err := tx.SpendLimit(ctx, renter)
			if market.IsKind(err, market.NotFound) {
				continue // removed meanwhile
			}
			if err != nil {
				return err
			}
			if l.Limits.AlertAt <= 0 || !l.AlertedAt.IsZero() && now.Sub(l.AlertedAt) < time.Hour {
				continue
			}
			spent, err := s.spentSince(ctx, tx, renter, now.Add(-time.Hour))
			if err != nil {
				return err
			}
			if spent < l.Limits.AlertAt {
				continue
			}
			l.AlertedAt = now
			if err := tx.PutSpendLimit(ctx, l); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "wallet.spend_alert", Account: l.Account,
				Message: fmt.Sprintf("you spent %s %s in the last hour, at or above your alert of %s", spent, market.DefaultAsset, l.Limits.AlertAt)}); err != nil {
				return err
			}
			if l.Limits.Webhook != "" {
				fired = append(fired, market.SpendAlert{Type: "wallet.spend_alert", Account: l.Account, SpentLastHour: spent, AlertAt: l.Limits.AlertAt, At: now})
				hooks = append(hooks, l.Limits.Webhook)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spend alerts: %w", err)
	}
	for i, a := range fired {
		s.webhooks.sending.Go(func() { s.postSpendAlert(hooks[i], a) })
	}
	return nil
}

func (s *Service) postSpendAlert(url string, a market.SpendAlert) {
	s.postJSON("spend alert webhook", url, a, "account", a.Account)
}
