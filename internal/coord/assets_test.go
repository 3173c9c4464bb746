package coord_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// TestProjectAssets creates a project asset, credits it and pays a host in
// it: balances per asset, and every invariant per asset.
func TestProjectAssets(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	for _, tc := range []struct {
		name   string
		caller market.Account
		req    market.CreateAssetRequest
		kind   market.Kind
		msg    string
	}{
		{"not an admin", e.renter, market.CreateAssetRequest{Name: "DPN"}, market.Forbidden, "admin"},
		{"lower case", e.admin, market.CreateAssetRequest{Name: "dpn"}, market.Invalid, "capital letters"},
		{"too long", e.admin, market.CreateAssetRequest{Name: "ABCDEFGHIJKLM"}, market.Invalid, "2 to 12"},
		{"the platform token", e.admin, market.CreateAssetRequest{Name: market.DefaultAsset}, market.Conflict, "platform token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.CreateAsset(e.ctx, tc.caller, tc.req)
			wantKind(t, err, tc.kind, tc.msg)
		})
	}
	must(e.svc.CreateAsset(e.ctx, e.admin, market.CreateAssetRequest{Name: "DPN", Description: "DePIN rewards"}))
	_, err := e.svc.CreateAsset(e.ctx, e.admin, market.CreateAssetRequest{Name: "DPN"})
	wantKind(t, err, market.Conflict, "exists")
	if as := must(e.svc.Assets(e.ctx)); len(as) != 2 || as[0].Name != market.DefaultAsset || as[1].Name != "DPN" {
		t.Errorf("assets = %+v", as)
	}

	_, err = e.svc.Deposit(e.ctx, e.admin, "d-x", market.DepositRequest{Account: e.renter.ID, Asset: "NOPE", Amount: 5})
	wantKind(t, err, market.NotFound, "no asset NOPE")
	must(e.svc.Deposit(e.ctx, e.admin, "d-1", market.DepositRequest{Account: e.renter.ID, Asset: "DPN", Amount: market.Tokens(1000)}))
	before := e.wallet(e.renter)
	must(e.svc.PayHost(e.ctx, e.renter, "p-1", market.PayRequest{Host: e.host.ID, Asset: "DPN", Amount: market.Tokens(250)}))
	must(e.svc.PayHost(e.ctx, e.renter, "p-1", market.PayRequest{Host: e.host.ID, Asset: "DPN", Amount: market.Tokens(250)})) // a retry
	_, err = e.svc.PayHost(e.ctx, e.renter, "p-2", market.PayRequest{Host: e.host.ID, Asset: "DPN", Amount: market.Tokens(751)})
	wantKind(t, err, market.InsufficientFunds, "DPN")

	w := e.wallet(e.renter)
	if w.Available != before.Available || len(w.Assets) != 1 || w.Assets[0].Asset != "DPN" || w.Assets[0].Available != market.Tokens(750) {
		t.Errorf("renter wallet = %+v; want GMT unchanged and 750 DPN", w)
	}
	if h := e.wallet(e.host); len(h.Assets) != 1 || h.Assets[0].Earnings != market.Tokens(250) || h.Earnings != 0 {
		t.Errorf("host wallet = %+v; want 250 DPN earned, no GMT", h)
	}
	e.check()
	err = e.store.Tx(e.ctx, func(tx coord.Tx) error {
		ctx := context.Background()
		b, err := tx.Balances(ctx, "DPN")
		var sum market.Money
		for _, v := range b {
			sum += v
		}
		if sum != 0 || b[market.WorldAccount] != -market.Tokens(1000) {
			t.Errorf("DPN balances %v: sum %s, world %s", b, sum, b[market.WorldAccount])
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestProjectTokenEarningsAndWithdrawals: a host paid in a project token
// sees it under its asset in history and earnings, and withdraws it after
// the same settlement delay and through the same queue as the platform
// token; each asset's withdrawal hold balances on its own.
func TestProjectTokenEarningsAndWithdrawals(t *testing.T) {
	e := newEnvConfig(t, shortMoney) // settlement 30 min, minimum 0.01
	must(e.svc.CreateAsset(e.ctx, e.admin, market.CreateAssetRequest{Name: "DPN"}))
	must(e.svc.Deposit(e.ctx, e.admin, "d-1", market.DepositRequest{Account: e.renter.ID, Asset: "DPN", Amount: market.Tokens(1000)}))
	e.earn(2, 3*time.Minute) // 3 minutes of 2 GPUs at 0.60 per GPU-hour: 0.06 charged, 0.054 earned
	must(e.svc.PayHost(e.ctx, e.renter, "p-1", market.PayRequest{Host: e.host.ID, Asset: "DPN", Amount: market.Tokens(250)}))

	hist := must(e.svc.History(e.ctx, e.host, 0, 0))
	assets := map[market.TransferKind]market.Asset{}
	for _, h := range hist {
		assets[h.Kind] = h.Asset
	}
	if want := map[market.TransferKind]market.Asset{market.TransferPayment: "DPN", market.TransferCharge: market.DefaultAsset}; !maps.Equal(assets, want) {
		t.Errorf("history assets by kind = %v, want %v", assets, want)
	}

	r := must(e.svc.Earnings(e.ctx, e.host))
	want := []market.AssetEarnings{
		{Asset: market.DefaultAsset, Total: 54_000, Pending: 54_000},
		{Asset: "DPN", Total: market.Tokens(250), Pending: market.Tokens(250)},
	}
	if diff := cmp.Diff(want, r.Assets); diff != "" {
		t.Errorf("earnings per asset right after earning (-want +got):\n%s", diff)
	}
	if len(r.Machines) != 1 || r.Machines[0].Minutes != 3 || r.Machines[0].GPUMinutes != 6 || r.Days[0].GPUMinutes != 6 {
		t.Errorf("minutes: machines %+v days %+v; want 3 instance-minutes, 6 GPU-minutes", r.Machines, r.Days)
	}

	for _, tc := range []struct {
		name string
		req  market.WithdrawRequest
		kind market.Kind
		msg  string
	}{
		{"unsettled", market.WithdrawRequest{Asset: "DPN", Amount: market.Tokens(100)}, market.InsufficientFunds, "withdraw 0.00 DPN now; 250.00 more is pending"},
		{"unknown asset", market.WithdrawRequest{Asset: "NOPE", Amount: market.Tokens(1)}, market.NotFound, "no asset NOPE"},
		{"below the minimum", market.WithdrawRequest{Asset: "DPN", Amount: 5_000}, market.Invalid, "smallest withdrawal is 0.01 DPN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Withdraw(e.ctx, e.host, "w-"+tc.name, tc.req)
			wantKind(t, err, tc.kind, tc.msg)
		})
	}

	e.advance(31 * time.Minute)
	_, err := e.svc.Withdraw(e.ctx, e.host, "w-big", market.WithdrawRequest{Asset: "DPN", Amount: market.Tokens(251)})
	wantKind(t, err, market.InsufficientFunds, "withdraw 250.00 DPN now")
	w1 := must(e.svc.Withdraw(e.ctx, e.host, "w-1", market.WithdrawRequest{Asset: "DPN", Amount: market.Tokens(100)}))
	w2 := must(e.svc.Withdraw(e.ctx, e.host, "w-2", market.WithdrawRequest{Asset: "DPN", Amount: market.Tokens(50)}))
	w3 := must(e.svc.Withdraw(e.ctx, e.host, "w-3", market.WithdrawRequest{Amount: 20_000}))
	if w1.Asset != "DPN" || w3.Asset != market.DefaultAsset {
		t.Errorf("withdrawal assets %s and %s, want DPN and %s", w1.Asset, w3.Asset, market.DefaultAsset)
	}
	e.check() // DPN and GMT withdrawals pending: each hold matches its own asset
	r = must(e.svc.Earnings(e.ctx, e.host))
	want = []market.AssetEarnings{
		{Asset: market.DefaultAsset, Total: 34_000, Withdrawable: 34_000, Withdrawing: 20_000},
		{Asset: "DPN", Total: market.Tokens(100), Withdrawable: market.Tokens(100), Withdrawing: market.Tokens(150)},
	}
	if diff := cmp.Diff(want, r.Assets); diff != "" {
		t.Errorf("earnings per asset after withdrawing (-want +got):\n%s", diff)
	}

	must(e.svc.CompleteWithdrawal(e.ctx, e.admin, "c-1", w1.ID))
	must(e.svc.RejectWithdrawal(e.ctx, e.admin, "r-2", w2.ID, "no DPN bridge yet"))
	e.check()
	h := e.wallet(e.host)
	if len(h.Assets) != 1 || h.Assets[0].Earnings != market.Tokens(150) {
		t.Errorf("host DPN after one payout of 100 and one rejected 50: %+v; want 150 earnings", h.Assets)
	}
	err = e.store.Tx(e.ctx, func(tx coord.Tx) error {
		b, err := tx.Balances(context.Background(), "DPN")
		if b[market.WorldAccount] != -market.Tokens(900) || b[market.Withdrawing(e.host.ID)] != 0 {
			t.Errorf("DPN world %s, withdrawal hold %s; want -900 (1000 in, 100 paid out) and 0", b[market.WorldAccount], b[market.Withdrawing(e.host.ID)])
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
