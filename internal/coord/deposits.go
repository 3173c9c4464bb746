package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Deposit sources. Money enters the ledger only as a deposit: a transfer
// from the world account to a user's available balance, keyed by where it
// came from, so that a deposit seen twice (a retried call, a watcher that
// re-reads after a crash) is credited once.
//
// Two kinds of source feed it. The built-in one is the admin credit: an
// admin calls `wallet deposit` (POST /api/v1/wallet/deposit) with an
// Idempotency-Key, and Deposit credits it as source "admin" with the key as
// its reference. Others watch something outside (a blockchain, a payment
// processor) and implement DepositSource; RunDepositSource polls one and
// credits what it reports through CreditDeposit.
//
// Adding an on-chain watcher: implement Poll to return the transfers to
// the platform's deposit address confirmed since the cursor (a block
// height), with Ref = transaction hash and log index (unique and stable),
// Account = the user the deposit address or memo belongs to, Amount in
// micro-units of Asset; return the new cursor. Start it in `serve` with
// go svc.RunDepositSource(ctx, watcher, interval). The cursor lives in
// memory: after a restart the watcher starts again from "" (or from a
// position it keeps itself) and re-reported deposits are not credited again.

// ExternalDeposit is money that arrived outside the ledger for a user.
type ExternalDeposit struct {
	// Source names the source ("admin", "eth-mainnet"); Ref identifies the
	// deposit within it. Together they make the deposit's key: the same
	// (Source, Ref) is credited once.
	Source  string
	Ref     string
	Account market.AccountID
	Asset   market.Asset // "" = the platform token
	Amount  market.Money
	Memo    string
}

// DepositSource reports deposits made outside the ledger.
type DepositSource interface {
	// Name names the source in the deposits' keys; it must not change.
	Name() string
	// Poll returns the deposits seen after cursor ("" = from the start)
	// and the cursor to pass next time. It may return a deposit again.
	Poll(ctx context.Context, cursor string) (deposits []ExternalDeposit, next string, err error)
}

// depositKey is the transfer key of a deposit: "deposit:REF" for the admin
// source (the key admin deposits always had), "deposit:SOURCE:REF" for the
// others.
func depositKey(source, ref string) string {
	if source == "admin" {
		return "deposit:" + ref
	}
	return "deposit:" + source + ":" + ref
}

// CreditDeposit credits d to its account once: a deposit with the same
// source and reference credited before returns that transfer, and Conflict
// if it differs (another account or amount).
func (s *Service) CreditDeposit(ctx context.Context, d ExternalDeposit) (market.Transfer, error) {
	var out market.Transfer
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		out, err = s.creditDeposit(ctx, tx, d)
		return err
	})
	return out, err
}

func (s *Service) creditDeposit(ctx context.Context, tx Tx, d ExternalDeposit) (market.Transfer, error) {
	const op = "deposit"
	switch {
	case d.Amount <= 0:
		return market.Transfer{}, market.Errorf(op, market.Invalid, "deposit amount must be above zero, got %s", d.Amount)
	case d.Source == "" || d.Ref == "" || strings.ContainsAny(d.Source, ": "):
		return market.Transfer{}, market.Errorf(op, market.Invalid, "a deposit needs a source name (no ':' or spaces) and a reference, got %q and %q", d.Source, d.Ref)
	case d.Account == "":
		return market.Transfer{}, market.Errorf(op, market.Invalid, "say whose account to credit")
	}
	if d.Asset == "" {
		d.Asset = market.DefaultAsset
	}
	if err := s.checkAsset(ctx, tx, d.Asset); err != nil {
		return market.Transfer{}, err
	}
	if _, err := tx.Account(ctx, d.Account); err != nil {
		return market.Transfer{}, err
	}
	want := market.Transfer{
		ID: market.TransferID(market.NewID(market.TransferPrefix)), Key: depositKey(d.Source, d.Ref), Kind: market.TransferDeposit, Asset: d.Asset,
		Entries: []market.Entry{{Account: market.WorldAccount, Amount: -d.Amount}, {Account: market.Available(d.Account), Amount: d.Amount}},
		Memo:    d.Memo, At: s.now(),
	}
	prev, err := tx.TransferByKey(ctx, want.Key)
	switch {
	case err == nil:
		if !slices.Equal(prev.Entries, want.Entries) || prev.Asset != want.Asset {
			return market.Transfer{}, market.Errorf(op, market.Conflict, "deposit %s of source %s was credited before with other amounts or account; use a new reference", d.Ref, d.Source)
		}
		return prev, nil
	case !market.IsKind(err, market.NotFound):
		return market.Transfer{}, err
	}
	t, err := tx.ApplyTransfer(ctx, want)
	if err != nil {
		return t, err
	}
	return t, tx.AppendEvent(ctx, market.Event{At: t.At, Type: "wallet.deposit", Account: d.Account,
		Message: fmt.Sprintf("deposit of %s %s from %s (%s)", d.Amount, d.Asset, d.Source, d.Ref)})
}

// PollDeposits runs one poll of src from cursor and credits what it
// reports; it returns the next cursor and how many deposits were new.
// A deposit it cannot credit (an unknown account) is logged and skipped,
// so that one bad deposit does not stop the others; the cursor still
// moves on, and the operator sees the log line.
func (s *Service) PollDeposits(ctx context.Context, src DepositSource, cursor string) (next string, credited int, err error) {
	ds, next, err := src.Poll(ctx, cursor)
	if err != nil {
		return cursor, 0, fmt.Errorf("poll deposit source %s: %w", src.Name(), err)
	}
	for _, d := range ds {
		d.Source = src.Name()
		before := false
		err := s.store.Tx(ctx, func(tx Tx) error {
			_, err := tx.TransferByKey(ctx, depositKey(d.Source, d.Ref))
			before = err == nil
			return nil
		})
		if err != nil {
			return cursor, credited, err
		}
		if _, err := s.CreditDeposit(ctx, d); err != nil {
			if !market.IsKind(err, market.Invalid) && !market.IsKind(err, market.NotFound) && !market.IsKind(err, market.Conflict) {
				return cursor, credited, err // try this poll again
			}
			s.log.Error("deposit not credited", "source", d.Source, "ref", d.Ref, "account", d.Account, "amount", d.Amount.String(), "err", err)
			continue
		}
		if !before {
			credited++
		}
	}
	return next, credited, nil
}

// RunDepositSource polls src every interval (real time) until ctx ends.
func (s *Service) RunDepositSource(ctx context.Context, src DepositSource, every time.Duration) error {
	cursor := ""
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		next, n, err := s.PollDeposits(ctx, src, cursor)
		switch {
		case err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled):
			s.log.Warn("deposit source", "source", src.Name(), "err", err)
		case n > 0:
			s.log.Info("deposits credited", "source", src.Name(), "count", n)
		}
		cursor = next
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
