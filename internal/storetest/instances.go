package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func testInstances(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 8)
	full := instance(w.renter, w.machine, 0, 1)
	full.Kind = market.Spot
	full.Env = map[string]string{"HF_TOKEN": "x", "EMPTY": ""}
	full.State = market.InstanceRunning
	full.Generation = 7
	full.Reason = "asked by renter"
	full.ExitCode = ptr(0)
	full.StartedAt = ptr(at(1))
	full.StopAt = ptr(at(9))
	full.EndedAt = ptr(at(10))
	full.BilledMins = 8
	full.Charged = 120_000
	full.Settled = true
	full.NoticeAt = ptr(at(8))
	full.LastReportAt = ptr(at(9))
	full.Template, full.Ports, full.SSHKeys = "ssh", []string{"22/tcp", "8888/tcp"}, []string{"ssh-ed25519 AAAAC3Nz k@h"}
	full.Limits = market.Limits{CPUMillis: 1500, MemoryMiB: 4096, Pids: 100, ShmMiB: 1024, DiskGiB: 20}
	full.PortMap = []market.PortBinding{{Port: "22/tcp", Host: "gpu1.example.net", HostPort: 40012}}

	bare := market.Instance{ID: market.InstanceID(market.NewID(market.InstancePrefix)), Renter: w.renter,
		Machine: w.machine, State: market.InstancePending, CreatedAt: t0}
	empties := instance(w.renter, w.machine)
	empties.GPUs, empties.Command, empties.Env = []int{}, []string{}, map[string]string{}
	failed := instance(w.renter, w.machine, 2)
	failed.State, failed.ExitCode = market.InstanceFailed, ptr(-1)

	for _, i := range []market.Instance{full, bare, empties, failed} {
		addInstance(t, s, i)
	}

	t.Run("round trip", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			i    market.Instance
		}{{"every field set", full}, {"zero fields and nil pointers", bare}, {"empty lists", empties}, {"negative exit code", failed}} {
			t.Run(tc.name, func(t *testing.T) {
				do(t, s, func(ctx context.Context, tx coord.Tx) error {
					got, err := tx.Instance(ctx, tc.i.ID)
					if err != nil {
						return err
					}
					diff(t, "Instance", got, tc.i)
					return nil
				})
			})
		}
	})

	t.Run("not found", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.Instance(ctx, "i-missing")
			wantKind(t, "Instance", err, market.NotFound)
			wantKind(t, "UpdateInstance", tx.UpdateInstance(ctx, instance(w.renter, w.machine, 5)), market.NotFound)
			return nil
		})
	})

	t.Run("duplicate id", func(t *testing.T) {
		dup := instance(w.renter, w.machine, 6)
		dup.ID = bare.ID
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertInstance(ctx, dup) })
		wantKind(t, "InsertInstance", err, market.Conflict)
	})

	t.Run("update whole row", func(t *testing.T) {
		up := full
		up.State = market.InstanceStopped
		up.Generation = 8
		up.Env = nil
		up.ExitCode = ptr(137)
		up.StartedAt, up.NoticeAt = nil, nil
		up.EndedAt = ptr(at(20))
		up.Charged = 130_000
		up.Settled = false
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateInstance(ctx, up) })
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Instance(ctx, full.ID)
			if err != nil {
				return err
			}
			diff(t, "updated instance", got, up)
			return nil
		})
	})
}

