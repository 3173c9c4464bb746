package coord_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// BenchmarkFlow measures Store.Flow, the sum of an account's entries of
// some kinds in a time window (a host's unsettled earnings on every wallet
// view and withdrawal, a renter's spending of the last hour for spend
// alerts on every leader tick), on a ledger where one renter paid one host
// a charge every minute for 100,000 minutes (69 days), 3 entries each:
// "hour" sums the host's last hour (60 charges), "week" its last 7 days
// (10,080), "dividends" the renter's dividends of all time (none).
//
//	go test -run XXX -bench Flow ./internal/coord/
//
// The Postgres case runs when GPUMARKET_TEST_POSTGRES is set.
// GPUMARKET_BENCH_TRANSFERS changes the number of charges.
func BenchmarkFlow(b *testing.B) {
	n := benchSize(b, "GPUMARKET_BENCH_TRANSFERS", 100_000, 10_080)
	onStores(b, func(b *testing.B, store coord.Store) { benchFlow(b, store, n) })
}

func benchFlow(b *testing.B, store coord.Store, n int) {
	ctx := b.Context()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	renter, host := market.AccountID("a-renter"), market.AccountID("a-host")
	price := market.Money(10_000)
	err := store.Tx(ctx, func(tx coord.Tx) error {
		_, err := tx.ApplyTransfers(ctx, []market.Transfer{ledger.Deposit(renter, price*market.Money(n), "seed", "seed", t0)})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	for chunk := range slices.Chunk(slices.Collect(rangeN(n)), 5000) {
		err := store.Tx(ctx, func(tx coord.Tx) error {
			ts := make([]market.Transfer, len(chunk))
			for k, i := range chunk {
				ts[k] = ledger.Charge(market.Available(renter), host, "i-bench", int64(i), price, 1000, t0.Add(time.Duration(i)*time.Minute))
			}
			_, err := tx.ApplyTransfers(ctx, ts)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	end := t0.Add(time.Duration(n) * time.Minute)
	earned := price - ledger.Fee(price, 1000)
	for _, w := range []struct {
		name string
		f    coord.FlowFilter
		want market.Money
	}{
		{"hour", coord.FlowFilter{Account: market.Earnings(host), Kind: market.TransferCharge, From: end.Add(-time.Hour)}, earned * 60},
		{"week", coord.FlowFilter{Account: market.Earnings(host), Kind: market.TransferCharge, From: end.Add(-7 * 24 * time.Hour)}, earned * 7 * 24 * 60},
		// The renter's dividends of all time (its staking overview): none,
		// among its 100,000 charges.
		{"dividends", coord.FlowFilter{Account: market.Available(renter), Kind: market.TransferDividend}, 0},
	} {
		b.Run(w.name, func(b *testing.B) {
			w.f.Kinds = []market.TransferKind{market.TransferCharges}
			want := w.want
			for b.Loop() {
				var got market.Money
				err := store.Tx(ctx, func(tx coord.Tx) error {
					var err error
					got, err = tx.Flow(ctx, w.f)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				if got != want {
					b.Fatalf("flow %s, want %s", got, want)
				}
			}
		})
	}
}

// BenchmarkSpendAlerts measures the leader tick's spend-alert pass with
// 2,000 renters who asked for an alert, none due: each paid 30 one-minute
// charges in the last hour, below its threshold.
//
//	go test -run XXX -bench SpendAlerts ./internal/coord/
func BenchmarkSpendAlerts(b *testing.B) {
	onStores(b, func(b *testing.B, store coord.Store) { benchSpendAlerts(b, store, 2000) })
}

func benchSpendAlerts(b *testing.B, store coord.Store, renters int) {
	ctx := b.Context()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	svc := coord.New(coord.Config{Store: store, Clock: &fakeClock{t: now}, Passwords: plainPasswords{}})
	price := market.Money(10_000)
	for chunk := range slices.Chunk(slices.Collect(rangeN(renters)), 500) {
		err := store.Tx(ctx, func(tx coord.Tx) error {
			var ts []market.Transfer
			for _, i := range chunk {
				r := market.AccountID(fmt.Sprintf("a-r%05d", i))
				if err := tx.InsertAccount(ctx, market.Account{ID: r, Email: string(r) + "@example.com", Roles: []market.Role{market.RoleRenter}, CreatedAt: now}); err != nil {
					return err
				}
				if err := tx.PutSpendLimit(ctx, coord.SpendLimit{Account: r, Limits: market.SpendLimits{AlertAt: market.Tokens(1)}, UpdatedAt: now}); err != nil {
					return err
				}
				ts = append(ts, ledger.Deposit(r, market.Tokens(1), "seed-"+string(r), "seed", now.Add(-2*time.Hour)))
				for m := range 30 {
					ts = append(ts, ledger.Charge(market.Available(r), "a-host", market.InstanceID("i-"+string(r)), int64(m), price, 1000, now.Add(time.Duration(m-45)*time.Minute)))
				}
			}
			_, err := tx.ApplyTransfers(ctx, ts)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if err := svc.CheckSpendAlerts(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
