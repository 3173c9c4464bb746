// Package storetest is the conformance suite of coord.Store: every store
// (SQLite always, Postgres in CI) runs Run and must pass it unchanged.
//
// It imports coord and market of gpumarket's packages, never an adapter.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Run runs the suite. open must return a new, empty store for each call;
// Run closes it when the test ends.
func Run(t *testing.T, open func(t *testing.T) coord.Store) {
	newStore := func(t *testing.T) coord.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s coord.Store)
	}{
		{"Accounts", testAccounts},
		{"AccountConflicts", testAccountConflicts},
		{"APIKeys", testAPIKeys},
		{"Machines", testMachines},
		{"MachineFilters", testMachineFilters},
		{"Instances", testInstances},
		{"InstanceFilters", testInstanceFilters},
		{"GPUReservation", testGPUReservation},
		{"GPUReservationConcurrent", testGPUReservationConcurrent},
		{"ApplyTransfer", testApplyTransfer},
		{"TransferFailuresWriteNothing", testTransferFailures},
		{"Charges", testCharges},
		{"TransfersPagination", testTransfersPagination},
		{"ConcurrentSpending", testConcurrentSpending},
		{"ApplyTransfers", testApplyTransfers},
		{"ApplyCharges", testApplyCharges},
		{"BillingRows", testBillingRows},
		{"RefundsAssetsLimits", testRefundsAssetsLimits},
		{"IdempotencyOf", testIdempotencyOf},
		{"Flow", testFlow},
		{"FeesByDay", testFeesByDay},
		{"Logs", testLogs},
		{"Events", testEvents},
		{"OutcomeCounts", testOutcomeCounts},
		{"Rollback", testRollback},
		{"SpotTerms", testSpotTerms},
		{"Bids", testBids},
		{"Rounds", testRounds},
		{"SpotStoppingReleasesGPUs", testSpotStoppingReleasesGPUs},
		{"Leases", testLeases},
		{"HeartbeatClaims", testHeartbeatClaims},
		{"Checks", testChecks},
		{"GPUClaims", testGPUClaims},
		{"Deployments", testDeployments},
		{"Pools", testPools},
		{"ReplicaSignals", testReplicaSignals},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// t0 has microsecond precision, the precision stores keep.
var t0 = time.Date(2026, 11, 3, 10, 4, 5, 123456000, time.UTC)

func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

func ptr[T any](v T) *T { return &v }

// do runs fn in a transaction and fails the test if it returns an error.
func do(t *testing.T, s coord.Store, fn func(ctx context.Context, tx coord.Tx) error) {
	t.Helper()
	ctx := t.Context()
	if err := s.Tx(ctx, func(tx coord.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("Tx: %v", err)
	}
}

// try runs fn in a transaction and returns its error.
func try(t *testing.T, s coord.Store, fn func(ctx context.Context, tx coord.Tx) error) error {
	t.Helper()
	ctx := t.Context()
	return s.Tx(ctx, func(tx coord.Tx) error { return fn(ctx, tx) })
}

// wantKind fails the test unless err has kind k.
func wantKind(t *testing.T, what string, err error, k market.Kind) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: got nil error, want kind %v", what, k)
		return
	}
	var e *market.Error
	if !errors.As(err, &e) {
		t.Errorf("%s: got %T %v, want a *market.Error of kind %v", what, err, err, k)
		return
	}
	if got := market.KindOf(err); got != k {
		t.Errorf("%s: got kind %v (%v), want %v", what, got, err, k)
	}
}

// diff fails the test when got and want differ.
func diff(t *testing.T, what string, got, want any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, opts...); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// Fixtures.

func account(email string) market.Account {
	return market.Account{
		ID:           market.AccountID(market.NewID(market.AccountPrefix)),
		Email:        email,
		PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
		Roles:        []market.Role{market.RoleRenter, market.RoleHost},
		CreatedAt:    t0,
	}
}

func addAccount(t *testing.T, s coord.Store) market.AccountID {
	t.Helper()
	a := account(market.NewID("user-") + "@example.com")
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertAccount(ctx, a) })
	return a.ID
}

func machine(owner market.AccountID, gpus int) market.Machine {
	m := market.Machine{
		ID:    market.MachineID(market.NewID(market.MachinePrefix)),
		Owner: owner,
		Hardware: market.Hardware{
			Fingerprint:   market.NewID("fp-"),
			Hostname:      "rig-1",
			CPUCores:      32,
			RAMMiB:        128 * 1024,
			DiskGiB:       2000,
			DriverVersion: "550.54",
			CUDAVersion:   "12.4",
			Runner:        "docker",
			Region:        "eu",
			DataCenter:    "fra-1",
		},
		Listed:          true,
		Online:          true,
		Status:          market.MachineListed,
		PricePerGPUHour: 450_000,
		LastSeenAt:      at(1),
		CreatedAt:       t0,
	}
	for i := range gpus {
		m.GPUs = append(m.GPUs, market.GPU{
			Index: i, UUID: fmt.Sprintf("GPU-%s-%d", m.ID, i), Model: "RTX 4090", VRAMMiB: 24564,
			MinPowerW: 150, DefaultPowerW: 450, MaxPowerW: 600, PCIeGen: 4, PCIeWidth: 16,
		})
	}
	return m
}

func addMachine(t *testing.T, s coord.Store, owner market.AccountID, gpus int) market.MachineID {
	t.Helper()
	m := machine(owner, gpus)
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, m) })
	return m.ID
}

func instance(renter market.AccountID, m market.MachineID, gpus ...int) market.Instance {
	return market.Instance{
		ID:           market.InstanceID(market.NewID(market.InstancePrefix)),
		Renter:       renter,
		Machine:      m,
		Kind:         market.OnDemand,
		GPUs:         gpus,
		Image:        "pytorch/pytorch:2.4",
		Command:      []string{"python", "train.py"},
		State:        market.InstancePending,
		Generation:   1,
		PricePerHour: 900_000,
		Escrow:       900_000,
		CreatedAt:    t0,
		GraceSeconds: 30,
	}
}

// world holds a fixture: one renter, one host and a machine of the host.
type world struct {
	renter, host market.AccountID
	machine      market.MachineID
}

func newWorld(t *testing.T, s coord.Store, gpus int) world {
	t.Helper()
	w := world{renter: addAccount(t, s), host: addAccount(t, s)}
	w.machine = addMachine(t, s, w.host, gpus)
	return w
}

func addInstance(t *testing.T, s coord.Store, i market.Instance) {
	t.Helper()
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertInstance(ctx, i) })
}

func activeGPUs(t *testing.T, s coord.Store, ms ...market.MachineID) map[market.MachineID][]int {
	t.Helper()
	var got map[market.MachineID][]int
	do(t, s, func(ctx context.Context, tx coord.Tx) (err error) {
		got, err = tx.ActiveGPUs(ctx, ms)
		return err
	})
	// A machine with no GPU in use may be absent or map to an empty list.
	if got == nil {
		got = map[market.MachineID][]int{}
	}
	for m, g := range got {
		if len(g) == 0 {
			delete(got, m)
		}
		slices.Sort(g)
	}
	return got
}
