package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

const gmt = market.DefaultAsset

// transfer builds a transfer with a fresh ID and key; Seq is left to the store.
func transfer(kind market.TransferKind, entries ...market.Entry) market.Transfer {
	id := market.NewID(market.TransferPrefix)
	return market.Transfer{
		ID: market.TransferID(id), Key: "key-" + id, Kind: kind, Asset: gmt,
		Entries: entries, At: at(0),
	}
}

// move is the two entries that move amount from one account to another.
func move(from, to market.LedgerAccount, amount market.Money) []market.Entry {
	return []market.Entry{{Account: from, Amount: -amount}, {Account: to, Amount: amount}}
}

func deposit(to market.LedgerAccount, amount market.Money) market.Transfer {
	return transfer(market.TransferDeposit, move(market.WorldAccount, to, amount)...)
}

func apply(t *testing.T, s coord.Store, tr market.Transfer) market.Transfer {
	t.Helper()
	var got market.Transfer
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		got, err = tx.ApplyTransfer(ctx, tr)
		return err
	})
	return got
}

func applyErr(t *testing.T, s coord.Store, tr market.Transfer) error {
	t.Helper()
	return try(t, s, func(ctx context.Context, tx coord.Tx) error {
		_, err := tx.ApplyTransfer(ctx, tr)
		return err
	})
}

func balances(t *testing.T, s coord.Store, asset market.Asset) map[market.LedgerAccount]market.Money {
	t.Helper()
	var got map[market.LedgerAccount]market.Money
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		got, err = tx.Balances(ctx, asset)
		return err
	})
	var sum market.Money
	for _, v := range got {
		sum += v
	}
	if sum != 0 {
		t.Errorf("Balances(%s) sum to %s, want 0: %v", asset, sum, got)
	}
	return got
}

// nonZero drops zero balances, which a store may or may not list.
func nonZero(m map[market.LedgerAccount]market.Money) map[market.LedgerAccount]market.Money {
	out := map[market.LedgerAccount]market.Money{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func allTransfers(t *testing.T, s coord.Store, owner market.AccountID, before int64, limit int) []market.Transfer {
	t.Helper()
	var got []market.Transfer
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		got, err = tx.Transfers(ctx, owner, before, limit)
		return err
	})
	return got
}

func seqs(ts []market.Transfer) []int64 {
	out := []int64{}
	for _, t := range ts {
		out = append(out, t.Seq)
	}
	return out
}

func testApplyTransfer(t *testing.T, s coord.Store) {
	alice := market.AccountID("a-alice")
	avail, escrow := market.Available(alice), market.Escrow(alice)

	dep := deposit(avail, market.Tokens(100))
	dep.Memo = "card payment 42"
	got := apply(t, s, dep)
	want := dep
	want.Seq = 1
	diff(t, "ApplyTransfer result", got, want)

	hold := transfer(market.TransferHold, move(avail, escrow, market.Tokens(30))...)
	hold.Instance = "i-abc"
	hold.At = at(2)
	wantHold := hold
	wantHold.Seq = 2
	diff(t, "second transfer", apply(t, s, hold), wantHold)

	// One account may appear in several entries.
	split := transfer(market.TransferRelease,
		market.Entry{Account: escrow, Amount: -market.Tokens(10)},
		market.Entry{Account: avail, Amount: market.Tokens(4)},
		market.Entry{Account: escrow, Amount: -market.Tokens(5)},
		market.Entry{Account: avail, Amount: market.Tokens(11)},
	)
	apply(t, s, split)

	// Another asset balances separately.
	other := deposit(avail, 5)
	other.Asset = "CREDITS"
	apply(t, s, other)

	t.Run("by key", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			for _, w := range []market.Transfer{want, wantHold} {
				got, err := tx.TransferByKey(ctx, w.Key)
				if err != nil {
					return err
				}
				diff(t, "TransferByKey", got, w)
			}
			_, err := tx.TransferByKey(ctx, "no-such-key")
			wantKind(t, "TransferByKey", err, market.NotFound)
			return nil
		})
	})

	t.Run("balances", func(t *testing.T) {
		diff(t, "Balances(GMT)", nonZero(balances(t, s, gmt)), map[market.LedgerAccount]market.Money{
			market.WorldAccount: -market.Tokens(100), avail: market.Tokens(85), escrow: market.Tokens(15),
		})
		diff(t, "Balances(CREDITS)", nonZero(balances(t, s, "CREDITS")), map[market.LedgerAccount]market.Money{
			market.WorldAccount: -5, avail: 5,
		})
		diff(t, "Balances(unknown asset)", nonZero(balances(t, s, "NONE")), map[market.LedgerAccount]market.Money{})
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			for _, tc := range []struct {
				acct  market.LedgerAccount
				asset market.Asset
				want  market.Money
			}{
				{avail, gmt, market.Tokens(85)},
				{market.WorldAccount, gmt, -market.Tokens(100)},
				{avail, "CREDITS", 5},
				{market.Available("a-nobody"), gmt, 0},
				{market.FeesAccount, gmt, 0},
			} {
				got, err := tx.Balance(ctx, tc.acct, tc.asset)
				if err != nil {
					return err
				}
				if got != tc.want {
					t.Errorf("Balance(%s, %s) = %s, want %s", tc.acct, tc.asset, got, tc.want)
				}
			}
			return nil
		})
	})
}

