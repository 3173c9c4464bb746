package coord

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Refunds. A renter is refunded what chosen minutes of an instance cost
// (for example while its host was down): the renter gets the charges of
// those minutes back in its available balance; the money comes from the
// host's unsettled earnings first (up to what the host earned from those
// minutes), and the platform's fees pay the rest. Settled earnings are the
// host's to withdraw and are never taken back; the platform pays only from
// fees not owed to stakers (those of periods not yet distributed), so a
// refund never creates money. A minute is refunded at most once: a refund
// whose range overlaps an earlier one of the instance is refused.

// maxRefundReason bounds the reason a refund records.
const maxRefundReason = 500

// Refund refunds a renter for minutes of an instance; admins only. The
// idempotency key makes a retried refund happen once.
func (s *Service) Refund(ctx context.Context, caller market.Account, key string, req market.RefundRequest) (market.Refund, error) {
	const op = "refund"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return market.Refund{}, err
	}
	return idempotent(ctx, s, caller, op, key, req, func(tx Tx) (market.Refund, error) {
		return s.refund(ctx, tx, req, caller.ID)
	})
}

// RefundDowntime refunds a renter for the minutes of req.Instance its host
// was down, as the coordinator's own decision (no admin): the verification
// rules call it when they find downtime. Give the downtime as req.Since and
// req.Until (or as minutes) and a reason. It refunds only minutes not
// refunded before, so it is safe to call again for the same or a growing
// range: a range refunded already returns the refund that covered its
// start, a range partly refunded refunds the first minutes not yet
// refunded.
func (s *Service) RefundDowntime(ctx context.Context, req market.RefundRequest) (market.Refund, error) {
	var out market.Refund
	err := s.store.Tx(ctx, func(tx Tx) error {
		from, to, err := s.refundRange(ctx, tx, req)
		if err != nil {
			return err
		}
		prev, err := tx.Refunds(ctx, RefundFilter{Instance: req.Instance})
		if err != nil {
			return err
		}
		slices.SortFunc(prev, func(a, b market.Refund) int { return int(a.FromMinute - b.FromMinute) })
		for _, p := range prev {
			switch {
			case p.FromMinute <= from && from < p.ToMinute:
				if p.ToMinute >= to {
					out = p
					return nil
				}
				from = p.ToMinute
			case from < p.FromMinute && p.FromMinute < to:
				to = p.FromMinute
			}
		}
		r := req
		r.Since, r.Until, r.FromMinute, r.ToMinute = nil, nil, from, to
		out, err = s.refund(ctx, tx, r, "")
		return err
	})
	return out, err
}

// Refunds lists refunds, oldest first: the caller's as a renter, or with
// all (admins) everyone's; instance filters when not empty.
func (s *Service) Refunds(ctx context.Context, caller market.Account, all bool, instance market.InstanceID) ([]market.Refund, error) {
	f := RefundFilter{Renter: caller.ID, Instance: instance}
	if all {
		if err := require(caller, "list all refunds", market.RoleAdmin); err != nil {
			return nil, err
		}
		f.Renter = ""
	}
	out := []market.Refund{}
	err := s.store.Tx(ctx, func(tx Tx) error {
		rs, err := tx.Refunds(ctx, f)
		out = append(out, rs...)
		return err
	})
	return out, err
}

// refundRange is the minutes [from, to) req names.
func (s *Service) refundRange(ctx context.Context, tx Tx, req market.RefundRequest) (from, to int64, err error) {
	const op = "refund"
	if req.Instance == "" {
		return 0, 0, market.Errorf(op, market.Invalid, "say which instance to refund")
	}
	inst, err := tx.Instance(ctx, req.Instance)
	if err != nil {
		return 0, 0, err
	}
	if (req.Since == nil) != (req.Until == nil) {
		return 0, 0, market.Errorf(op, market.Invalid, "give both since and until, or minutes")
	}
	if req.Since != nil {
		if req.FromMinute != 0 || req.ToMinute != 0 {
			return 0, 0, market.Errorf(op, market.Invalid, "give minutes or a time range (since, until), not both")
		}
		if inst.StartedAt == nil {
			return 0, 0, market.Errorf(op, market.Invalid, "instance %s never started, so nothing was charged", inst.ID)
		}
		if !req.Until.After(*req.Since) {
			return 0, 0, market.Errorf(op, market.Invalid, "until (%s) must be after since (%s)", req.Until.Format(time.RFC3339), req.Since.Format(time.RFC3339))
		}
		from, to = MinutesOverlapping(*inst.StartedAt, *req.Since, *req.Until)
		return from, to, nil
	}
	if req.FromMinute < 0 || req.ToMinute <= req.FromMinute {
		return 0, 0, market.Errorf(op, market.Invalid, "minutes %d to %d (end excluded) name no minute; give from >= 0 and to above it", req.FromMinute, req.ToMinute)
	}
	return req.FromMinute, req.ToMinute, nil
}

