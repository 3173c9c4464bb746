package auction

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// benchRound builds a round of machines with 8 GPUs each and bids spread
// evenly over them: 1, 2, 4 or 8 GPUs, prices around 10 tokens per
// GPU-day, power limits 150-450 W (a few above the host maximum), and the
// earliest bid of each machine running.
func benchRound(machines, bids int) Round {
	rng := rand.New(rand.NewPCG(1, 2))
	r := Round{At: t0, Interval: tenMin, Machines: make([]Machine, machines)}
	cards := []Card{{100, 450}, {100, 450}, {100, 450}, {100, 450}, {100, 450}, {100, 450}, {100, 450}, {100, 450}}
	for i := range r.Machines {
		m := &r.Machines[i]
		m.ID = market.MachineID(fmt.Sprintf("m-%07d", i))
		m.Owner = "a-host"
		m.Cards = cards
		m.Free = 8 - rng.IntN(3)
		m.Terms = market.SpotTerms{ReservePerGPUDay: tok("2"), EnergyPerKWh: tok("0.15"), MaxPowerW: 400,
			CoreLockMHz: market.ClockRange{Min: 500, Max: 2500}}
		m.Bids = make([]Entry, 0, bids/machines+1)
	}
	for i := range bids {
		m := &r.Machines[i%machines]
		e := Entry{
			Bid: market.Bid{
				ID: market.BidID(fmt.Sprintf("b-%08d", i)), Bidder: market.AccountID(fmt.Sprintf("a-%d", rng.IntN(bids/3+1))),
				Machine: m.ID, GPUs: []int{1, 1, 2, 2, 4, 8}[rng.IntN(6)],
				PricePerGPUDay: market.Money(rng.Int64N(int64(tok("20")))),
				PowerLimitW:    150 + 10*rng.IntN(31),
				State:          market.BidActive, ExpiresAt: t0.Add(time.Hour), Seq: int64(i),
			},
			Balance: market.Money(rng.Int64N(int64(tok("50")))),
		}
		if rng.IntN(4) == 0 {
			e.Bid.CoreLockMHz = 1800
		}
		if len(m.Bids) == 0 {
			m.Running = []market.BidID{e.Bid.ID}
		}
		m.Bids = append(m.Bids, e)
	}
	return r
}

func benchClear(b *testing.B, machines, bids int) {
	r := benchRound(machines, bids)
	b.ReportAllocs()
	b.ResetTimer()
	var d Decision
	for b.Loop() {
		d = Clear(r)
	}
	b.StopTimer()
	won, dropped := 0, 0
	for _, md := range d.Machines {
		won += len(md.Winners)
		for _, c := range md.Candidates {
			if !c.Feasible() {
				dropped++
			}
		}
	}
	b.ReportMetric(float64(won), "winners")
	b.ReportMetric(float64(dropped), "dropped")
}

func BenchmarkClear10kMachines50kBids(b *testing.B) { benchClear(b, 10_000, 50_000) }

func BenchmarkClear100kMachines1MBids(b *testing.B) { benchClear(b, 100_000, 1_000_000) }
