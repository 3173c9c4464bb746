package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// testFeesByDay checks the fee account's sums per UTC day: charges (single
// and batched) less refunds, other kinds and assets left out, days cut at
// midnight UTC, transfers made out of order of their times.
func testFeesByDay(t *testing.T, s coord.Store) {
	renter, host := market.AccountID("a-renter"), market.AccountID("a-host")
	apply(t, s, deposit(market.Available(renter), market.Tokens(10)))
	day := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, time.UTC) }
	minute := int64(0)
	charge := func(when time.Time, fee market.Money) {
		t.Helper()
		tr := transfer(market.TransferCharge,
			market.Entry{Account: market.Available(renter), Amount: -10 * fee},
			market.Entry{Account: market.Earnings(host), Amount: 9 * fee},
			market.Entry{Account: market.FeesAccount, Amount: fee},
		)
		minute++
		tr.Instance, tr.Minute, tr.At = "i-1", minute, when
		apply(t, s, tr)
	}
	other := func(kind market.TransferKind, when time.Time, to market.LedgerAccount, amount market.Money) {
		t.Helper()
		tr := transfer(kind, move(market.FeesAccount, to, amount)...)
		tr.At = when
		apply(t, s, tr)
	}

	charge(day(3, 9, 0), 15)
	charge(day(2, 0, 0), 10) // made after the one above, at an earlier time
	// A batch of charges: one fee entry for two minutes.
	batch := transfer(market.TransferCharges,
		market.Entry{Account: market.Available(renter), Amount: -300},
		market.Entry{Account: market.Earnings(host), Amount: 270},
		market.Entry{Account: market.FeesAccount, Amount: 30},
	)
	batch.At = day(3, 23, 59).Add(59*time.Second + 999999*time.Microsecond)
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		_, err := tx.ApplyCharges(ctx, batch, []market.MinuteCharge{
			{Instance: "i-2", Minute: 0, From: market.Available(renter), Host: host, Amount: 100, Fee: 10, At: batch.At},
			{Instance: "i-2", Minute: 1, From: market.Available(renter), Host: host, Amount: 200, Fee: 20, At: batch.At},
		})
		return err
	})
	other(market.TransferRefund, day(5, 12, 0), market.Available(renter), 20)
	other(market.TransferDividend, day(5, 12, 0), market.Available(host), 5) // fees paid out, not taken back
	charge(day(6, 0, 0), 1000)
	// Fees of another asset are not the platform's tokens.
	dep := deposit(market.Available(renter), 100)
	dep.Asset = "PRJ"
	apply(t, s, dep)
	prj := transfer(market.TransferCharge, market.Entry{Account: market.Available(renter), Amount: -100}, market.Entry{Account: market.FeesAccount, Amount: 100})
	minute++
	prj.Asset, prj.Instance, prj.Minute, prj.At = "PRJ", "i-1", minute, day(3, 12, 0)
	apply(t, s, prj)
	charge(day(1, 23, 59), 7) // the day before from, made last

	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     []coord.DayFlow
	}{
		{"window", day(2, 0, 0), day(6, 0, 0), []coord.DayFlow{{Day: day(2, 0, 0), Amount: 10}, {Day: day(3, 0, 0), Amount: 45}, {Day: day(5, 0, 0), Amount: -20}}},
		{"open end", day(3, 9, 1), time.Time{}, []coord.DayFlow{{Day: day(3, 0, 0), Amount: 30}, {Day: day(5, 0, 0), Amount: -20}, {Day: day(6, 0, 0), Amount: 1000}}},
		{"all", day(1, 0, 0), time.Time{}, []coord.DayFlow{{Day: day(1, 0, 0), Amount: 7}, {Day: day(2, 0, 0), Amount: 10}, {Day: day(3, 0, 0), Amount: 45}, {Day: day(5, 0, 0), Amount: -20}, {Day: day(6, 0, 0), Amount: 1000}}},
		{"none since", day(7, 0, 0), time.Time{}, nil},
	} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.FeesByDay(ctx, tc.from, tc.to)
			if err != nil {
				return err
			}
			diff(t, "FeesByDay "+tc.name, got, tc.want)
			return nil
		})
	}
}
