package auction

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/gpumarket/gpumarket/internal/market"
)

// genMachine draws a machine of up to 8 GPUs with up to maxBids bids, with
// prices and GPU counts from small sets so that ties are common. wild
// widens every range to include invalid and extreme values.
func genMachine(t *rapid.T, maxBids int, wild bool) Machine {
	nCards := rapid.IntRange(1, 8).Draw(t, "cards")
	m := Machine{ID: "m-1", Owner: "a-host", Free: rapid.IntRange(0, nCards).Draw(t, "free")}
	for range nCards {
		m.Cards = append(m.Cards, Card{MinPowerW: rapid.IntRange(80, 150).Draw(t, "cardmin"), MaxPowerW: 450})
	}
	m.Terms = market.SpotTerms{
		ReservePerGPUDay: market.Money(rapid.IntRange(0, 4).Draw(t, "reserve")) * market.Micro,
		EnergyPerKWh:     market.Money(rapid.IntRange(0, 5).Draw(t, "energy")) * market.Micro / 10,
		MaxPowerW:        rapid.IntRange(200, 450).Draw(t, "maxpower"),
		CoreLockMHz:      market.ClockRange{Min: 500, Max: 2000},
		CoreOffsetMHz:    market.ClockRange{Min: -100, Max: 100},
	}
	if wild {
		m.Free = rapid.IntRange(-1, 9).Draw(t, "free")
		m.Terms.ReservePerGPUDay = wildMoney(rapid.Int64().Draw(t, "reserve"))
		m.Terms.EnergyPerKWh = wildMoney(rapid.Int64().Draw(t, "energy"))
		m.Terms.MaxPowerW = rapid.IntRange(-1, 200_000).Draw(t, "maxpower")
	}
	n := rapid.IntRange(0, maxBids).Draw(t, "bids")
	for i := range n {
		e := Entry{
			Bid: market.Bid{
				ID:             market.BidID(fmt.Sprintf("b-%d", rapid.IntRange(0, 2*maxBids).Draw(t, "id"))),
				Bidder:         market.AccountID(fmt.Sprintf("a-%d", i)),
				Machine:        "m-1",
				GPUs:           rapid.IntRange(1, 4).Draw(t, "gpus"),
				PricePerGPUDay: market.Money(rapid.SampledFrom([]int64{1, 2, 3, 4, 6, 8, 10, 12}).Draw(t, "price")) * market.Micro,
				PowerLimitW:    rapid.SampledFrom([]int{100, 150, 200, 250, 300}).Draw(t, "power"),
				State:          market.BidActive,
				ExpiresAt:      t0.Add(time.Hour),
				Seq:            rapid.Int64Range(0, int64(maxBids)).Draw(t, "seq"),
			},
			Balance: market.Money(rapid.IntRange(0, 10).Draw(t, "balance")) * market.Micro,
		}
		if rapid.IntRange(0, 9).Draw(t, "oddity") == 0 {
			switch rapid.IntRange(0, 5).Draw(t, "kind") {
			case 0:
				e.Bid.State = market.BidCancelled
			case 1:
				e.Bid.ExpiresAt = t0
			case 2:
				e.Bid.Bidder = m.Owner
			case 3:
				e.Bid.CoreLockMHz = rapid.IntRange(0, 3000).Draw(t, "corelock")
			case 4:
				e.Bid.CoreOffsetMHz = rapid.IntRange(-200, 200).Draw(t, "coreoffset")
			case 5:
				e.Bid.GPUs = rapid.IntRange(0, 9).Draw(t, "gpus")
			}
		}
		if wild {
			e.Bid.GPUs = rapid.IntRange(-1, 1100).Draw(t, "gpus")
			e.Bid.PricePerGPUDay = wildMoney(rapid.Int64().Draw(t, "price"))
			e.Bid.PowerLimitW = rapid.IntRange(-1, 200_000).Draw(t, "power")
			e.Bid.Seq = rapid.Int64().Draw(t, "seq")
			e.Balance = wildMoney(rapid.Int64().Draw(t, "balance"))
			if rapid.Bool().Draw(t, "othermachine") {
				e.Bid.Machine = "m-2"
			}
		}
		m.Bids = append(m.Bids, e)
	}
	for _, e := range m.Bids {
		if rapid.IntRange(0, 3).Draw(t, "running") == 0 {
			m.Running = append(m.Running, e.Bid.ID)
		}
	}
	if rapid.IntRange(0, 9).Draw(t, "ghost") == 0 {
		m.Running = append(m.Running, "b-ghost")
	}
	return m
}

