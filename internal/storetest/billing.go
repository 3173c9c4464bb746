package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// testApplyTransfers checks the batch form of ApplyTransfer: consecutive
// sequence numbers, net balance changes, and all or nothing.
func testApplyTransfers(t *testing.T, s coord.Store) {
	a, b := market.AccountID("a-a"), market.AccountID("a-b")
	apply(t, s, deposit(market.Available(a), 1000))
	batch := []market.Transfer{
		deposit(market.Available(b), 500),
		transfer(market.TransferHold, move(market.Available(a), market.Escrow(a), 700)...),
		transfer(market.TransferHold, move(market.Available(a), market.Escrow(a), 300)...), // takes a to 0: fine net
		transfer(market.TransferRelease, move(market.Escrow(a), market.Available(a), 100)...),
	}
	var got []market.Transfer
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		got, err = tx.ApplyTransfers(ctx, batch)
		return err
	})
	diff(t, "Seqs", seqs(got), []int64{2, 3, 4, 5})
	diff(t, "Balances", nonZero(balances(t, s, gmt)), map[market.LedgerAccount]market.Money{
		market.WorldAccount: -1500,
		market.Available(a): 100,
		market.Escrow(a):    900,
		market.Available(b): 500,
	})
	diff(t, "stored transfers", seqs(allTransfers(t, s, "", 0, 0)), []int64{5, 4, 3, 2, 1})

	for _, tc := range []struct {
		name  string
		batch []market.Transfer
		kind  market.Kind
	}{
		{"net overdraft", []market.Transfer{
			transfer(market.TransferHold, move(market.Available(a), market.Escrow(a), 60)...),
			transfer(market.TransferHold, move(market.Available(a), market.Escrow(a), 60)...),
		}, market.InsufficientFunds},
		{"empty account", []market.Transfer{transfer(market.TransferHold, move(market.Available("a-none"), market.Escrow("a-none"), 1)...)}, market.InsufficientFunds},
		{"a key twice", func() []market.Transfer {
			d := deposit(market.Available(b), 1)
			return []market.Transfer{d, d}
		}(), market.Conflict},
		{"a key used before", func() []market.Transfer {
			d := deposit(market.Available(b), 1)
			d.Key = got[0].Key
			return []market.Transfer{deposit(market.Available(b), 1), d}
		}(), market.Conflict},
		{"unbalanced", []market.Transfer{transfer(market.TransferDeposit, market.Entry{Account: market.WorldAccount, Amount: -1}, market.Entry{Account: market.Available(a), Amount: 2})}, market.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := balances(t, s, gmt)
			err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
				_, err := tx.ApplyTransfers(ctx, tc.batch)
				return err
			})
			wantKind(t, "ApplyTransfers", err, tc.kind)
			diff(t, "Balances after refusal", balances(t, s, gmt), before)
			diff(t, "Seqs after refusal", seqs(allTransfers(t, s, "", 0, 0)), []int64{5, 4, 3, 2, 1})
		})
	}
}

// testApplyCharges checks charges batches and minute records: a minute is
// charged once whether by a charge or a batch, and the records list it.
func testApplyCharges(t *testing.T, s coord.Store) {
	r1, r2, host := market.AccountID("a-r1"), market.AccountID("a-r2"), market.AccountID("a-host")
	apply(t, s, deposit(market.Available(r1), 1000))
	apply(t, s, deposit(market.Escrow(r2), 1000))
	single := transfer(market.TransferCharge,
		market.Entry{Account: market.Available(r1), Amount: -100},
		market.Entry{Account: market.Earnings(host), Amount: 90},
		market.Entry{Account: market.FeesAccount, Amount: 10},
	)
	single.Instance, single.Minute = "i-1", 0
	apply(t, s, single) // seq 3
	cs := []market.MinuteCharge{
		{Instance: "i-1", Minute: 1, From: market.Available(r1), Host: host, Amount: 100, Fee: 10, At: at(1)},
		{Instance: "i-2", Minute: 0, From: market.Escrow(r2), Host: host, Amount: 50, Fee: 5, At: at(1)},
	}
	batch := transfer(market.TransferCharges,
		market.Entry{Account: market.Available(r1), Amount: -100},
		market.Entry{Account: market.Escrow(r2), Amount: -50},
		market.Entry{Account: market.Earnings(host), Amount: 135},
		market.Entry{Account: market.FeesAccount, Amount: 15},
	)
	var got market.Transfer
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		got, err = tx.ApplyCharges(ctx, batch, cs)
		return err
	})
	if got.Seq != 4 {
		t.Errorf("batch Seq = %d, want 4", got.Seq)
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		all, err := tx.MinuteCharges(ctx, coord.ChargeFilter{})
		if err != nil {
			return err
		}
		diff(t, "MinuteCharges", all, []market.MinuteCharge{
			{Instance: "i-1", Minute: 0, Transfer: 3, From: market.Available(r1), Host: host, Amount: 100, Fee: 10, At: at(0)},
			{Instance: "i-1", Minute: 1, Transfer: 4, From: market.Available(r1), Host: host, Amount: 100, Fee: 10, At: at(1)},
			{Instance: "i-2", Minute: 0, Transfer: 4, From: market.Escrow(r2), Host: host, Amount: 50, Fee: 5, At: at(1)},
		})
		one, err := tx.MinuteCharges(ctx, coord.ChargeFilter{Instance: "i-1", Transfers: []int64{4}})
		if err != nil {
			return err
		}
		if len(one) != 1 || one[0].Minute != 1 {
			t.Errorf("MinuteCharges(i-1, transfer 4) = %+v, want minute 1", one)
		}
		mins, err := tx.ChargedMinutes(ctx, "i-1")
		diff(t, "ChargedMinutes(i-1)", mins, []int64{0, 1})
		return err
	})

	before := balances(t, s, gmt)
	again := transfer(market.TransferCharges, batch.Entries...)
	err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
		_, err := tx.ApplyCharges(ctx, again, cs[1:])
		return err
	})
	wantKind(t, "a batch charging a charged minute", err, market.Conflict)
	dup := single
	dup.ID, dup.Key, dup.Minute = "t-dup", "key-dup", 1
	wantKind(t, "a charge of a minute a batch charged", applyErr(t, s, dup), market.Conflict)
	diff(t, "Balances after refusals", balances(t, s, gmt), before)
	diff(t, "Seqs after refusals", seqs(allTransfers(t, s, "", 0, 0)), []int64{4, 3, 2, 1})
}