func testInstanceFilters(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 8)
	other := addAccount(t, s)
	m2 := addMachine(t, s, w.host, 8)
	mk := func(renter market.AccountID, m market.MachineID, created int, state market.InstanceState, started, settled bool, gpus ...int) market.Instance {
		i := instance(renter, m, gpus...)
		i.CreatedAt = at(created)
		i.State = state
		if started {
			i.StartedAt = ptr(at(created + 1))
		}
		i.Settled = settled
		addInstance(t, s, i)
		return i
	}
	// Inserted out of creation order; two share a CreatedAt to test the ID tiebreak.
	all := []market.Instance{
		mk(w.renter, w.machine, 5, market.InstanceRunning, true, false, 0),
		mk(w.renter, w.machine, 1, market.InstanceStopped, true, true, 1),
		mk(other, w.machine, 3, market.InstancePending, false, false, 2),
		mk(w.renter, m2, 3, market.InstanceStopping, true, false, 0),
		mk(other, m2, 2, market.InstancePreempted, true, false, 1),
		mk(w.renter, m2, 3, market.InstanceFailed, false, false, 2),
	}
	sorted := slices.Clone(all)
	slices.SortFunc(sorted, func(a, b market.Instance) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmpString(string(a.ID), string(b.ID))
	})
	for _, tc := range []struct {
		name string
		f    coord.InstanceFilter
		keep func(market.Instance) bool
	}{
		{"all", coord.InstanceFilter{}, func(market.Instance) bool { return true }},
		{"renter", coord.InstanceFilter{Renter: other}, func(i market.Instance) bool { return i.Renter == other }},
		{"machine", coord.InstanceFilter{Machine: m2}, func(i market.Instance) bool { return i.Machine == m2 }},
		{"active", coord.InstanceFilter{ActiveOnly: true}, market.Instance.Active},
		{"billable", coord.InstanceFilter{Billable: true}, func(i market.Instance) bool { return i.StartedAt != nil && !i.Settled }},
		{"renter, machine, active", coord.InstanceFilter{Renter: w.renter, Machine: m2, ActiveOnly: true},
			func(i market.Instance) bool { return i.Renter == w.renter && i.Machine == m2 && i.Active() }},
		{"active and billable", coord.InstanceFilter{ActiveOnly: true, Billable: true},
			func(i market.Instance) bool { return i.Active() && i.StartedAt != nil && !i.Settled }},
		{"unknown machine", coord.InstanceFilter{Machine: "m-nowhere"}, func(market.Instance) bool { return false }},
		{"machines", coord.InstanceFilter{Machines: []market.MachineID{"m-nowhere", w.machine}}, func(i market.Instance) bool { return i.Machine == w.machine }},
		{"machines, active", coord.InstanceFilter{Machines: []market.MachineID{m2, w.machine}, ActiveOnly: true}, market.Instance.Active},
		{"many machines", coord.InstanceFilter{Machines: manyIDs(m2, w.machine)}, func(market.Instance) bool { return true }},
		{"ids", coord.InstanceFilter{IDs: []market.InstanceID{"i-nowhere", all[0].ID, all[4].ID}},
			func(i market.Instance) bool { return i.ID == all[0].ID || i.ID == all[4].ID }},
		{"ids, machine, active", coord.InstanceFilter{IDs: []market.InstanceID{all[0].ID, all[1].ID, all[3].ID}, Machine: w.machine, ActiveOnly: true},
			func(i market.Instance) bool { return i.ID == all[0].ID }},
		{"many ids, many machines", coord.InstanceFilter{IDs: manyIDs(all[2].ID, all[3].ID, all[5].ID), Machines: manyIDs(m2, w.machine)},
			func(i market.Instance) bool { return i.ID == all[2].ID || i.ID == all[3].ID || i.ID == all[5].ID }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []market.Instance
			for _, i := range sorted {
				if tc.keep(i) {
					want = append(want, i)
				}
			}
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Instances(ctx, tc.f)
				if err != nil {
					return err
				}
				if len(got) == 0 && len(want) == 0 {
					return nil
				}
				diff(t, "Instances (by CreatedAt, then ID)", got, want)
				return nil
			})
		})
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testGPUReservation(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 4)
	m2 := addMachine(t, s, w.host, 4)
	a := instance(w.renter, w.machine, 0, 1)
	addInstance(t, s, a)

	t.Run("overlap is a conflict and writes nothing", func(t *testing.T) {
		b := instance(w.renter, w.machine, 1, 2)
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertInstance(ctx, b) })
		wantKind(t, "InsertInstance", err, market.Conflict)
		if !strings.Contains(fmt.Sprint(err), "GPUs [1] of machine") {
			t.Errorf("InsertInstance: %v; want it to name GPU 1, the one held", err)
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.Instance(ctx, b.ID)
			wantKind(t, "Instance after conflict", err, market.NotFound)
			return nil
		})
		diff(t, "ActiveGPUs", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {0, 1}})
	})

	b := instance(w.renter, w.machine, 3, 2)
	t.Run("conflict leaves the transaction usable", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			wantKind(t, "InsertInstance", tx.InsertInstance(ctx, instance(w.renter, w.machine, 2, 0)), market.Conflict)
			return tx.InsertInstance(ctx, b)
		})
	})

	c := instance(w.renter, m2, 0)
	addInstance(t, s, c)
	t.Run("machines are separate", func(t *testing.T) {
		diff(t, "ActiveGPUs", activeGPUs(t, s, w.machine, m2), map[market.MachineID][]int{w.machine: {0, 1, 2, 3}, m2: {0}})
		diff(t, "ActiveGPUs of one machine", activeGPUs(t, s, m2), map[market.MachineID][]int{m2: {0}})
		diff(t, "ActiveGPUs of none", activeGPUs(t, s), map[market.MachineID][]int{})
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			all, err := tx.AllActiveGPUs(ctx)
			diff(t, "AllActiveGPUs", all, map[market.MachineID][]int{w.machine: {0, 1, 2, 3}, m2: {0}})
			return err
		})
	})

	t.Run("update onto held GPUs is a conflict and writes nothing", func(t *testing.T) {
		moved := b
		moved.GPUs = []int{2, 1}
		moved.Generation = 5
		err := try(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateInstance(ctx, moved) })
		wantKind(t, "UpdateInstance", err, market.Conflict)
		diff(t, "ActiveGPUs", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {0, 1, 2, 3}})
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Instance(ctx, b.ID)
			if err != nil {
				return err
			}
			diff(t, "instance after refused update", got, b)
			return nil
		})
	})

	t.Run("a step undone forgets the GPUs it reserved", func(t *testing.T) {
		// The store knows what an instance read in the transaction holds;
		// a step undone must not leave it believing the undone move.
		d := instance(w.renter, m2, 1)
		addInstance(t, s, d)
		moved := d
		moved.GPUs = []int{2}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			if _, err := tx.Instance(ctx, d.ID); err != nil {
				return err
			}
			undo := errors.New("undo")
			if err := tx.Atomic(ctx, func() error {
				if err := tx.UpdateInstance(ctx, moved); err != nil {
					return err
				}
				return undo
			}); err != undo {
				t.Errorf("Atomic: %v, want the step's own error", err)
			}
			return tx.UpdateInstance(ctx, moved)
		})
		diff(t, "ActiveGPUs", activeGPUs(t, s, m2), map[market.MachineID][]int{m2: {0, 2}})
	})

	t.Run("update keeps the GPUs of an active instance", func(t *testing.T) {
		up := a
		up.State, up.Generation, up.StartedAt = market.InstanceRunning, 2, ptr(at(1))
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateInstance(ctx, up) })
		diff(t, "ActiveGPUs", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {0, 1, 2, 3}})
		a = up
	})

	t.Run("terminal state releases, then others reserve", func(t *testing.T) {
		for _, state := range []market.InstanceState{market.InstanceStopped, market.InstancePreempted, market.InstanceFailed} {
			t.Run(string(state), func(t *testing.T) {
				holder := a
				holder.State = state
				holder.EndedAt = ptr(at(30))
				do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateInstance(ctx, holder) })
				diff(t, "ActiveGPUs", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {2, 3}})
				next := instance(w.renter, w.machine, 1, 0)
				addInstance(t, s, next)
				diff(t, "ActiveGPUs", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {0, 1, 2, 3}})
				// The ended instance keeps its GPU list on its row.
				do(t, s, func(ctx context.Context, tx coord.Tx) error {
					got, err := tx.Instance(ctx, holder.ID)
					if err != nil {
						return err
					}
					diff(t, "ended instance", got, holder)
					return nil
				})
				a = next
			})
		}
	})
}