// wildMoney avoids math.MinInt64, which market.ParseMoney refuses, so
// that a round survives its JSON round trip.
func wildMoney(v int64) market.Money {
	return market.Money(max(v, math.MinInt64+1))
}

func genRound(t *rapid.T, maxMachines, maxBids int, wild bool) Round {
	r := Round{
		At:           t0,
		Interval:     time.Duration(rapid.IntRange(1, 120).Draw(t, "minutes")) * time.Minute,
		MinIncrement: BasisPoints(rapid.IntRange(0, 2000).Draw(t, "inc")),
	}
	if wild {
		r.Interval = time.Duration(rapid.Int64Range(-1, int64(25*time.Hour)).Draw(t, "interval"))
		r.MinIncrement = BasisPoints(rapid.Int64Range(-1, int64(MaxIncrement)+1).Draw(t, "inc"))
	}
	for i := range rapid.IntRange(1, maxMachines).Draw(t, "machines") {
		m := genMachine(t, maxBids, wild)
		m.ID = market.MachineID(fmt.Sprintf("m-%d", i))
		for j := range m.Bids {
			if m.Bids[j].Bid.Machine == "m-1" {
				m.Bids[j].Bid.Machine = m.ID
			}
		}
		r.Machines = append(r.Machines, m)
	}
	return r
}

// setProfit returns the total profit of the candidates in mask.
func setProfit(cands []Candidate, mask uint32) (int64, int) {
	var p int64
	g := 0
	for k := range cands {
		if mask&(1<<k) != 0 {
			p += int64(cands[k].Profit)
			g += cands[k].GPUs
		}
	}
	return p, g
}

// bruteBest enumerates every set of feasible candidates that fits free and
// contains must, and returns the best by profit, ties to the set holding the
// earliest candidate in which two sets differ.
func bruteBest(cands []Candidate, free int, must uint32) (uint32, int64) {
	var feasible uint32
	for k, c := range cands {
		if c.Feasible() {
			feasible |= 1 << k
		}
	}
	best, bestP := uint32(0), int64(-1)
	for mask := uint32(0); mask < 1<<len(cands); mask++ {
		if mask&^feasible != 0 || mask&must != must {
			continue
		}
		p, g := setProfit(cands, mask)
		if g > free {
			continue
		}
		diff := mask ^ best
		if p > bestP || (p == bestP && mask&(diff&-diff) != 0) {
			best, bestP = mask, p
		}
	}
	return best, bestP
}

// refProfit computes a bid's profit with big rationals, floored.
func refProfit(b market.Bid, energy market.Money, interval time.Duration) (market.Money, bool) {
	day := new(big.Rat).SetFrac64(int64(interval), int64(24*time.Hour))
	rev := new(big.Rat).Mul(big.NewRat(int64(b.PricePerGPUDay)*int64(b.GPUs), 1), day)
	wns := new(big.Int).Mul(big.NewInt(int64(b.PowerLimitW)*int64(b.GPUs)), big.NewInt(int64(interval)))
	kwh := new(big.Rat).SetFrac(wns, big.NewInt(1000*int64(time.Hour)))
	cost := new(big.Rat).Mul(big.NewRat(int64(energy), 1), kwh)
	p := new(big.Rat).Sub(rev, cost)
	if p.Sign() < 0 {
		return 0, false
	}
	q := new(big.Int).Quo(p.Num(), p.Denom())
	return market.Money(q.Int64()), true
}

