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

func testHeartbeatClaims(t *testing.T, s coord.Store) {
	host := addAccount(t, s)
	// More machines than one statement names, so that batching shows.
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
	m0, m1 := online[0], online[1]
	var missed []market.MachineID
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		missed, err = tx.ClaimMachines(ctx, "n1", seen)
		return err
	})
	slices.Sort(missed)
	want := []market.MachineID{"m-missing", off.ID}
	slices.Sort(want)
	diff(t, "ClaimMachines missed", missed, want)
	others := func(node string, since time.Time) bool {
		var ok bool
		do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
			ok, err = tx.OtherNodes(ctx, node, since)
			return err
		})
		return ok
	}
	// Only n1 claims, and nobody vouched: for n1 there is no other node;
	// for n0 and n2 (names on either side of n1) n1 is one.
	if others("n1", t0) || !others("n0", t0) || !others("n2", t0) {
		t.Errorf("OtherNodes with only n1 claiming: n1 %v, n0 %v, n2 %v; want false, true, true", others("n1", t0), others("n0", t0), others("n2", t0))
	}

	lastSeen := func(tx coord.Tx, id market.MachineID) time.Time {
		m, err := tx.Machine(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return m.LastSeenAt
	}
	stale := func(tx coord.Tx, before time.Time) []market.MachineID {
		on := true
		ms, err := tx.Machines(context.Background(), coord.MachineFilter{Online: &on, SeenBefore: before})
		if err != nil {
			t.Fatal(err)
		}
		var ids []market.MachineID
		for _, m := range ms {
			ids = append(ids, m.ID)
		}
		return ids
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		for i, id := range online {
			want := at(5)
			if i == 0 {
				want = at(1)
			}
			if got := lastSeen(tx, id); !got.Equal(want) {
				return fmt.Errorf("machine %d: last seen %s, want %s", i, got, want)
			}
		}
		// n1 never vouched: only the stored LastSeenAt counts.
		diff(t, "online machines seen before at(2), no vouch", stale(tx, at(2)), []market.MachineID{m0})
		if got := lastSeen(tx, off.ID); !got.Equal(at(1)) {
			t.Errorf("offline machine touched: last seen %s", got)
		}
		return tx.BeatNode(ctx, "n1", at(3))
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		// n1 vouched at(3) for its claims, m0 included.
		diff(t, "online machines seen before at(2), vouched at(3)", stale(tx, at(2)), []market.MachineID(nil))
		diff(t, "online machines seen before at(4), vouched at(3)", stale(tx, at(4)), []market.MachineID{m0})
		v, err := tx.VouchedSeen(ctx, []market.MachineID{m0, off.ID, "m-missing"})
		diff(t, "VouchedSeen", v, map[market.MachineID]time.Time{m0: at(3)})
		all, err2 := tx.AllVouchedSeen(ctx)
		for id, at := range all {
			if one, err := tx.VouchedSeen(ctx, []market.MachineID{id}); err != nil || !one[id].Equal(at) {
				t.Errorf("AllVouchedSeen says %s was vouched for at %s; VouchedSeen says %v (%v)", id, at, one, err)
			}
		}
		if !all[m0].Equal(at(3)) {
			t.Errorf("AllVouchedSeen %v lacks %s vouched at(3)", all, m0)
		}
		return firstErr(err, err2)
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		// A claim n1 holds is not written again; n2 takes m1 over.
		if _, err := tx.ClaimMachines(ctx, "n1", map[market.MachineID]time.Time{m0: at(6)}); err != nil {
			return err
		}
		_, err := tx.ClaimMachines(ctx, "n2", map[market.MachineID]time.Time{m1: at(7)})
		return err
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		if got := lastSeen(tx, m0); !got.Equal(at(1)) {
			t.Errorf("claim held by the same node rewritten: last seen %s, want at(1)", got)
		}
		if got := lastSeen(tx, m1); !got.Equal(at(7)) {
			t.Errorf("claim taken over by n2: last seen %s, want at(7)", got)
		}
		// n1 releases both: m0 gets its last heartbeat and no claim; m1,
		// claimed by n2 since, is left alone.
		return tx.ReleaseMachines(ctx, "n1", map[market.MachineID]time.Time{m0: at(8), m1: at(8)})
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		if got := lastSeen(tx, m0); !got.Equal(at(8)) {
			t.Errorf("released machine: last seen %s, want at(8)", got)
		}
		if got := lastSeen(tx, m1); !got.Equal(at(7)) {
			t.Errorf("machine n2 claims, released by n1: last seen %s, want at(7)", got)
		}
		v, err := tx.VouchedSeen(ctx, []market.MachineID{m0, m1})
		diff(t, "VouchedSeen after release (n2 never vouched)", v, map[market.MachineID]time.Time{})
		if ok, err := tx.OtherNodes(ctx, "n1", t0); err != nil || !ok {
			t.Errorf("OtherNodes(n1) while n2 claims %s = %v, %v; want true", m1, ok, err)
		}
		all, err2 := tx.AllVouchedSeen(ctx)
		if _, ok := all[m0]; ok {
			t.Errorf("AllVouchedSeen after release: %s still vouched for", m0)
		}
		if _, ok := all[m1]; ok {
			t.Errorf("AllVouchedSeen after release: %s vouched for, but n2 never vouched", m1)
		}
		return firstErr(err, err2)
	})
	// Every claim released: another node counts only by a recent vouch.
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		all := map[market.MachineID]time.Time{}
		for _, id := range online {
			all[id] = at(9)
		}
		if err := tx.ReleaseMachines(ctx, "n1", all); err != nil {
			return err
		}
		if err := tx.ReleaseMachines(ctx, "n2", map[market.MachineID]time.Time{m1: at(9)}); err != nil {
			return err
		}
		return tx.BeatNode(ctx, "n3", at(9))
	})
	if !others("n1", at(4)) || others("n1", at(10)) || others("n3", at(4)) || !others("n3", at(3)) {
		t.Errorf("OtherNodes with no claims, n1 vouched at(3) and n3 at(9): n1 since at(4) %v, n1 since at(10) %v, n3 since at(4) %v, n3 since at(3) %v; want true, false, false, true",
			others("n1", at(4)), others("n1", at(10)), others("n3", at(4)), others("n3", at(3)))
	}
}