// testTransferFailures checks that every refused transfer writes nothing
// and leaves no gap in Seq.
func testTransferFailures(t *testing.T, s coord.Store) {
	alice, bob := market.AccountID("a-alice"), market.AccountID("a-bob")
	avail := market.Available(alice)
	first := apply(t, s, deposit(avail, market.Tokens(10)))

	dupKey := deposit(avail, 1)
	dupKey.Key = first.Key
	for _, tc := range []struct {
		name string
		tr   market.Transfer
		kind market.Kind
		msg  string // the error names the account short
	}{
		{"spends more than the balance", transfer(market.TransferHold, move(avail, market.Escrow(alice), market.Tokens(10)+1)...), market.InsufficientFunds,
			fmt.Sprintf("account %s holds", avail)},
		{"spends from an empty account", transfer(market.TransferHold, move(market.Available(bob), market.Escrow(bob), 1)...), market.InsufficientFunds,
			fmt.Sprintf("account %s holds", market.Available(bob))},
		{"second leg is short", transfer(market.TransferCharge,
			market.Entry{Account: avail, Amount: -market.Tokens(1)},
			market.Entry{Account: market.Escrow(bob), Amount: -1},
			market.Entry{Account: market.FeesAccount, Amount: market.Tokens(1) + 1},
		), market.InsufficientFunds, fmt.Sprintf("account %s holds", market.Escrow(bob))},
		{"does not sum to zero", transfer(market.TransferDeposit,
			market.Entry{Account: market.WorldAccount, Amount: -5},
			market.Entry{Account: avail, Amount: 6},
		), market.Invalid, ""},
		{"key used before", dupKey, market.Conflict, "was already used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tr.Kind == market.TransferCharge {
				tc.tr.Instance = "i-x"
			}
			before := balances(t, s, gmt)
			err := applyErr(t, s, tc.tr)
			wantKind(t, "ApplyTransfer", err, tc.kind)
			if !strings.Contains(fmt.Sprint(err), tc.msg) {
				t.Errorf("ApplyTransfer: %v; want it to say %q", err, tc.msg)
			}
			diff(t, "Balances after refusal", balances(t, s, gmt), before)
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				if tc.kind != market.Conflict {
					_, err := tx.TransferByKey(ctx, tc.tr.Key)
					wantKind(t, "TransferByKey of refused transfer", err, market.NotFound)
				}
				return nil
			})
			diff(t, "Seqs", seqs(allTransfers(t, s, "", 0, 0)), []int64{1})
		})
	}

	t.Run("world may go negative", func(t *testing.T) {
		got := apply(t, s, deposit(market.Available(bob), market.Tokens(1_000_000)))
		if got.Seq != 2 {
			t.Errorf("Seq after refusals = %d, want 2", got.Seq)
		}
	})

	t.Run("refusal leaves the transaction usable", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.ApplyTransfer(ctx, transfer(market.TransferHold, move(avail, market.Escrow(alice), market.Tokens(11))...))
			wantKind(t, "ApplyTransfer", err, market.InsufficientFunds)
			got, err := tx.ApplyTransfer(ctx, transfer(market.TransferHold, move(avail, market.Escrow(alice), market.Tokens(10))...))
			if got.Seq != 3 {
				t.Errorf("Seq = %d, want 3", got.Seq)
			}
			return err
		})
		diff(t, "Balances", nonZero(balances(t, s, gmt)), map[market.LedgerAccount]market.Money{
			market.WorldAccount:   -market.Tokens(1_000_010),
			market.Available(bob): market.Tokens(1_000_000),
			market.Escrow(alice):  market.Tokens(10),
		})
	})

	t.Run("rolled back transaction leaves no gap", func(t *testing.T) {
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
			if _, err := tx.ApplyTransfer(ctx, deposit(avail, 1)); err != nil {
				return err
			}
			return errBoom
		})
		if err != errBoom {
			t.Fatalf("Tx = %v, want errBoom", err)
		}
		got := apply(t, s, deposit(avail, 1))
		if got.Seq != 4 {
			t.Errorf("Seq = %d, want 4", got.Seq)
		}
		diff(t, "Seqs", seqs(allTransfers(t, s, "", 0, 0)), []int64{4, 3, 2, 1})
	})

	t.Run("refusal inside a step, gone past or undone", func(t *testing.T) {
		// The SQL stores set no savepoint for their own steps (a transfer
		// writes, then finds the balance short): a caller that goes on
		// after one must still find it undone alone, and its exact error.
		before := balances(t, s, gmt)
		short := func() market.Transfer {
			return transfer(market.TransferHold, move(avail, market.Escrow(alice), market.Tokens(5))...)
		}
		var kept market.Transfer
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			// A step goes past the refusal and succeeds.
			if err := tx.Atomic(ctx, func() error {
				_, err := tx.ApplyTransfer(ctx, short())
				wantKind(t, "ApplyTransfer in a step", err, market.InsufficientFunds)
				if !strings.Contains(fmt.Sprint(err), fmt.Sprintf("account %s holds", avail)) {
					t.Errorf("ApplyTransfer in a step: %v; want it to name %s", err, avail)
				}
				kept, err = tx.ApplyTransfer(ctx, deposit(avail, 2))
				return err
			}); err != nil {
				return err
			}
			// A step that wrote fails with the refusal: all of it undone.
			err := tx.Atomic(ctx, func() error {
				if _, err := tx.ApplyTransfer(ctx, deposit(avail, 3)); err != nil {
					return err
				}
				_, err := tx.ApplyTransfer(ctx, short())
				return err
			})
			wantKind(t, "Atomic", err, market.InsufficientFunds)
			return nil
		})
		if kept.Seq != 5 {
			t.Errorf("Seq = %d, want 5", kept.Seq)
		}
		diff(t, "Seqs", seqs(allTransfers(t, s, "", 0, 0)), []int64{5, 4, 3, 2, 1})
		before[avail] += 2
		before[market.WorldAccount] -= 2
		diff(t, "Balances", balances(t, s, gmt), before)
	})
}

