package coord_test

import (
	"context"
	"testing"

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