// checkInvariants checks what must hold for any round: it is the oracle of
// the property and fuzz tests.
func checkInvariants(t *rapid.T, r Round, d Decision) {
	if d.Error != "" {
		if d.Machines != nil {
			t.Fatalf("round error %q but machines decided", d.Error)
		}
		return
	}
	if len(d.Machines) != len(r.Machines) {
		t.Fatalf("%d machine decisions for %d machines", len(d.Machines), len(r.Machines))
	}
	for i, md := range d.Machines {
		m := r.Machines[i]
		if len(md.Candidates) != len(m.Bids) {
			t.Fatalf("%s: %d candidates for %d bids", m.ID, len(md.Candidates), len(m.Bids))
		}
		for k := 1; k < len(md.Candidates); k++ {
			a, b := md.Candidates[k-1], md.Candidates[k]
			if a.Seq > b.Seq || (a.Seq == b.Seq && a.Bid > b.Bid) {
				t.Fatalf("%s: candidates not in book order at %d", m.ID, k)
			}
		}
		byID := map[market.BidID]Candidate{}
		for _, c := range md.Candidates {
			if c.Drop != DropDuplicate {
				byID[c.Bid] = c
			}
		}
		used := 0
		var total int64
		won := map[market.BidID]bool{}
		for _, w := range md.Winners {
			c, ok := byID[w.Bid]
			if !ok || !c.Feasible() || c.GPUs != w.GPUs || c.Profit != w.Profit {
				t.Fatalf("%s: winner %+v is not a feasible candidate (%+v)", m.ID, w, c)
			}
			if won[w.Bid] {
				t.Fatalf("%s: %s wins twice", m.ID, w.Bid)
			}
			won[w.Bid] = true
			used += w.GPUs
			total += int64(w.Profit)
		}
		if used > max(m.Free, 0) {
			t.Fatalf("%s: winners hold %d GPUs, only %d free", m.ID, used, m.Free)
		}
		if total != int64(md.Profit) {
			t.Fatalf("%s: profit %d, winners sum to %d", m.ID, md.Profit, total)
		}
		preempted := map[market.BidID]bool{}
		for _, p := range md.Preempted {
			if won[p.Bid] || preempted[p.Bid] {
				t.Fatalf("%s: %s preempted twice or while winning", m.ID, p.Bid)
			}
			preempted[p.Bid] = true
			if p.Reason == PreemptOutbid {
				// Beaten by the replacing set by at least the increment.
				if md.Incumbency != Displaced || !Beats(md.Profit, md.IncumbentProfit, d.MinIncrement) {
					t.Fatalf("%s: %s outbid, but profit %d vs incumbents' %d (%s)", m.ID, p.Bid, md.Profit, md.IncumbentProfit, md.Incumbency)
				}
			}
		}
		for _, id := range m.Running {
			if !won[id] && !preempted[id] {
				t.Fatalf("%s: running %s neither wins nor is preempted", m.ID, id)
			}
		}
		for _, w := range md.Winners {
			if w.Running != slices.Contains(m.Running, w.Bid) {
				t.Fatalf("%s: winner %s running = %v", m.ID, w.Bid, w.Running)
			}
		}
		switch md.Incumbency {
		case Kept:
			if md.Profit != md.IncumbentProfit || Beats(md.BestProfit, md.IncumbentProfit, d.MinIncrement) {
				t.Fatalf("%s: kept incumbents at %d though best is %d", m.ID, md.IncumbentProfit, md.BestProfit)
			}
		default:
			if md.Profit != md.BestProfit {
				t.Fatalf("%s: %s but profit %d is not the best %d", m.ID, md.Incumbency, md.Profit, md.BestProfit)
			}
		}
	}
	// Determinism: again, and again after a JSON round trip of the input.
	if _, ok := Replay(r, d); !ok {
		t.Fatalf("Clear is not deterministic")
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var r2 Round
	if err := json.Unmarshal(b, &r2); err != nil {
		t.Fatal(err)
	}
	if _, ok := Replay(r2, d); !ok {
		t.Fatalf("replay after a JSON round trip differs")
	}
}

// TestClearMatchesBruteForce: for machines of up to 8 GPUs and 12 bids the
// chosen set is the brute-force optimum, with incumbents protected exactly
// as the rule says.
func TestClearMatchesBruteForce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRound(t, 1, 12, false)
		d := Clear(r)
		checkInvariants(t, r, d)
		m, md := r.Machines[0], d.Machines[0]
		cands := md.Candidates
		for k, c := range cands {
			if !c.Feasible() {
				continue
			}
			var b market.Bid
			for _, e := range m.Bids {
				if e.Bid.ID == c.Bid && e.Bid.Seq == c.Seq {
					b = e.Bid // the first in input order is the earlier in the book
					break
				}
			}
			want, ok := refProfit(b, m.Terms.EnergyPerKWh, r.Interval)
			if !ok || want != c.Profit {
				t.Fatalf("candidate %d: profit %d, reference %d (ok %v)", k, c.Profit, want, ok)
			}
		}
		var winMask uint32
		for _, w := range md.Winners {
			for k, c := range cands {
				if c.Bid == w.Bid && c.Feasible() {
					winMask |= 1 << k
				}
			}
		}
		best, bestP := bruteBest(cands, m.Free, 0)
		if bestP != int64(md.BestProfit) {
			t.Fatalf("best profit %d, brute force %d", md.BestProfit, bestP)
		}
		var run uint32
		for k, c := range cands {
			if c.Feasible() && slices.Contains(m.Running, c.Bid) {
				run |= 1 << k
			}
		}
		_, runG := setProfit(cands, run)
		want := best
		switch {
		case run == 0 || runG > m.Free:
		default:
			inc, incP := bruteBest(cands, m.Free, run)
			if incP != int64(md.IncumbentProfit) {
				t.Fatalf("incumbents' profit %d, brute force %d", md.IncumbentProfit, incP)
			}
			if !beatsRef(bestP, incP, d.MinIncrement) {
				want = inc
			}
		}
		if winMask != want {
			t.Fatalf("winners %b, brute force %b (best %b); candidates %+v", winMask, want, best, cands)
		}
	})
}