func testCharges(t *testing.T, s coord.Store) {
	renter, host := market.AccountID("a-renter"), market.AccountID("a-host")
	apply(t, s, deposit(market.Escrow(renter), market.Tokens(10)))
	charge := func(inst market.InstanceID, minute int64) market.Transfer {
		tr := transfer(market.TransferCharge,
			market.Entry{Account: market.Escrow(renter), Amount: -1000},
			market.Entry{Account: market.Earnings(host), Amount: 900},
			market.Entry{Account: market.FeesAccount, Amount: 100},
		)
		tr.Instance, tr.Minute = inst, minute
		return tr
	}
	for _, m := range []int64{2, 0, 1} {
		apply(t, s, charge("i-one", m))
	}
	apply(t, s, charge("i-two", 1))

	err := applyErr(t, s, charge("i-one", 1))
	wantKind(t, "second charge of a minute", err, market.Conflict)

	// Only charges are unique per minute.
	for range 2 {
		rel := transfer(market.TransferRelease, move(market.Escrow(renter), market.Available(renter), 1)...)
		rel.Instance, rel.Minute = "i-one", 1
		apply(t, s, rel)
	}

	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		for _, tc := range []struct {
			id   market.InstanceID
			want []int64
		}{{"i-one", []int64{0, 1, 2}}, {"i-two", []int64{1}}, {"i-none", nil}} {
			got, err := tx.ChargedMinutes(ctx, tc.id)
			if err != nil {
				return err
			}
			if len(got) == 0 && len(tc.want) == 0 {
				continue
			}
			slices.Sort(got)
			diff(t, "ChargedMinutes("+string(tc.id)+")", got, tc.want)
		}
		return nil
	})
	diff(t, "Balances", nonZero(balances(t, s, gmt)), map[market.LedgerAccount]market.Money{
		market.WorldAccount:      -market.Tokens(10),
		market.Escrow(renter):    market.Tokens(10) - 4000 - 2,
		market.Available(renter): 2,
		market.Earnings(host):    3600,
		market.FeesAccount:       400,
	})
}

