package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func testMachines(t *testing.T, s coord.Store) {
	host, other := addAccount(t, s), addAccount(t, s)
	full := machine(host, 2)
	full.UsedGPUs = []int{1} // not stored
	bare := market.Machine{
		ID: market.MachineID(market.NewID(market.MachinePrefix)), Owner: host,
		Hardware: market.Hardware{Fingerprint: "bare"}, Status: market.MachineOffline,
		CreatedAt: t0, LastSeenAt: t0,
	}
	noGPUs := machine(host, 0)
	noGPUs.GPUs = []market.GPU{}
	for _, m := range []market.Machine{full, bare, noGPUs} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, m) })
	}
	stored := func(m market.Machine) market.Machine { m.UsedGPUs = nil; return m }

	t.Run("round trip", func(t *testing.T) {
		for _, want := range []market.Machine{full, bare, noGPUs} {
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Machine(ctx, want.ID)
				if err != nil {
					return err
				}
				diff(t, "Machine", got, stored(want))
				got, err = tx.MachineByFingerprint(ctx, want.Owner, want.Fingerprint)
				if err != nil {
					return err
				}
				diff(t, "MachineByFingerprint", got, stored(want))
				return nil
			})
		}
	})

	t.Run("not found", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.Machine(ctx, "m-missing")
			wantKind(t, "Machine", err, market.NotFound)
			_, err = tx.MachineByFingerprint(ctx, other, full.Fingerprint)
			wantKind(t, "MachineByFingerprint of another owner", err, market.NotFound)
			missing := machine(host, 1)
			wantKind(t, "UpdateMachine", tx.UpdateMachine(ctx, missing), market.NotFound)
			return nil
		})
	})

	t.Run("fingerprint conflict", func(t *testing.T) {
		dup := machine(host, 1)
		dup.Fingerprint = full.Fingerprint
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, dup) })
		wantKind(t, "InsertMachine same owner and fingerprint", err, market.Conflict)

		sameID := machine(other, 1)
		sameID.ID = full.ID
		err = try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, sameID) })
		wantKind(t, "InsertMachine same id", err, market.Conflict)

		theirs := machine(other, 1)
		theirs.Fingerprint = full.Fingerprint
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, theirs) })
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.MachineByFingerprint(ctx, other, full.Fingerprint)
			if err != nil {
				return err
			}
			diff(t, "other owner's machine", got, theirs)
			return nil
		})
	})

	t.Run("update whole row", func(t *testing.T) {
		up := machine(host, 4)
		up.ID, up.Fingerprint, up.CreatedAt = full.ID, full.Fingerprint, full.CreatedAt
		up.Hostname = "rig-renamed"
		up.Listed, up.Online, up.Status = false, false, market.MachineOffline
		up.PricePerGPUHour = 1_250_000
		up.Region, up.DataCenter = "us", ""
		up.PortRange = market.PortRange{First: 40000, Last: 40999}
		up.LastSeenAt = at(42)
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateMachine(ctx, up) })
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Machine(ctx, full.ID)
			if err != nil {
				return err
			}
			diff(t, "updated machine", got, up)
			return nil
		})
	})
}

func testMachineFilters(t *testing.T, s coord.Store) {
	a, b := addAccount(t, s), addAccount(t, s)
	mk := func(owner market.AccountID, listed, online bool) market.Machine {
		m := machine(owner, 1)
		m.Listed, m.Online = listed, online
		m.DeriveStatus()
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, m) })
		return m
	}
	all := []market.Machine{mk(a, true, true), mk(a, false, true), mk(a, true, false), mk(b, true, true), mk(b, false, false)}
	pick := func(keep func(m market.Machine) bool) []market.MachineID {
		var ids []market.MachineID
		for _, m := range all {
			if keep(m) {
				ids = append(ids, m.ID)
			}
		}
		return ids
	}
	for _, tc := range []struct {
		name string
		f    coord.MachineFilter
		keep func(m market.Machine) bool
	}{
		{"all", coord.MachineFilter{}, func(market.Machine) bool { return true }},
		{"owner", coord.MachineFilter{Owner: a}, func(m market.Machine) bool { return m.Owner == a }},
		{"listed", coord.MachineFilter{Listed: ptr(true)}, func(m market.Machine) bool { return m.Listed }},
		{"unlisted", coord.MachineFilter{Listed: ptr(false)}, func(m market.Machine) bool { return !m.Listed }},
		{"online", coord.MachineFilter{Online: ptr(true)}, func(m market.Machine) bool { return m.Online }},
		{"offline", coord.MachineFilter{Online: ptr(false)}, func(m market.Machine) bool { return !m.Online }},
		{"listed and online", coord.MachineFilter{Listed: ptr(true), Online: ptr(true)}, func(m market.Machine) bool { return m.Listed && m.Online }},
		{"owner and listed", coord.MachineFilter{Owner: b, Listed: ptr(true)}, func(m market.Machine) bool { return m.Owner == b && m.Listed }},
		{"unknown owner", coord.MachineFilter{Owner: "a-nobody"}, func(market.Machine) bool { return false }},
		{"ids", coord.MachineFilter{IDs: []market.MachineID{all[3].ID, "m-nowhere", all[1].ID}},
			func(m market.Machine) bool { return m.ID == all[1].ID || m.ID == all[3].ID }},
		{"ids and owner", coord.MachineFilter{IDs: []market.MachineID{all[0].ID, all[3].ID}, Owner: a},
			func(m market.Machine) bool { return m.ID == all[0].ID }},
		// More IDs than one statement's IN list holds: read in chunks,
		// still ordered by ID.
		{"many ids", coord.MachineFilter{IDs: manyIDs(all[4].ID, all[0].ID, all[2].ID)},
			func(m market.Machine) bool { return m.ID == all[0].ID || m.ID == all[2].ID || m.ID == all[4].ID }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Machines(ctx, tc.f)
				if err != nil {
					return err
				}
				var gotIDs []market.MachineID
				for _, m := range got {
					gotIDs = append(gotIDs, m.ID)
				}
				want := pick(tc.keep)
				slices.Sort(want)
				diff(t, "Machines (ordered by ID)", gotIDs, want)
				return nil
			})
		})
	}
	t.Run("full rows", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Machines(ctx, coord.MachineFilter{Owner: b, Online: ptr(true)})
			if err != nil {
				return err
			}
			diff(t, "Machines", got, []market.Machine{all[3]})
			return nil
		})
	})
}

// manyIDs returns 1,500 machine IDs: ids spread among made-up ones.
func manyIDs[ID ~string](ids ...ID) []ID {
	var out []ID
	for k := range 1500 {
		if k%600 == 0 && len(ids) > 0 {
			out, ids = append(out, ids[0]), ids[1:]
			continue
		}
		out = append(out, ID(fmt.Sprintf("none-%04d", k)))
	}
	return out
}
