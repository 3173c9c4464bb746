package storetest

import (
	"context"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func testReplicaSignals(t *testing.T, s coord.Store) {
	q1, q2, ok, bad, u := int64(7), int64(9), true, false, 55.5
	first := []coord.ReplicaSignal{
		{Instance: "i-a", Queue: &q1, QueueAt: at(1), Healthy: &bad, HealthAt: at(1), At: at(1)},
		{Instance: "i-b", Util: &u, UtilAt: at(1), At: at(1)},
		{Instance: "i-old", Queue: &q1, QueueAt: at(0), At: at(0)},
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.PutReplicaSignals(ctx, first) })
	// A second coordinator writes a newer health and an older queue of
	// i-a: of each value, the later report wins.
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.PutReplicaSignals(ctx, []coord.ReplicaSignal{{Instance: "i-a", Queue: &q2, QueueAt: at(0), Healthy: &ok, HealthAt: at(2), At: at(2)}})
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.ReplicaSignals(ctx, at(1))
		if err != nil {
			return err
		}
		diff(t, "ReplicaSignals", got, map[market.InstanceID]coord.ReplicaSignal{
			"i-a": {Instance: "i-a", Queue: &q1, QueueAt: at(1), Healthy: &ok, HealthAt: at(2), At: at(2)},
			"i-b": first[1],
		})
		return tx.PruneReplicaSignals(ctx, at(2))
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.ReplicaSignals(ctx, at(0))
		if err != nil {
			return err
		}
		if len(got) != 1 || got["i-a"].Instance != "i-a" {
			t.Errorf("ReplicaSignals after pruning before minute 2: %v, want only i-a", got)
		}
		return nil
	})
}
