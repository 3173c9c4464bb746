package coord

import (
	"context"
	"fmt"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Assets. Besides the platform token (market.DefaultAsset) the ledger
// holds project tokens, for example the rewards of a DePIN project: an
// admin creates one and credits it (a deposit in that asset); a project
// pays hosts in it with PayHost. Every transfer is in one asset, and every
// invariant of the ledger check holds for each asset on its own.

// platformAsset describes the platform token, which is not stored.
var platformAsset = market.AssetInfo{Name: market.DefaultAsset, Kind: market.AssetPlatform, Description: "the platform token"}

// CreateAsset creates a project asset; admins only.
func (s *Service) CreateAsset(ctx context.Context, caller market.Account, req market.CreateAssetRequest) (market.AssetInfo, error) {
	const op = "create asset"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return market.AssetInfo{}, err
	}
	if err := market.CheckAssetName(req.Name); err != nil {
		return market.AssetInfo{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	if req.Name == market.DefaultAsset {
		return market.AssetInfo{}, market.Errorf(op, market.Conflict, "%s is the platform token", req.Name)
	}
	if len(req.Description) > 500 {
		return market.AssetInfo{}, market.Errorf(op, market.Invalid, "the description is %d bytes; keep it under 500", len(req.Description))
	}
	a := market.AssetInfo{Name: req.Name, Kind: market.AssetProject, Description: strings.TrimSpace(req.Description), CreatedAt: s.now()}
	err := s.store.Tx(ctx, func(tx Tx) error {
		if err := tx.InsertAsset(ctx, a); err != nil {
			return err
		}
		return tx.AppendEvent(ctx, market.Event{At: a.CreatedAt, Type: "asset.created", Account: caller.ID, Message: fmt.Sprintf("project asset %s created by %s", a.Name, caller.Email)})
	})
	return a, err
}

// Assets lists the platform token and the project assets.
func (s *Service) Assets(ctx context.Context) ([]market.AssetInfo, error) {
	out := []market.AssetInfo{platformAsset}
	err := s.store.Tx(ctx, func(tx Tx) error {
		as, err := tx.Assets(ctx)
		out = append(out, as...)
		return err
	})
	return out, err
}

// assetNames lists every asset's name, the platform token first.
func assetNames(ctx context.Context, tx Tx) ([]market.Asset, error) {
	as, err := tx.Assets(ctx)
	names := []market.Asset{market.DefaultAsset}
	for _, a := range as {
		names = append(names, a.Name)
	}
	return names, err
}

// checkAsset returns NotFound unless a names the platform token or a
// project asset.
func (s *Service) checkAsset(ctx context.Context, tx Tx, a market.Asset) error {
	if a == market.DefaultAsset {
		return nil
	}
	as, err := tx.Assets(ctx)
	if err != nil {
		return err
	}
	for _, x := range as {
		if x.Name == a {
			return nil
		}
	}
	return market.Errorf("asset", market.NotFound, "no asset %s; see `gpumarket admin asset list`, or create it with `gpumarket admin asset create`", a)
}

// PayHost pays a host in any asset: Amount of req.Asset moves from the
// payer's available balance to the host's earnings in that asset, once per
// idempotency key. It is how a project (for example a deployment's owner)
// rewards hosts in its project token: earnings in a project asset are the
// host's, listed per asset by `wallet show`.
func (s *Service) PayHost(ctx context.Context, payer market.Account, key string, req market.PayRequest) (market.Transfer, error) {
	const op = "pay host"
	return idempotent(ctx, s, payer, op, key, req, func(tx Tx) (market.Transfer, error) {
		return s.payHost(ctx, tx, payer.ID, key, req)
	})
}

func (s *Service) payHost(ctx context.Context, tx Tx, payer market.AccountID, key string, req market.PayRequest) (market.Transfer, error) {
	const op = "pay host"
	switch {
	case req.Amount <= 0:
		return market.Transfer{}, market.Errorf(op, market.Invalid, "pay an amount above zero, not %s", req.Amount)
	case req.Host == "" || req.Host == payer:
		return market.Transfer{}, market.Errorf(op, market.Invalid, "say which host to pay (not yourself)")
	}
	if req.Asset == "" {
		req.Asset = market.DefaultAsset
	}
	if err := s.checkAsset(ctx, tx, req.Asset); err != nil {
		return market.Transfer{}, err
	}
	if _, err := tx.Account(ctx, req.Host); err != nil {
		return market.Transfer{}, err
	}
	now := s.now()
	memo := req.Memo
	if memo == "" {
		memo = fmt.Sprintf("payment from %s", payer)
	}
	t, err := tx.ApplyTransfer(ctx, market.Transfer{
		ID: market.TransferID(market.NewID(market.TransferPrefix)), Key: "pay:" + string(payer) + ":" + key, Kind: market.TransferPayment, Asset: req.Asset,
		Entries:  []market.Entry{{Account: market.Available(payer), Amount: -req.Amount}, {Account: market.Earnings(req.Host), Amount: req.Amount}},
		Instance: req.Instance, Memo: memo, At: now,
	})
	if err != nil {
		return t, err
	}
	return t, tx.AppendEvent(ctx, market.Event{At: now, Type: "wallet.payment", Account: req.Host, Instance: req.Instance,
		Message: fmt.Sprintf("paid %s %s by %s", req.Amount, req.Asset, payer)})
}

// assetBalances is a user's balances in every project asset it holds.
func assetBalances(ctx context.Context, tx Tx, user market.AccountID) ([]market.AssetBalances, error) {
	names, err := assetNames(ctx, tx)
	if err != nil {
		return nil, err
	}
	var out []market.AssetBalances
	for _, a := range names[1:] {
		bs, err := tx.BalancesOf(ctx, a, []market.LedgerAccount{market.Available(user), market.Escrow(user), market.Earnings(user)})
		if err != nil {
			return nil, err
		}
		b := market.AssetBalances{Asset: a, Available: bs[market.Available(user)], Escrow: bs[market.Escrow(user)], Earnings: bs[market.Earnings(user)]}
		if b.Available != 0 || b.Escrow != 0 || b.Earnings != 0 {
			out = append(out, b)
		}
	}
	return out, nil
}