// MinutesOverlapping returns the billing minutes [from, to) of an instance
// started at start that overlap the time range [since, until): minute k
// covers [start + k min, start + (k+1) min).
func MinutesOverlapping(start, since, until time.Time) (from, to int64) {
	a, b := since.Sub(start), until.Sub(start)
	if a < 0 {
		a = 0
	}
	if b <= a {
		return 0, 0
	}
	from = int64(a / time.Minute)
	to = int64(b / time.Minute)
	if b%time.Minute != 0 {
		to++
	}
	return from, to
}

// refund makes a refund inside tx. by is the admin, "" for the coordinator.
func (s *Service) refund(ctx context.Context, tx Tx, req market.RefundRequest, by market.AccountID) (market.Refund, error) {
	const op = "refund"
	reason := strings.TrimSpace(req.Reason)
	switch {
	case reason == "":
		return market.Refund{}, market.Errorf(op, market.Invalid, "say why the renter is refunded (--reason); the renter and the host see it")
	case len(reason) > maxRefundReason:
		return market.Refund{}, market.Errorf(op, market.Invalid, "the reason is %d bytes; keep it under %d", len(reason), maxRefundReason)
	}
	from, to, err := s.refundRange(ctx, tx, req)
	if err != nil {
		return market.Refund{}, err
	}
	inst, err := tx.Instance(ctx, req.Instance)
	if err != nil {
		return market.Refund{}, err
	}
	prev, err := tx.Refunds(ctx, RefundFilter{Instance: inst.ID})
	if err != nil {
		return market.Refund{}, err
	}
	for _, p := range prev {
		if from < p.ToMinute && p.FromMinute < to {
			return market.Refund{}, market.Errorf(op, market.Conflict, "minutes %d to %d of %s overlap refund %s (minutes %d to %d); a minute is refunded once",
				from, to-1, inst.ID, p.ID, p.FromMinute, p.ToMinute-1)
		}
	}
	cs, err := tx.MinuteCharges(ctx, ChargeFilter{Instance: inst.ID})
	if err != nil {
		return market.Refund{}, err
	}
	// Only charged minutes are refunded (they are 0..n-1): the range ends
	// at the last one, so that minutes billed later stay outside it.
	var charged int64
	for _, c := range cs {
		charged = max(charged, c.Minute+1)
	}
	to = min(to, charged)
	if to <= from {
		return market.Refund{}, market.Errorf(op, market.Invalid, "no charged minute of %s lies in the minutes asked for (from %d); it has %d charged minutes (0 to %d)",
			inst.ID, from, charged, charged-1)
	}
	r := market.Refund{ID: market.RefundID(market.NewID(market.RefundPrefix)), Instance: inst.ID, Renter: inst.Renter,
		FromMinute: from, ToMinute: to, Asset: market.DefaultAsset, Reason: reason, By: by, At: s.now()}
	var hostShare market.Money
	for _, c := range cs {
		if c.Minute < from || c.Minute >= to {
			continue
		}
		r.Minutes++
		r.Amount += c.Amount
		hostShare += c.Amount - c.Fee
		r.Host = c.Host
	}
	pending, err := s.pendingEarnings(ctx, tx, r.Host, r.Asset, r.At)
	if err != nil {
		return market.Refund{}, err
	}
	earnings, err := tx.Balance(ctx, market.Earnings(r.Host), r.Asset)
	if err != nil {
		return market.Refund{}, err
	}
	spare, err := s.spareFees(ctx, tx, r.At)
	if err != nil {
		return market.Refund{}, err
	}
	var ok bool
	r.FromHost, r.FromPlatform, ok = ledger.SplitRefund(r.Amount, hostShare, min(pending, earnings), spare)
	if !ok {
		return market.Refund{}, market.Errorf(op, market.InsufficientFunds,
			"refunding %s needs %s from the platform (the host's unsettled earnings cover %s), but only %s of fees are not owed to stakers; refund fewer minutes or deposit to the platform",
			r.Amount, r.FromPlatform, r.FromHost, spare)
	}
	memo := fmt.Sprintf("refund %s of minutes %d to %d of %s: %s", r.ID, from, to-1, inst.ID, reason)
	rt := ledger.RefundTransfer(r.Renter, r.Host, r.ID, r.FromHost, r.FromPlatform, memo, r.At)
	rt.Instance = inst.ID
	t, err := tx.ApplyTransfer(ctx, rt)
	if err != nil {
		return market.Refund{}, err
	}
	r.TransferSeq = t.Seq
	if err := tx.InsertRefund(ctx, r); err != nil {
		return market.Refund{}, err
	}
	who := "the coordinator"
	if by != "" {
		who = "admin " + string(by)
	}
	msg := fmt.Sprintf("refund of %s for minutes %d to %d of %s by %s (%s from the host, %s from the platform): %s",
		r.Amount, from, to-1, inst.ID, who, r.FromHost, r.FromPlatform, reason)
	for _, a := range []market.AccountID{r.Renter, r.Host} {
		if err := tx.AppendEvent(ctx, market.Event{At: r.At, Type: "wallet.refund", Account: a, Machine: inst.Machine, Instance: inst.ID, Message: msg}); err != nil {
			return market.Refund{}, err
		}
	}
	return r, nil
}