// testBillingRows checks the billing tick's narrow reads and writes.
func testBillingRows(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 4)
	started := at(0)
	var ids []market.InstanceID
	for g, state := range []market.InstanceState{market.InstanceRunning, market.InstanceRunning, market.InstancePending} {
		i := instance(w.renter, w.machine, g)
		i.State, i.PricePerHour, i.Escrow = state, 600_000, 600_000
		if state == market.InstanceRunning {
			i.StartedAt = &started
		}
		addInstance(t, s, i)
		if state == market.InstanceRunning {
			ids = append(ids, i.ID)
		}
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		rows, err := tx.BillableInstances(ctx, "", 0)
		if err != nil {
			return err
		}
		if len(rows) != 2 {
			t.Fatalf("BillableInstances = %d rows, want the 2 started", len(rows))
		}
		for _, r := range rows {
			if r.Host != w.host || r.Renter != w.renter || r.Escrow != 600_000 || !r.StartedAt.Equal(started) || !r.StopAt.IsZero() || r.PricePerHour != 600_000 || r.State != market.InstanceRunning {
				t.Errorf("billing row = %+v", r)
			}
		}
		if rows[0].ID > rows[1].ID {
			t.Errorf("rows not ordered by ID: %s, %s", rows[0].ID, rows[1].ID)
		}
		page, err := tx.BillableInstances(ctx, rows[0].ID, 10)
		if err != nil {
			return err
		}
		if len(page) != 1 || page[0].ID != rows[1].ID {
			t.Errorf("page after %s = %+v", rows[0].ID, page)
		}
		return tx.RecordBilling(ctx, []coord.BillingUpdate{{Instance: ids[0], FromMins: 0, BilledMins: 2, Charged: 20_000, Escrow: 590_000}})
	})
	err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.RecordBilling(ctx, []coord.BillingUpdate{
			{Instance: ids[1], FromMins: 0, BilledMins: 1, Charged: 10_000, Escrow: 600_000},
			{Instance: ids[0], FromMins: 0, BilledMins: 3, Charged: 30_000, Escrow: 590_000}, // stale: it is at 2
		})
	})
	wantKind(t, "RecordBilling with a stale instance", err, market.Conflict)
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		for k, want := range []int64{2, 0} {
			i, err := tx.Instance(ctx, ids[k])
			if err != nil {
				return err
			}
			if i.BilledMins != want {
				t.Errorf("instance %d billed %d minutes, want %d (a refused batch writes nothing)", k, i.BilledMins, want)
			}
		}
		return nil
	})
	apply(t, s, deposit(market.Available(w.renter), 42))
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.BalancesOf(ctx, gmt, []market.LedgerAccount{market.Available(w.renter), market.Escrow("a-nobody")})
		diff(t, "BalancesOf", got, map[market.LedgerAccount]market.Money{market.Available(w.renter): 42})
		return err
	})
}

