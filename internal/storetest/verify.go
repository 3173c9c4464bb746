package storetest

import (
	"context"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func testChecks(t *testing.T, s coord.Store) {
	host := addAccount(t, s)
	m1, m2 := machine(host, 2), machine(host, 1)
	m1.Unverified, m1.Review = true, "GPU x also on m-other"
	for _, m := range []market.Machine{m1, m2} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, m) })
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Machine(ctx, m1.ID)
		if err != nil {
			return err
		}
		if !got.Unverified || got.Review != m1.Review {
			t.Errorf("unverified/review not stored: got %v %q", got.Unverified, got.Review)
		}
		got.Unverified, got.Review = false, ""
		if err := tx.UpdateMachine(ctx, got); err != nil {
			return err
		}
		got, err = tx.Machine(ctx, m1.ID)
		if err == nil && (got.Unverified || got.Review != "") {
			t.Errorf("update kept unverified/review: %v %q", got.Unverified, got.Review)
		}
		return err
	})

	check := func(id string, m market.MachineID, minute int, state market.CheckState) market.Check {
		return market.Check{
			ID: market.CheckID(id), Machine: m, Owner: host, Cause: market.CheckOnRegister, State: state,
			CreatedAt: at(minute), Nonce: "nonce-" + id, Secret: "secret-" + id,
			GPUs: []market.CheckGPU{{Index: 0, UUID: "GPU-a", Model: "RTX 4090", TileSize: 64, Tiles: 16, Samples: 4, MinRate: 2e6, MaxRate: 1e12, Work: 64 * 64 * 64 * 16}},
		}
	}
	c1, c2, c3 := check("v-1", m1.ID, 1, market.CheckPassed), check("v-2", m1.ID, 2, market.CheckPending), check("v-3", m2.ID, 3, market.CheckPending)
	c1.IssuedAt, c1.FinishedAt = ptr(at(1)), ptr(at(2))
	c1.GPUs[0].Root, c1.GPUs[0].SampleTiles, c1.GPUs[0].Passed = "abcd", []int{1, 5}, true
	for _, c := range []market.Check{c1, c2, c3} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertCheck(ctx, c) })
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Check(ctx, c1.ID)
		if err != nil {
			return err
		}
		diff(t, "Check (secret included)", got, c1)
		_, err = tx.Check(ctx, "v-missing")
		wantKind(t, "Check missing", err, market.NotFound)
		wantKind(t, "InsertCheck twice", tx.InsertCheck(ctx, c1), market.Conflict)
		bad := check("v-9", "m-missing", 1, market.CheckPending)
		wantKind(t, "InsertCheck of a missing machine", tx.InsertCheck(ctx, bad), market.NotFound)
		wantKind(t, "UpdateCheck missing", tx.UpdateCheck(ctx, bad), market.NotFound)
		return nil
	})
	list := func(f coord.CheckFilter) []market.CheckID {
		var ids []market.CheckID
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			cs, err := tx.Checks(ctx, f)
			for _, c := range cs {
				ids = append(ids, c.ID)
			}
			return err
		})
		return ids
	}
	diff(t, "all checks, newest first", list(coord.CheckFilter{}), []market.CheckID{"v-3", "v-2", "v-1"})
	diff(t, "of m1", list(coord.CheckFilter{Machine: m1.ID}), []market.CheckID{"v-2", "v-1"})
	diff(t, "pending", list(coord.CheckFilter{State: market.CheckPending}), []market.CheckID{"v-3", "v-2"})
	diff(t, "limit", list(coord.CheckFilter{Limit: 1}), []market.CheckID{"v-3"})
	diff(t, "of two machines", list(coord.CheckFilter{Machines: []market.MachineID{m2.ID, m1.ID}}), []market.CheckID{"v-3", "v-2", "v-1"})
	diff(t, "newest of each machine", list(coord.CheckFilter{Machines: []market.MachineID{m1.ID, m2.ID}, LimitEach: 1}), []market.CheckID{"v-3", "v-2"})
	diff(t, "newest two of each machine", list(coord.CheckFilter{Machines: []market.MachineID{m1.ID, m2.ID}, LimitEach: 2}), []market.CheckID{"v-3", "v-2", "v-1"})
	diff(t, "pending, newest of each machine", list(coord.CheckFilter{Machines: []market.MachineID{m1.ID, m2.ID}, State: market.CheckPending, LimitEach: 1}), []market.CheckID{"v-3", "v-2"})
	c2.State, c2.Failure = market.CheckFailed, "too slow"
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateCheck(ctx, c2) })
	diff(t, "pending after update", list(coord.CheckFilter{State: market.CheckPending}), []market.CheckID{"v-3"})
}

func testGPUClaims(t *testing.T, s coord.Store) {
	host := addAccount(t, s)
	m1, m2 := machine(host, 2), machine(host, 1)
	for _, m := range []market.Machine{m1, m2} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, m) })
	}
	claims := func(uuids ...string) map[string]market.MachineID {
		var got map[string]market.MachineID
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			var err error
			got, err = tx.GPUClaims(ctx, uuids)
			return err
		})
		return got
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.ClaimGPUs(ctx, m1.ID, []string{"GPU-a", "GPU-b"})
	})
	diff(t, "claims", claims("GPU-a", "GPU-b", "GPU-c"), map[string]market.MachineID{"GPU-a": m1.ID, "GPU-b": m1.ID})
	// Claiming again is a no-op; another machine is refused and nothing is written.
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.ClaimGPUs(ctx, m1.ID, []string{"GPU-a", "GPU-b"})
	})
	err := s.Tx(t.Context(), func(tx coord.Tx) error { return tx.ClaimGPUs(t.Context(), m2.ID, []string{"GPU-c", "GPU-b"}) })
	wantKind(t, "ClaimGPUs of another machine's GPU", err, market.Conflict)
	diff(t, "after refused claim", claims("GPU-a", "GPU-b", "GPU-c"), map[string]market.MachineID{"GPU-a": m1.ID, "GPU-b": m1.ID})
	// A hardware change releases the GPUs no longer there.
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.ClaimGPUs(ctx, m1.ID, []string{"GPU-b", "GPU-d"})
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.ClaimGPUs(ctx, m2.ID, []string{"GPU-a"}) })
	diff(t, "after change", claims("GPU-a", "GPU-b", "GPU-d"), map[string]market.MachineID{"GPU-a": m2.ID, "GPU-b": m1.ID, "GPU-d": m1.ID})
	wantKind(t, "ClaimGPUs of a missing machine", s.Tx(t.Context(), func(tx coord.Tx) error {
		return tx.ClaimGPUs(t.Context(), "m-missing", []string{"GPU-z"})
	}), market.NotFound)
	diff(t, "no claims asked", claims(), map[string]market.MachineID{})
}