// spareFees is what a refund may take from the platform: the fees the
// current distribution period has collected so far (net of refunds), and
// no more than the fee account holds beyond what the last dividend
// statement carried out. Fees of ended periods are owed to stakers (their
// statements may not be written yet), so a refund never makes a period's
// fees negative.
func (s *Service) spareFees(ctx context.Context, tx Tx, now time.Time) (market.Money, error) {
	bal, err := tx.Balance(ctx, market.FeesAccount, market.DefaultAsset)
	if err != nil {
		return 0, err
	}
	last, err := tx.Statements(ctx, 1)
	if err != nil {
		return 0, err
	}
	if len(last) > 0 {
		bal -= last[0].CarriedOut
	}
	_, start, _ := ledger.Period(now, s.cfg.DividendPeriod)
	period, err := tx.Flow(ctx, FlowFilter{Account: market.FeesAccount, Kind: market.TransferCharge,
		Kinds: []market.TransferKind{market.TransferCharges, market.TransferRefund}, From: start})
	if err != nil {
		return 0, err
	}
	return max(min(bal, period), 0), nil
}

// checkRefunds verifies that each refund paid the renter exactly what its
// minutes were charged, from the accounts it records, by its transfer;
// that no two refunds of an instance share a minute; and that every refund
// transfer has its record.
func checkRefunds(ctx context.Context, tx Tx, ts []market.Transfer, mcs []market.MinuteCharge, add func(name, format string, args ...any)) error {
	rs, err := tx.Refunds(ctx, RefundFilter{})
	if err != nil {
		return err
	}
	bySeq := map[int64]market.Transfer{}
	for _, t := range ts {
		if t.Kind == market.TransferRefund {
			bySeq[t.Seq] = t
		}
	}
	charged := map[market.InstanceID]map[int64]market.Money{}
	for _, c := range mcs {
		if charged[c.Instance] == nil {
			charged[c.Instance] = map[int64]market.Money{}
		}
		charged[c.Instance][c.Minute] = c.Amount
	}
	byInst := map[market.InstanceID][]market.Refund{}
	for _, r := range rs {
		var sum market.Money
		var n int64
		for m, amt := range charged[r.Instance] {
			if m >= r.FromMinute && m < r.ToMinute {
				sum += amt
				n++
			}
		}
		if sum != r.Amount || n != r.Minutes || r.FromHost+r.FromPlatform != r.Amount || r.FromHost < 0 || r.FromPlatform < 0 {
			add(checkRefund, "refund %s of minutes %d to %d of %s: %d minutes for %s (%s + %s), but those minutes were charged %s in %d minutes",
				r.ID, r.FromMinute, r.ToMinute-1, r.Instance, r.Minutes, r.Amount, r.FromHost, r.FromPlatform, sum, n)
		}
		t, ok := bySeq[r.TransferSeq]
		delete(bySeq, r.TransferSeq)
		if !ok {
			add(checkRefund, "refund %s names transfer %d, which is not a refund", r.ID, r.TransferSeq)
		} else {
			want := map[market.LedgerAccount]market.Money{market.Available(r.Renter): r.Amount, market.Earnings(r.Host): -r.FromHost, market.FeesAccount: -r.FromPlatform}
			got := map[market.LedgerAccount]market.Money{}
			for _, e := range t.Entries {
				got[e.Account] += e.Amount
			}
			maps.DeleteFunc(want, func(_ market.LedgerAccount, v market.Money) bool { return v == 0 })
			if !maps.Equal(got, want) {
				add(checkRefund, "refund %s: transfer %d moves %v, the refund says %v", r.ID, t.Seq, got, want)
			}
		}
		byInst[r.Instance] = append(byInst[r.Instance], r)
	}
	for _, inst := range slices.Sorted(maps.Keys(byInst)) {
		list := byInst[inst]
		slices.SortFunc(list, func(a, b market.Refund) int { return int(a.FromMinute - b.FromMinute) })
		for i := 1; i < len(list); i++ {
			if list[i].FromMinute < list[i-1].ToMinute {
				add(checkRefund, "refunds %s and %s of %s share minutes", list[i-1].ID, list[i].ID, inst)
			}
		}
	}
	for _, seq := range slices.Sorted(maps.Keys(bySeq)) {
		add(checkRefund, "refund transfer %d (%s) has no refund record", seq, bySeq[seq].Key)
	}
	return nil
}
