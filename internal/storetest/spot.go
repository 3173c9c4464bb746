package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func testSpotTerms(t *testing.T, s coord.Store) {
	host := addAccount(t, s)
	m := machine(host, 2)
	m.Spot = market.SpotTerms{
		ReservePerGPUDay: 2_500_000, EnergyPerKWh: 300_000, MaxPowerW: 350,
		CoreLockMHz: market.ClockRange{Min: 210, Max: 2520}, MemOffsetMHz: market.ClockRange{Min: -500, Max: 1500},
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertMachine(ctx, m) })
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Machine(ctx, m.ID)
		diff(t, "Machine", got, m)
		return err
	})
	m.Spot = market.SpotTerms{ReservePerGPUDay: 1}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateMachine(ctx, m) })
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Machine(ctx, m.ID)
		diff(t, "Machine after update", got, m)
		return err
	})
}

func bid(bidder market.AccountID, m market.MachineID) market.Bid {
	return market.Bid{
		ID: market.BidID(market.NewID(market.BidPrefix)), Bidder: bidder, Machine: m, GPUs: 2,
		PricePerGPUDay: 12_000_000, PowerLimitW: 300,
		Command: []string{"python", "train.py"}, State: market.BidActive, CreatedAt: t0,
	}
}

func testBids(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 4)
	other := addMachine(t, s, w.host, 2)
	full := bid(w.renter, w.machine)
	full.Clocks = market.Clocks{CoreLockMHz: 1800, MemLockMHz: 9000, CoreOffsetMHz: -100, MemOffsetMHz: 500}
	full.GPUClocks = []market.Clocks{{CoreLockMHz: 1700}, {CoreLockMHz: 1800, MemOffsetMHz: -50}}
	full.Image, full.Webhook, full.NoticeSeconds = "pytorch/pytorch", "https://example.com/hook", 120
	full.Env = map[string]string{"A": "1"}
	full.ExpiresAt = at(60 * 24)
	full.Instance = "i-1"
	bare := market.Bid{ID: market.BidID(market.NewID(market.BidPrefix)), Bidder: w.host, Machine: other, State: market.BidCancelled, CreatedAt: t0}
	third := bid(w.host, w.machine)

	var stored []market.Bid
	for _, b := range []market.Bid{full, bare, third} {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.InsertBid(ctx, b)
			if err != nil {
				return err
			}
			if got.Seq <= 0 || (len(stored) > 0 && got.Seq <= stored[len(stored)-1].Seq) {
				t.Errorf("InsertBid: seq %d does not follow %v", got.Seq, stored)
			}
			b.Seq = got.Seq
			diff(t, "InsertBid result", got, b)
			stored = append(stored, got)
			return nil
		})
	}
	t.Run("round trip", func(t *testing.T) {
		for _, want := range stored {
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Bid(ctx, want.ID)
				diff(t, "Bid", got, want)
				return err
			})
		}
	})
	t.Run("errors", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.Bid(ctx, "b-missing")
			wantKind(t, "Bid", err, market.NotFound)
			_, err = tx.InsertBid(ctx, full)
			wantKind(t, "InsertBid duplicate", err, market.Conflict)
			missing := bid(w.renter, "m-missing")
			_, err = tx.InsertBid(ctx, missing)
			wantKind(t, "InsertBid unknown machine", err, market.NotFound)
			wantKind(t, "UpdateBid unknown", tx.UpdateBid(ctx, missing), market.NotFound)
			return nil
		})
	})
	t.Run("update", func(t *testing.T) {
		up := stored[0]
		up.State, up.PricePerGPUDay, up.Instance, up.ExpiresAt = market.BidWinning, 15_000_000, "i-2", time.Time{}
		up.Seq = 999 // ignored
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateBid(ctx, up) })
		up.Seq = stored[0].Seq
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Bid(ctx, up.ID)
			diff(t, "Bid after update", got, up)
			return err
		})
		stored[0] = up
	})
	t.Run("filters", func(t *testing.T) {
		ids := func(bs []market.Bid) []market.BidID {
			var out []market.BidID
			for _, b := range bs {
				out = append(out, b.ID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			f    coord.BidFilter
			want []market.BidID
		}{
			{"all", coord.BidFilter{}, []market.BidID{full.ID, bare.ID, third.ID}},
			{"bidder", coord.BidFilter{Bidder: w.host}, []market.BidID{bare.ID, third.ID}},
			{"machine open", coord.BidFilter{Machine: w.machine, OpenOnly: true}, []market.BidID{full.ID, third.ID}},
			{"open", coord.BidFilter{OpenOnly: true, Bidder: w.host}, []market.BidID{third.ID}},
		} {
			do(t, s, func(ctx context.Context, tx coord.Tx) error {
				got, err := tx.Bids(ctx, tc.f)
				diff(t, tc.name, ids(got), tc.want)
				return err
			})
		}
	})
}

func testRounds(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 2)
	other := addMachine(t, s, w.host, 2)
	var stored []coord.RoundRecord
	for i, m := range []market.MachineID{w.machine, other, w.machine} {
		r := coord.RoundRecord{ID: market.RoundID(market.NewID(market.RoundPrefix)), Machine: m, At: at(10 * i),
			Input: []byte(`{"at":"x","machines":[]}`), Decision: []byte(`{"machines":[{"free":2}]}`)}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.InsertRound(ctx, r)
			if err != nil {
				return err
			}
			if got.Seq <= 0 || (len(stored) > 0 && got.Seq <= stored[len(stored)-1].Seq) {
				t.Errorf("InsertRound: seq %d does not follow the previous", got.Seq)
			}
			r.Seq = got.Seq
			diff(t, "InsertRound result", got, r)
			stored = append(stored, got)
			return nil
		})
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Round(ctx, stored[1].ID)
		diff(t, "Round", got, stored[1])
		if err != nil {
			return err
		}
		_, err = tx.Round(ctx, "r-missing")
		wantKind(t, "Round missing", err, market.NotFound)
		_, err = tx.InsertRound(ctx, stored[0])
		wantKind(t, "InsertRound duplicate", err, market.Conflict)
		got2, err := tx.Rounds(ctx, coord.RoundFilter{Machine: w.machine})
		diff(t, "Rounds of machine", got2, []coord.RoundRecord{stored[2], stored[0]})
		if err != nil {
			return err
		}
		got2, err = tx.Rounds(ctx, coord.RoundFilter{Limit: 1, Before: stored[2].Seq})
		diff(t, "Rounds page", got2, []coord.RoundRecord{stored[1]})
		return err
	})
}

