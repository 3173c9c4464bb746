package storetest

import (
	"context"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Reruns checks a store that sets no savepoint for its own steps and runs
// a transaction again when its caller goes on after one of them failed
// (the SQL stores): that happens only then, and the caller sees the same
// answer in both runs. reruns counts the store's reruns so far.
func Reruns(t *testing.T, s coord.Store, reruns func() int64) {
	missing := market.Instance{ID: "i-missing", Renter: "a-none", Machine: "m-none", GPUs: []int{0}, State: market.InstancePending}
	run := func(fn func(ctx context.Context, tx coord.Tx) error) (calls int, again int64, err error) {
		ctx := t.Context()
		before := reruns()
		err = s.Tx(ctx, func(tx coord.Tx) error { calls++; return fn(ctx, tx) })
		return calls, reruns() - before, err
	}
	seen := 0
	notFound := func(err error) error {
		if market.IsKind(err, market.NotFound) {
			seen++
			return nil
		}
		t.Errorf("UpdateInstance of a missing instance: %v, want NotFound", err)
		return err
	}

	calls, again, err := run(func(ctx context.Context, tx coord.Tx) error {
		return tx.UpdateInstance(ctx, missing)
	})
	wantKind(t, "Tx returning the failure", err, market.NotFound)
	if calls != 1 || again != 0 {
		t.Errorf("a failure the caller returns: %d calls, %d reruns; want 1 and 0", calls, again)
	}

	calls, again, err = run(func(ctx context.Context, tx coord.Tx) error {
		if err := notFound(tx.Atomic(ctx, func() error { return tx.UpdateInstance(ctx, missing) })); err != nil {
			return err
		}
		_, err := tx.Machines(ctx, coord.MachineFilter{})
		return err
	})
	if err != nil || calls != 1 || again != 0 {
		t.Errorf("a failure undone by the coordinator's step around it: %v, %d calls, %d reruns; want nil, 1 and 0", err, calls, again)
	}

	seen = 0
	calls, again, err = run(func(ctx context.Context, tx coord.Tx) error {
		if err := notFound(tx.UpdateInstance(ctx, missing)); err != nil {
			return err
		}
		_, err := tx.Machines(ctx, coord.MachineFilter{})
		return err
	})
	if err != nil || calls != 2 || again != 1 || seen != 2 {
		t.Errorf("a failure the caller goes past: %v, %d calls, %d reruns, the failure seen %d times; want nil, 2, 1 and 2", err, calls, again, seen)
	}
}