// beatsRef is Beats with big integers.
func beatsRef(ch, inc int64, bp BasisPoints) bool {
	l := new(big.Int).Mul(big.NewInt(ch), big.NewInt(10_000))
	r := new(big.Int).Mul(big.NewInt(inc), big.NewInt(10_000+int64(bp)))
	return ch > inc && l.Cmp(r) >= 0
}

func TestBeats(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ch := rapid.Int64Range(0, 1<<62).Draw(t, "ch")
		inc := rapid.Int64Range(0, 1<<62).Draw(t, "inc")
		bp := BasisPoints(rapid.Int64Range(0, int64(MaxIncrement)).Draw(t, "bp"))
		if got, want := Beats(market.Money(ch), market.Money(inc), bp), beatsRef(ch, inc, bp); got != want {
			t.Fatalf("Beats(%d, %d, %d) = %v", ch, inc, bp, got)
		}
	})
}

func TestProfitMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := market.Bid{
			PricePerGPUDay: market.Money(rapid.Int64Range(0, int64(MaxPricePerGPUDay)).Draw(t, "price")),
			PowerLimitW:    rapid.IntRange(0, MaxPowerW).Draw(t, "power"),
			GPUs:           rapid.IntRange(1, MaxGPUs).Draw(t, "gpus"),
		}
		energy := market.Money(rapid.Int64Range(0, 1<<40).Draw(t, "energy"))
		interval := time.Duration(rapid.Int64Range(1, int64(MaxInterval)).Draw(t, "interval"))
		got, ok := Profit(b.PricePerGPUDay, energy, b.PowerLimitW, b.GPUs, interval)
		want, wantOK := refProfit(b, energy, interval)
		if ok != wantOK || got != want {
			t.Fatalf("Profit = %d, %v; reference %d, %v", got, ok, want, wantOK)
		}
		cost := Cost(b.PricePerGPUDay, b.GPUs, interval)
		exact := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(int64(b.PricePerGPUDay)*int64(b.GPUs)), big.NewInt(int64(interval))), big.NewInt(int64(24*time.Hour)))
		if c := new(big.Rat).SetInt64(int64(cost)); c.Cmp(exact) < 0 || new(big.Rat).Sub(c, exact).Cmp(big.NewRat(1, 1)) >= 0 {
			t.Fatalf("Cost = %d, exact %s", cost, exact.FloatString(3))
		}
	})
}

// TestInvariantsManyMachines runs the invariants over rounds with several
// machines, including invalid and extreme values.
func TestInvariantsManyMachines(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		wild := rapid.Bool().Draw(t, "wild")
		r := genRound(t, 4, 12, wild)
		checkInvariants(t, r, Clear(r))
	})
}

func FuzzClear(f *testing.F) {
	prop := rapid.MakeFuzz(func(t *rapid.T) {
		r := genRound(t, 3, 20, rapid.Bool().Draw(t, "wild"))
		checkInvariants(t, r, Clear(r))
	})
	f.Add([]byte{})
	f.Add([]byte{0xff, 0x01, 0x80, 0x7f, 0x00, 0x33, 0x99, 0xaa, 0x10, 0x20})
	f.Fuzz(prop)
}
