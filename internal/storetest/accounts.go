package storetest

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func testAccounts(t *testing.T, s coord.Store) {
	full := account("Alice.Smith@Example.COM")
	noRoles := account("bob@example.com")
	noRoles.Roles = nil
	emptyRoles := account("carol@example.com")
	emptyRoles.Roles = []market.Role{}
	for _, a := range []market.Account{full, noRoles, emptyRoles} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAccount(ctx, a) })
	}
	for _, tc := range []struct {
		name  string
		want  market.Account
		email string
	}{
		{"mixed case", full, full.Email},
		{"lower case lookup", full, strings.ToLower(full.Email)},
		{"upper case lookup", full, strings.ToUpper(full.Email)},
		{"nil roles", noRoles, noRoles.Email},
		{"empty roles", emptyRoles, emptyRoles.Email},
	} {
		t.Run(tc.name, func(t *testing.T) {
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Account(ctx, tc.want.ID)
				if err != nil {
					return err
				}
				diff(t, "Account", got, tc.want)
				got, err = tx.AccountByEmail(ctx, tc.email)
				if err != nil {
					return err
				}
				diff(t, "AccountByEmail", got, tc.want)
				return nil
			})
		})
	}
	t.Run("not found", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.Account(ctx, "a-missing")
			wantKind(t, "Account", err, market.NotFound)
			_, err = tx.AccountByEmail(ctx, "nobody@example.com")
			wantKind(t, "AccountByEmail", err, market.NotFound)
			return nil
		})
	})
}

func testAccountConflicts(t *testing.T, s coord.Store) {
	first := account("dave@example.com")
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAccount(ctx, first) })

	sameID := account("other@example.com")
	sameID.ID = first.ID
	for _, tc := range []struct {
		name string
		a    market.Account
	}{
		{"same email", account("dave@example.com")},
		{"email differs in case", account("DAVE@Example.com")},
		{"same id", sameID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAccount(ctx, tc.a) })
			wantKind(t, "InsertAccount", err, market.Conflict)
		})
	}

	t.Run("transaction usable after conflict", func(t *testing.T) {
		next := account("erin@example.com")
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			wantKind(t, "InsertAccount", tx.InsertAccount(ctx, account("Dave@example.com")), market.Conflict)
			return tx.InsertAccount(ctx, next)
		})
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.AccountByEmail(ctx, "dave@example.com")
			if err != nil {
				return err
			}
			diff(t, "first account", got, first)
			_, err = tx.Account(ctx, next.ID)
			return err
		})
	})
}

func testAPIKeys(t *testing.T, s coord.Store) {
	owner, other := addAccount(t, s), addAccount(t, s)
	key := func(owner market.AccountID, name string, created int) market.APIKey {
		return market.APIKey{
			ID:        market.APIKeyID(market.NewID(market.APIKeyPrefix)),
			Owner:     owner,
			Name:      name,
			Prefix:    "gm_" + name[:2],
			Hash:      []byte("sha256-of-" + name + "-" + market.RandomToken(8)),
			CreatedAt: at(created),
		}
	}
	live := key(owner, "laptop", 1)
	revoked := key(owner, "ci-runner", 2)
	revoked.RevokedAt = ptr(at(3))
	foreign := key(other, "theirs", 1)
	for _, k := range []market.APIKey{live, revoked, foreign} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAPIKey(ctx, k) })
	}

	t.Run("by hash", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			for _, want := range []market.APIKey{live, revoked, foreign} {
				got, err := tx.APIKeyByHash(ctx, want.Hash)
				if err != nil {
					return err
				}
				diff(t, "APIKeyByHash "+want.Name, got, want)
			}
			_, err := tx.APIKeyByHash(ctx, []byte("no such hash"))
			wantKind(t, "APIKeyByHash", err, market.NotFound)
			return nil
		})
	})

	t.Run("list by owner", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.APIKeys(ctx, owner)
			if err != nil {
				return err
			}
			sortKeys(got)
			want := []market.APIKey{live, revoked}
			sortKeys(want)
			diff(t, "APIKeys", got, want)
			got, err = tx.APIKeys(ctx, "a-nobody")
			if err != nil {
				return err
			}
			if len(got) != 0 {
				t.Errorf("APIKeys of unknown owner = %v, want none", got)
			}
			return nil
		})
	})

	t.Run("duplicate id", func(t *testing.T) {
		dup := key(owner, "dup", 4)
		dup.ID = live.ID
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAPIKey(ctx, dup) })
		wantKind(t, "InsertAPIKey", err, market.Conflict)
	})

	t.Run("revoke", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			owner market.AccountID
			id    market.APIKeyID
		}{
			{"another owner's key", other, live.ID},
			{"missing key", owner, "k-missing"},
		} {
			err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.RevokeAPIKey(ctx, tc.owner, tc.id, at(5)) })
			wantKind(t, "RevokeAPIKey "+tc.name, err, market.NotFound)
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.RevokeAPIKey(ctx, owner, live.ID, at(5)) })
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.APIKeyByHash(ctx, live.Hash)
			if err != nil {
				return err
			}
			want := live
			want.RevokedAt = ptr(at(5))
			diff(t, "revoked key", got, want)
			return nil
		})
	})
}

func sortKeys(ks []market.APIKey) {
	slices.SortFunc(ks, func(a, b market.APIKey) int { return strings.Compare(string(a.ID), string(b.ID)) })
}