func testSpotStoppingReleasesGPUs(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 2)
	spot := instance(w.renter, w.machine, 0, 1)
	spot.Kind, spot.State, spot.Bid, spot.PricePerDay, spot.PowerLimitW = market.Spot, market.InstanceRunning, "b-1", 24_000_000, 300
	spot.Clocks = market.Clocks{CoreLockMHz: 1500}
	spot.GPUClocks = []market.Clocks{{CoreLockMHz: 1500}, {CoreLockMHz: 1600}}
	spot.NoticeSeconds = 120
	addInstance(t, s, spot)
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Instance(ctx, spot.ID)
		diff(t, "spot Instance", got, spot)
		return err
	})
	diff(t, "GPUs held by the running spot instance", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {0, 1}})

	spot.State = market.InstanceStopping
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateInstance(ctx, spot) })
	diff(t, "GPUs after the spot instance began to stop", activeGPUs(t, s, w.machine), map[market.MachineID][]int{})
	od := instance(w.renter, w.machine, 0)
	addInstance(t, s, od) // the GPU is free for a new instance

	onDemand := instance(w.renter, w.machine, 1)
	addInstance(t, s, onDemand)
	onDemand.State = market.InstanceStopping
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateInstance(ctx, onDemand) })
	diff(t, "GPUs after an on-demand instance began to stop", activeGPUs(t, s, w.machine), map[market.MachineID][]int{w.machine: {0, 1}})
}
