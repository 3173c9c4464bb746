package storetest

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// testFlow checks the sums of one account's entries by transfer kind, time
// range [From, To) and asset: what settlement (earnings still pending),
// spend caps and dividends are computed from.
func testFlow(t *testing.T, s coord.Store) {
	host := market.AccountID("a-host")
	earn := market.Earnings(host)
	apply(t, s, deposit(market.Available("a-renter"), market.Tokens(10)))
	in := func(kind market.TransferKind, asset market.Asset, minute int, amount market.Money) {
		t.Helper()
		from := market.Available("a-renter")
		if asset != gmt {
			dep := deposit(from, amount)
			dep.Asset = asset
			apply(t, s, dep)
		}
		tr := transfer(kind, move(from, earn, amount)...)
		tr.Asset, tr.At = asset, at(minute)
		if kind == market.TransferCharge {
			tr.Instance, tr.Minute = "i-1", int64(minute)
		}
		apply(t, s, tr)
	}
	in(market.TransferCharge, gmt, 0, 9)
	in(market.TransferPayment, gmt, 1, 5)
	in(market.TransferPayment, "PRJ", 2, 7)
	back := transfer(market.TransferRefund, move(earn, market.Available("a-renter"), 2)...)
	back.At = at(3)
	apply(t, s, back)
	in(market.TransferDeposit, gmt, 4, 100) // a kind not asked for

	kinds := []market.TransferKind{market.TransferPayment, market.TransferRefund}
	for _, tc := range []struct {
		name     string
		from, to time.Time
		asset    market.Asset
		want     market.Money
	}{
		{"every asset", time.Time{}, time.Time{}, "", 9 + 5 + 7 - 2},
		{"platform token", time.Time{}, time.Time{}, gmt, 9 + 5 - 2},
		{"project token", time.Time{}, time.Time{}, "PRJ", 7},
		{"from", at(2), time.Time{}, "", 7 - 2},
		{"from, platform token", at(2), time.Time{}, gmt, -2},
		{"before to", time.Time{}, at(2), "", 9 + 5},
		{"from and to", at(1), at(3), gmt, 5},
		{"nothing in range", at(5), at(9), "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got market.Money
			do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
				got, err = tx.Flow(ctx, coord.FlowFilter{Account: earn, Kind: market.TransferCharge, Kinds: kinds, From: tc.from, To: tc.to, Asset: tc.asset})
				return err
			})
			if got != tc.want {
				t.Errorf("Flow = %s, want %s", got, tc.want)
			}
			// FlowsOf sums the same per account, leaving out the zeros
			// (an account without entries, a range without any).
			renter := market.Available("a-renter")
			f := coord.FlowFilter{Kind: market.TransferCharge, Kinds: kinds, From: tc.from, To: tc.to, Asset: tc.asset}
			var all map[market.LedgerAccount]market.Money
			var fromRenter market.Money
			do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
				if all, err = tx.FlowsOf(ctx, f, []market.LedgerAccount{earn, renter, market.Available("a-nobody")}); err != nil {
					return err
				}
				f.Account = renter
				fromRenter, err = tx.Flow(ctx, f)
				return err
			})
			want := map[market.LedgerAccount]market.Money{}
			for a, v := range map[market.LedgerAccount]market.Money{earn: tc.want, renter: fromRenter} {
				if v != 0 {
					want[a] = v
				}
			}
			if !maps.Equal(all, want) {
				t.Errorf("FlowsOf = %v, want %v", all, want)
			}
		})
	}
}