func testTransfersPagination(t *testing.T, s coord.Store) {
	a, b := market.AccountID("a-aaa"), market.AccountID("a-bbb")
	charge := transfer(market.TransferCharge,
		market.Entry{Account: market.Escrow(a), Amount: -100},
		market.Entry{Account: market.Earnings(b), Amount: 90},
		market.Entry{Account: market.FeesAccount, Amount: 10},
	)
	charge.Instance, charge.Minute, charge.Memo = "i-1", 3, "minute 3"
	var all []market.Transfer // by Seq
	for _, tr := range []market.Transfer{
		deposit(market.Available(a), 1000),                                                 // 1 a
		deposit(market.Available(b), 1000),                                                 // 2 b
		transfer(market.TransferHold, move(market.Available(a), market.Escrow(a), 500)...), // 3 a
		charge,                          // 4 a, b
		deposit(market.Available(b), 1), // 5 b
		deposit(market.Available(a), 1), // 6 a
		transfer(market.TransferHold, move(market.Available(b), market.Escrow(b), 5)...), // 7 b
	} {
		all = append(all, apply(t, s, tr))
	}
	pick := func(ss ...int64) []market.Transfer {
		var out []market.Transfer
		for _, q := range ss {
			out = append(out, all[q-1])
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		owner  market.AccountID
		before int64
		limit  int
		want   []market.Transfer
	}{
		{"all", "", 0, 0, pick(7, 6, 5, 4, 3, 2, 1)},
		{"all, limit", "", 0, 3, pick(7, 6, 5)},
		{"all, before", "", 3, 0, pick(2, 1)},
		{"owner a", a, 0, 0, pick(6, 4, 3, 1)},
		{"owner a, page 1", a, 0, 2, pick(6, 4)},
		{"owner a, page 2", a, 4, 2, pick(3, 1)},
		{"owner a, page 3", a, 1, 2, nil},
		{"owner b, before", b, 5, 0, pick(4, 2)},
		{"owner b, limit 1", b, 0, 1, pick(7)},
		{"unknown owner", "a-ccc", 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := allTransfers(t, s, tc.owner, tc.before, tc.limit)
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			diff(t, "Transfers", got, tc.want)
		})
	}
}

// testConcurrentSpending spends one balance from 50 goroutines at once.
func testConcurrentSpending(t *testing.T, s coord.Store) {
	const workers, start, price = 50, 100, 3
	alice := market.AccountID("a-alice")
	avail := market.Available(alice)
	apply(t, s, deposit(avail, start))
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		won int
	)
	for k := range workers {
		wg.Go(func() {
			tr := transfer(market.TransferCharge,
				market.Entry{Account: avail, Amount: -price},
				market.Entry{Account: market.FeesAccount, Amount: price},
			)
			tr.Instance, tr.Minute = "i-spend", int64(k)
			err := applyErr(t, s, tr)
			switch {
			case err == nil:
				mu.Lock()
				won++
				mu.Unlock()
			case !market.IsKind(err, market.InsufficientFunds):
				t.Errorf("worker %d: got %v, want nil or InsufficientFunds", k, err)
			}
		})
	}
	wg.Wait()
	if want := start / price; won != want {
		t.Errorf("%d spends succeeded, want %d", won, want)
	}
	diff(t, "Balances", nonZero(balances(t, s, gmt)), map[market.LedgerAccount]market.Money{
		market.WorldAccount: -start,
		avail:               start % price,
		market.FeesAccount:  start / price * price,
	})
	var wantSeqs []int64
	for q := int64(won + 1); q >= 1; q-- {
		wantSeqs = append(wantSeqs, q)
	}
	diff(t, "Seqs (gapless)", seqs(allTransfers(t, s, "", 0, 0)), wantSeqs)
}