// testGPUReservationConcurrent races 20 transactions for overlapping GPUs of
// one machine: the sets that win never overlap.
func testGPUReservationConcurrent(t *testing.T, s coord.Store) {
	const workers, gpus = 20, 8
	w := newWorld(t, s, gpus)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners [][]int
	)
	for k := range workers {
		want := []int{k % gpus, (k*3 + 1) % gpus}
		if want[0] == want[1] {
			want = want[:1]
		}
		wg.Go(func() {
			i := instance(w.renter, w.machine, want...)
			err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
				// Read first, like a scheduler would, to widen the race window.
				if _, err := tx.ActiveGPUs(ctx, []market.MachineID{w.machine}); err != nil {
					return err
				}
				return tx.InsertInstance(ctx, i)
			})
			if err != nil {
				if !market.IsKind(err, market.Conflict) {
					t.Errorf("worker %d: got %v, want nil or Conflict", k, err)
				}
				return
			}
			mu.Lock()
			winners = append(winners, want)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(winners) == 0 {
		t.Fatal("no reservation succeeded")
	}
	held := map[int]bool{}
	var union []int
	for _, set := range winners {
		for _, g := range set {
			if held[g] {
				t.Errorf("GPU %d reserved twice; winning sets: %v", g, winners)
			}
			held[g] = true
			union = append(union, g)
		}
	}
	slices.Sort(union)
	diff(t, "ActiveGPUs", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: union})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Instances(ctx, coord.InstanceFilter{Machine: w.machine, ActiveOnly: true})
		if len(got) != len(winners) {
			t.Errorf("%d active instances, want %d", len(got), len(winners))
		}
		return err
	})
	t.Logf("%d of %d reservations won", len(winners), workers)
}
