package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func testLeases(t *testing.T, s coord.Store) {
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		_, err := tx.Lease(ctx, "leader")
		wantKind(t, "Lease before any PutLease", err, market.NotFound)
		return nil
	})
	first := coord.Lease{Name: "leader", Holder: "a", Generation: 1, AcquiredAt: at(0), ExpiresAt: at(1)}
	other := coord.Lease{Name: "other", Holder: "b", Generation: 7, AcquiredAt: at(0), ExpiresAt: at(2)}
	for _, l := range []coord.Lease{first, other} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.PutLease(ctx, l) })
	}
	next := coord.Lease{Name: "leader", Holder: "b", Generation: 2, AcquiredAt: at(3), ExpiresAt: at(4)}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.PutLease(ctx, next) })
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		for _, want := range []coord.Lease{next, other} {
			got, err := tx.Lease(ctx, want.Name)
			if err != nil {
				return err
			}
			diff(t, "Lease "+want.Name, got, want)
		}
		return nil
	})
}

func testTouchMachines(t *testing.T, s coord.Store) {
	host := addAccount(t, s)
	// More machines than one statement touches, so that batching shows.
	var online []market.MachineID
	for range 600 {
		m := machine(host, 1)
		online = append(online, m.ID)
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, m) })
	}
	off := machine(host, 1)
	off.Online = false
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, off) })

	seen := map[market.MachineID]time.Time{off.ID: at(9), "m-missing": at(9)}
	for i, id := range online {
		seen[id] = at(5)
		if i == 0 {
			seen[id] = t0 // older than the stored at(1): kept at(1)
		}
	}
	online0 := online[0]
	var missed []market.MachineID
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		missed, err = tx.TouchMachines(ctx, seen)
		return err
	})
	slices.Sort(missed)
	want := []market.MachineID{"m-missing", off.ID}
	slices.Sort(want)
	diff(t, "TouchMachines missed", missed, want)
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		for i, id := range online {
			want := at(5)
			if i == 0 {
				want = at(1)
			}
			m, err := tx.Machine(ctx, id)
			if err != nil {
				return err
			}
			if !m.LastSeenAt.Equal(want) || !m.Online {
				return fmt.Errorf("machine %d: last seen %s online %v, want %s online", i, m.LastSeenAt, m.Online, want)
			}
		}
		online := true
		stale, err := tx.Machines(ctx, coord.MachineFilter{Online: &online, SeenBefore: at(2)})
		if err != nil {
			return err
		}
		if len(stale) != 1 || stale[0].ID != online0 {
			t.Errorf("online machines seen before %s: %d, want only %s", at(2), len(stale), online0)
		}
		m, err := tx.Machine(ctx, off.ID)
		if err == nil && (!m.LastSeenAt.Equal(at(1)) || m.Online) {
			t.Errorf("offline machine touched: last seen %s online %v", m.LastSeenAt, m.Online)
		}
		return err
	})
}