// testRefundsAssetsLimits checks the rows of refunds, project assets and
// spend limits.
func testRefundsAssetsLimits(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 2)
	i := instance(w.renter, w.machine, 0)
	addInstance(t, s, i)
	tr := apply(t, s, deposit(market.Available(w.renter), 100))
	r := market.Refund{ID: "r-1", Instance: i.ID, Renter: w.renter, Host: w.host, FromMinute: 2, ToMinute: 5, Minutes: 3, Asset: gmt,
		Amount: 30, FromHost: 27, FromPlatform: 3, Reason: "down", By: "a-admin", TransferSeq: tr.Seq, At: at(1)}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertRefund(ctx, r) })
	err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertRefund(ctx, r) })
	wantKind(t, "second InsertRefund", err, market.Conflict)
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		for _, f := range []coord.RefundFilter{{}, {Instance: i.ID}, {Renter: w.renter}} {
			got, err := tx.Refunds(ctx, f)
			if err != nil {
				return err
			}
			diff(t, "Refunds", got, []market.Refund{r})
		}
		none, err := tx.Refunds(ctx, coord.RefundFilter{Renter: w.host})
		if len(none) != 0 {
			t.Errorf("refunds of another renter: %+v", none)
		}
		return err
	})

	a := market.AssetInfo{Name: "DPN", Kind: market.AssetProject, Description: "rewards", CreatedAt: at(0)}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAsset(ctx, a) })
	err = try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAsset(ctx, a) })
	wantKind(t, "second InsertAsset", err, market.Conflict)
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Assets(ctx)
		diff(t, "Assets", got, []market.AssetInfo{a})
		return err
	})

	err = try(t, s, func(ctx context.Context, tx coord.Tx) error {
		_, err := tx.SpendLimit(ctx, w.renter)
		return err
	})
	wantKind(t, "SpendLimit before any", err, market.NotFound)
	l := coord.SpendLimit{Account: w.renter, Limits: market.SpendLimits{MaxPerHour: 5, AlertAt: 3, Webhook: "https://example.com/x"}, UpdatedAt: at(0)}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.PutSpendLimit(ctx, l) })
	l.AlertedAt, l.Limits.MaxPerHour = at(2), 0
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.PutSpendLimit(ctx, l) })
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.SpendLimit(ctx, w.renter)
		if err != nil {
			return err
		}
		diff(t, "SpendLimit", got, l)
		of, err := tx.SpendLimitsOf(ctx, []market.AccountID{"a-none", w.renter, w.host})
		if err != nil {
			return err
		}
		diff(t, "SpendLimitsOf", of, map[market.AccountID]coord.SpendLimit{w.renter: l})
		if of, err = tx.SpendLimitsOf(ctx, nil); err != nil || len(of) != 0 {
			t.Errorf("SpendLimitsOf no account = %v, %v; want none", of, err)
		}
		alerts, err := tx.SpendAlerts(ctx)
		diff(t, "SpendAlerts", alerts, []coord.SpendLimit{l})
		return err
	})
}

func testIdempotencyOf(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 1)
	rec := func(a market.AccountID, key string) coord.IdemRecord {
		return coord.IdemRecord{Account: a, Key: key, Op: "create instance", RequestHash: "h-" + key, Response: []byte(`{"id":"i-1"}`), CreatedAt: at(1)}
	}
	renterK1, hostK2 := rec(w.renter, "k1"), rec(w.host, "k2")
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		if err := tx.InsertIdempotency(ctx, renterK1); err != nil {
			return err
		}
		return tx.InsertIdempotency(ctx, hostK2)
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		// The renter never used k2, nor the host k1: the pairs count.
		key := func(a market.AccountID, k string) coord.IdemKey { return coord.IdemKey{Account: a, Key: k} }
		got, err := tx.IdempotencyOf(ctx, []coord.IdemKey{key(w.renter, "k1"), key(w.renter, "k2"), key(w.host, "k1"), key(w.host, "k2"), key("a-none", "k1")})
		diff(t, "IdempotencyOf", got, map[coord.IdemKey]coord.IdemRecord{key(w.renter, "k1"): renterK1, key(w.host, "k2"): hostK2})
		if err != nil {
			return err
		}
		if err != nil {
			return err
		}
		// More keys than one statement looks up.
		var many []coord.IdemKey
		for k := range 600 {
			many = append(many, key(w.renter, fmt.Sprintf("none-%d", k)))
			if k == 300 {
				many = append(many, key(w.host, "k2"), key(w.renter, "k1"))
			}
		}
		got, err = tx.IdempotencyOf(ctx, many)
		diff(t, "IdempotencyOf (many keys)", got, map[coord.IdemKey]coord.IdemRecord{key(w.renter, "k1"): renterK1, key(w.host, "k2"): hostK2})
		if err != nil {
			return err
		}
		one, err := tx.Idempotency(ctx, w.renter, "k1")
		diff(t, "Idempotency", one, renterK1)
		return err
	})
}
