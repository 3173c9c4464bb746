package auction

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const tenMin = 10 * time.Minute

func tok(s string) market.Money {
	m, err := market.ParseMoney(s)
	if err != nil {
		panic(err)
	}
	return m
}

// testMachine has 4 cards of [100 W, 450 W], a host maximum of 350 W, a
// reserve of 1 token per GPU-day, energy at 0.20 per kWh and clock ranges.
func testMachine() Machine {
	return Machine{
		ID:    "m-1",
		Owner: "a-host",
		Cards: []Card{{100, 450}, {100, 450}, {120, 450}, {100, 450}},
		Free:  4,
		Terms: market.SpotTerms{
			ReservePerGPUDay: tok("1"),
			EnergyPerKWh:     tok("0.2"),
			MaxPowerW:        350,
			CoreLockMHz:      market.ClockRange{Min: 500, Max: 2500},
			MemLockMHz:       market.ClockRange{Min: 800, Max: 10000},
			CoreOffsetMHz:    market.ClockRange{Min: -200, Max: 200},
			MemOffsetMHz:     market.ClockRange{Min: -500, Max: 1000},
		},
	}
}

// bid is a feasible 1-GPU bid at 10 tokens per GPU-day and 300 W by a
// well-funded bidder.
func bid(id string, seq int64) Entry {
	return Entry{
		Bid: market.Bid{
			ID: market.BidID(id), Bidder: market.AccountID("a-" + id), Machine: "m-1",
			GPUs: 1, PricePerGPUDay: tok("10"), PowerLimitW: 300,
			State: market.BidActive, CreatedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(time.Hour), Seq: seq,
		},
		Balance: tok("100"),
	}
}

func with(e Entry, f func(*Entry)) Entry { f(&e); return e }

func round(ms ...Machine) Round {
	return Round{At: t0, Interval: tenMin, Machines: ms}
}

func TestProfit(t *testing.T) {
	tests := []struct {
		name          string
		price, energy market.Money
		watts, gpus   int
		interval      time.Duration
		want          market.Money
		wantOK        bool
	}{
		// 10 x 2 x 600/86400 = 0.138888.. tokens of revenue;
		// 0.2 x 0.3 kW x 2 x 1/6 h = 0.02 tokens of energy; rounded down.
		{"example", tok("10"), tok("0.2"), 300, 2, tenMin, 118888, true},
		{"no energy cost", tok("24"), 0, 300, 1, time.Hour, tok("1"), true},
		{"whole day", tok("10"), tok("1"), 1000, 1, 24 * time.Hour, tok("10") - tok("24"), false},
		// 24 x 0.5 kWh/day x 1 token = 12 tokens: exactly break-even.
		{"break even", tok("12"), tok("1"), 500, 3, time.Hour, 0, true},
		{"one micro short", tok("12") - 1, tok("1"), 500, 3, time.Hour, 0, false},
		{"rounds down", 1, 0, 100, 1, time.Hour, 0, true},
		{"largest inputs", MaxPricePerGPUDay, 0, 1, MaxGPUs, MaxInterval, MaxPricePerGPUDay * MaxGPUs, true},
		{"price above limit", MaxPricePerGPUDay + 1, 0, 1, 1, time.Hour, 0, false},
		{"huge energy", tok("10"), market.Money(1 << 62), 100_000, 1, time.Hour, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Profit(tt.price, tt.energy, tt.watts, tt.gpus, tt.interval)
			if tt.wantOK != ok || (ok && got != tt.want) {
				t.Errorf("Profit = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCost(t *testing.T) {
	if got, want := Cost(tok("10"), 2, tenMin), market.Money(138889); got != want {
		t.Errorf("Cost = %d, want %d (rounded up)", got, want)
	}
	if got, want := Cost(tok("24"), 1, time.Hour), tok("1"); got != want {
		t.Errorf("Cost = %d, want %d", got, want)
	}
}

func TestDropReasons(t *testing.T) {
	m := testMachine()
	tests := []struct {
		name     string
		e        Entry
		free     int
		want     Reason
		got, lim int64
	}{
		{"feasible", bid("b-1", 1), 4, "", 0, 0},
		{"wrong machine", with(bid("b-1", 1), func(e *Entry) { e.Bid.Machine = "m-2" }), 4, DropWrongMachine, 0, 0},
		{"cancelled", with(bid("b-1", 1), func(e *Entry) { e.Bid.State = market.BidCancelled }), 4, DropCancelled, 0, 0},
		{"expired state", with(bid("b-1", 1), func(e *Entry) { e.Bid.State = market.BidExpired }), 4, DropExpired, 0, 0},
		{"lifetime over", with(bid("b-1", 1), func(e *Entry) { e.Bid.ExpiresAt = t0 }), 4, DropExpired, 0, 0},
		{"no expiry", with(bid("b-1", 1), func(e *Entry) { e.Bid.ExpiresAt = time.Time{} }), 4, "", 0, 0},
		{"winning is open", with(bid("b-1", 1), func(e *Entry) { e.Bid.State = market.BidWinning }), 4, "", 0, 0},
		{"outbid is open", with(bid("b-1", 1), func(e *Entry) { e.Bid.State = market.BidOutbid }), 4, "", 0, 0},
		{"self dealing", with(bid("b-1", 1), func(e *Entry) { e.Bid.Bidder = "a-host" }), 4, DropSelfDealing, 0, 0},
		{"zero gpus", with(bid("b-1", 1), func(e *Entry) { e.Bid.GPUs = 0 }), 4, DropBadGPUs, 0, 1},
		{"more gpus than free", with(bid("b-1", 1), func(e *Entry) { e.Bid.GPUs = 3 }), 2, DropTooManyGPUs, 3, 2},
		{"all free gpus", with(bid("b-1", 1), func(e *Entry) { e.Bid.GPUs = 2 }), 2, "", 0, 0},
		{"power below card minimum", with(bid("b-1", 1), func(e *Entry) { e.Bid.PowerLimitW = 110 }), 4, DropPowerLow, 110, 120},
		{"power at card minimum", with(bid("b-1", 1), func(e *Entry) { e.Bid.PowerLimitW = 120 }), 4, "", 0, 0},
		{"power zero", with(bid("b-1", 1), func(e *Entry) { e.Bid.PowerLimitW = 0 }), 4, DropPowerLow, 0, 120},
		{"power above host maximum", with(bid("b-1", 1), func(e *Entry) { e.Bid.PowerLimitW = 351 }), 4, DropPowerHigh, 351, 350},
		{"power at host maximum", with(bid("b-1", 1), func(e *Entry) { e.Bid.PowerLimitW = 350 }), 4, "", 0, 0},
		{"core lock", with(bid("b-1", 1), func(e *Entry) { e.Bid.CoreLockMHz = 3000 }), 4, DropCoreLock, 3000, 0},
		{"core lock ok", with(bid("b-1", 1), func(e *Entry) { e.Bid.CoreLockMHz = 2500 }), 4, "", 0, 0},
		{"per-GPU core lock, second out of range", with(bid("b-1", 1), func(e *Entry) {
			e.Bid.GPUs, e.Bid.GPUClocks = 2, []market.Clocks{{CoreLockMHz: 2000}, {CoreLockMHz: 2600}}
		}), 4, DropCoreLock, 2600, 0},
		{"per-GPU clocks in range", with(bid("b-1", 1), func(e *Entry) {
			e.Bid.GPUs, e.Bid.GPUClocks = 2, []market.Clocks{{CoreLockMHz: 2000}, {CoreLockMHz: 2500, MemLockMHz: 0}}
		}), 4, "", 0, 0},
		{"mem lock", with(bid("b-1", 1), func(e *Entry) { e.Bid.MemLockMHz = 700 }), 4, DropMemLock, 700, 0},
		{"core offset", with(bid("b-1", 1), func(e *Entry) { e.Bid.CoreOffsetMHz = -201 }), 4, DropCoreOffset, -201, 0},
		{"core offset ok", with(bid("b-1", 1), func(e *Entry) { e.Bid.CoreOffsetMHz = -200 }), 4, "", 0, 0},
		{"mem offset", with(bid("b-1", 1), func(e *Entry) { e.Bid.MemOffsetMHz = 1001 }), 4, DropMemOffset, 1001, 0},
		{"below reserve", with(bid("b-1", 1), func(e *Entry) { e.Bid.PricePerGPUDay = tok("0.999999") }), 4, DropBelowReserve, 999999, 1_000_000},
		{"at reserve", with(bid("b-1", 1), func(e *Entry) { e.Bid.PricePerGPUDay = tok("1"); e.Bid.PowerLimitW = 200 }), 4, "", 0, 0},
		{"negative price", with(bid("b-1", 1), func(e *Entry) { e.Bid.PricePerGPUDay = -1 }), 4, DropBelowReserve, -1, 1_000_000},
		{"price too high", with(bid("b-1", 1), func(e *Entry) { e.Bid.PricePerGPUDay = MaxPricePerGPUDay + 1 }), 4, DropPriceTooHigh, int64(MaxPricePerGPUDay + 1), int64(MaxPricePerGPUDay)},
		// 300 W for a day is 7.2 kWh: 1.44 tokens at 0.20.
		{"unprofitable", with(bid("b-1", 1), func(e *Entry) { e.Bid.PricePerGPUDay = tok("1.43") }), 4, DropUnprofitable, 1_430_000, 1_440_000},
		{"break even", with(bid("b-1", 1), func(e *Entry) { e.Bid.PricePerGPUDay = tok("1.44") }), 4, "", 0, 0},
		// 10 tokens/day for 10 minutes costs 0.069445 (rounded up).
		{"cannot pay", with(bid("b-1", 1), func(e *Entry) { e.Balance = 69444 }), 4, DropCannotPay, 69444, 69445},
		{"can just pay", with(bid("b-1", 1), func(e *Entry) { e.Balance = 69445 }), 4, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := m
			m.Free = tt.free
			m.Bids = []Entry{tt.e}
			d := Clear(round(m))
			c := d.Machines[0].Candidates[0]
			if c.Drop != tt.want || c.Got != tt.got || c.Limit != tt.lim {
				t.Errorf("drop = %q (got %d, limit %d), want %q (got %d, limit %d)", c.Drop, c.Got, c.Limit, tt.want, tt.got, tt.lim)
			}
			if msg := c.Message(); (msg == "") != (tt.want == "") {
				t.Errorf("Message() = %q", msg)
			}
			if won := len(d.Machines[0].Winners) == 1; won != (tt.want == "") {
				t.Errorf("won = %v, want %v", won, tt.want == "")
			}
		})
	}
}

func TestDropMessagesNameTheLimit(t *testing.T) {
	tests := []struct {
		c    Candidate
		want string
	}{
		{Candidate{Drop: DropPowerHigh, Got: 500, Limit: 350}, "power limit 500 W is above this machine's maximum of 350 W"},
		{Candidate{Drop: DropPowerLow, Got: 50, Limit: 100}, "power limit 50 W is below this machine's minimum of 100 W"},
		{Candidate{Drop: DropBelowReserve, Got: 500_000, Limit: 1_000_000}, "price 0.50 per GPU-day is below this machine's reserve of 1.00"},
		{Candidate{Drop: DropTooManyGPUs, Got: 5, Limit: 4}, "the bid asks for 5 GPUs but only 4 are free for spot"},
		{Candidate{Drop: DropMemOffset, Got: 1001}, "memory clock offset 1001 MHz is outside this machine's allowed range"},
	}
	for _, tt := range tests {
		if got := tt.c.Message(); got != tt.want {
			t.Errorf("Message() = %q, want %q", got, tt.want)
		}
	}
}

func TestDuplicateAndBookOrder(t *testing.T) {
	m := testMachine()
	m.Bids = []Entry{bid("b-3", 3), bid("b-1", 7), bid("b-2", 3), bid("b-1", 1)}
	d := Clear(round(m))
	var got []string
	for _, c := range d.Machines[0].Candidates {
		got = append(got, string(c.Bid)+":"+string(c.Drop))
	}
	want := []string{"b-1:", "b-2:", "b-3:", "b-1:duplicate"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("candidates (-want +got):\n%s", diff)
	}
}

// winners returns the IDs of machine 0's winners.
func winners(d Decision) []string {
	var ids []string
	for _, w := range d.Machines[0].Winners {
		ids = append(ids, string(w.Bid))
	}
	return ids
}

func preempted(d Decision) []string {
	var ids []string
	for _, p := range d.Machines[0].Preempted {
		ids = append(ids, string(p.Bid)+":"+string(p.Reason))
	}
	return ids
}

func gpus(n int, price string) func(*Entry) {
	return func(e *Entry) { e.Bid.GPUs = n; e.Bid.PricePerGPUDay = tok(price) }
}

// wholeDayNoEnergy makes profits equal prices, to test exact boundaries.
func wholeDayNoEnergy(r *Round) {
	r.Interval = 24 * time.Hour
	r.Machines[0].Terms.EnergyPerKWh = 0
}

func TestSelection(t *testing.T) {
	tests := []struct {
		name    string
		free    int
		bids    []Entry
		running []market.BidID
		inc     BasisPoints
		want    []string
		wantPre []string
		wantInc Incumbency
		setup   func(*Round)
	}{
		{
			name: "knapsack beats greedy",
			free: 4,
			// Per GPU, b-1 pays most, but b-2 + b-3 fill the machine for more.
			bids: []Entry{
				with(bid("b-1", 1), gpus(3, "20")),
				with(bid("b-2", 2), gpus(2, "18")),
				with(bid("b-3", 3), gpus(2, "18")),
			},
			want: []string{"b-2", "b-3"}, wantInc: NoIncumbents,
		},
		{
			name: "tie goes to the earlier bid",
			free: 1,
			bids: []Entry{bid("b-2", 2), bid("b-1", 5), bid("b-3", 1)},
			want: []string{"b-3"}, wantInc: NoIncumbents,
		},
		{
			name: "tie between sets goes to the set with the earliest bid",
			free: 2,
			bids: []Entry{
				with(bid("b-1", 1), gpus(2, "10")),
				bid("b-2", 2), bid("b-3", 3),
			},
			want: []string{"b-1"}, wantInc: NoIncumbents,
		},
		{
			name: "energy decides between equal prices",
			free: 1,
			bids: []Entry{
				bid("b-1", 1),
				with(bid("b-2", 2), func(e *Entry) { e.Bid.PowerLimitW = 200 }),
			},
			want: []string{"b-2"}, wantInc: NoIncumbents,
		},
		{
			name: "nothing free",
			free: 0,
			bids: []Entry{bid("b-1", 1)},
			want: nil, wantInc: NoIncumbents,
		},
		{
			name:    "incumbent kept below the increment",
			free:    1,
			bids:    []Entry{bid("b-1", 1), with(bid("b-2", 2), gpus(1, "10.4"))},
			running: []market.BidID{"b-1"},
			want:    []string{"b-1"}, wantInc: Kept,
		},
		{
			name:    "incumbent kept at 4.4% better",
			free:    1,
			bids:    []Entry{with(bid("b-1", 1), gpus(1, "10.5")), with(bid("b-2", 2), gpus(1, "10.9"))},
			running: []market.BidID{"b-1"},
			// Profits per day at 300 W and 0.20/kWh: 9.06 and 9.46.
			want: []string{"b-1"}, wantInc: Kept,
		},
		{
			name:    "displaced at exactly the increment",
			free:    1,
			setup:   wholeDayNoEnergy,
			bids:    []Entry{bid("b-1", 1), with(bid("b-2", 2), gpus(1, "10.5"))},
			running: []market.BidID{"b-1"},
			want:    []string{"b-2"}, wantPre: []string{"b-1:outbid"}, wantInc: Displaced,
		},
		{
			name:    "kept one micro-token below the increment",
			free:    1,
			setup:   wholeDayNoEnergy,
			bids:    []Entry{bid("b-1", 1), with(bid("b-2", 2), gpus(1, "10.499999"))},
			running: []market.BidID{"b-1"},
			want:    []string{"b-1"}, wantInc: Kept,
		},
		{
			name:    "incumbent displaced by a set 5% better",
			free:    1,
			bids:    []Entry{bid("b-1", 1), with(bid("b-2", 2), gpus(1, "11"))},
			running: []market.BidID{"b-1"},
			want:    []string{"b-2"}, wantPre: []string{"b-1:outbid"}, wantInc: Displaced,
		},
		{
			name:    "a 1 bp increment still needs a strictly better set",
			free:    1,
			inc:     1,
			bids:    []Entry{bid("b-1", 2), bid("b-0", 1)},
			running: []market.BidID{"b-1"},
			want:    []string{"b-1"}, wantInc: Kept,
		},
		{
			name: "incumbents' set includes the best fill",
			free: 4,
			// Keeping b-1 and filling with b-3 (1.95 x 3 GPUs) is within 5%
			// of the best set b-2 + b-3.
			bids: []Entry{
				bid("b-1", 1),
				with(bid("b-2", 2), gpus(1, "10.3")),
				with(bid("b-3", 3), gpus(3, "10")),
			},
			running: []market.BidID{"b-1"},
			want:    []string{"b-1", "b-3"}, wantInc: Kept,
		},
		{
			name:    "running winner that became infeasible",
			free:    2,
			bids:    []Entry{with(bid("b-1", 1), func(e *Entry) { e.Balance = 0 }), bid("b-2", 2)},
			running: []market.BidID{"b-1"},
			want:    []string{"b-2"}, wantPre: []string{"b-1:cannot_pay"}, wantInc: NoIncumbents,
		},
		{
			name:    "running winner gone from the book",
			free:    2,
			bids:    []Entry{bid("b-2", 2)},
			running: []market.BidID{"b-1", "b-1"},
			want:    []string{"b-2"}, wantPre: []string{"b-1:gone"}, wantInc: NoIncumbents,
		},
		{
			name: "on-demand took GPUs: running winners no longer fit",
			free: 2,
			bids: []Entry{
				with(bid("b-1", 1), gpus(1, "5")),
				with(bid("b-2", 2), gpus(2, "10")),
			},
			running: []market.BidID{"b-1", "b-2"},
			want:    []string{"b-2"}, wantPre: []string{"b-1:no_room"}, wantInc: NoRoom,
		},
		{
			name:    "running winner whose GPUs were taken",
			free:    1,
			bids:    []Entry{with(bid("b-1", 1), gpus(2, "10")), bid("b-2", 2)},
			running: []market.BidID{"b-1"},
			want:    []string{"b-2"}, wantPre: []string{"b-1:too_many_gpus"}, wantInc: NoIncumbents,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMachine()
			m.Free, m.Bids, m.Running = tt.free, tt.bids, tt.running
			r := round(m)
			r.MinIncrement = tt.inc
			if tt.setup != nil {
				tt.setup(&r)
			}
			d := Clear(r)
			if diff := cmp.Diff(tt.want, winners(d)); diff != "" {
				t.Errorf("winners (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPre, preempted(d)); diff != "" {
				t.Errorf("preempted (-want +got):\n%s", diff)
			}
			if got := d.Machines[0].Incumbency; got != tt.wantInc {
				t.Errorf("incumbency = %q, want %q", got, tt.wantInc)
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	if d := Clear(Round{At: t0}); d.Error == "" || d.Machines != nil {
		t.Errorf("zero interval: got %+v, want an error", d)
	}
	if d := Clear(Round{At: t0, Interval: 25 * time.Hour}); d.Error == "" {
		t.Error("25 h interval: no error")
	}
	if d := Clear(Round{At: t0, Interval: tenMin, MinIncrement: -1}); d.Error == "" {
		t.Error("negative increment: no error")
	}
	if d := Clear(round()); d.MinIncrement != DefaultMinIncrement {
		t.Errorf("increment = %d, want the default %d", d.MinIncrement, DefaultMinIncrement)
	}
	m := testMachine()
	m.Terms.EnergyPerKWh = -1
	m.Bids = []Entry{bid("b-1", 1)}
	m.Running = []market.BidID{"b-1"}
	d := Clear(round(m))
	md := d.Machines[0]
	if md.Error == "" || len(md.Winners) != 0 || len(md.Preempted) != 1 || md.Candidates[0].Drop != PreemptBadMachine {
		t.Errorf("negative energy price: got %+v", md)
	}
	m = testMachine()
	m.Free = 5
	if md := Clear(round(m)).Machines[0]; md.Error == "" {
		t.Error("more free GPUs than cards: no error")
	}
}

func TestReplayAfterJSON(t *testing.T) {
	m := testMachine()
	m.Bids = []Entry{
		with(bid("b-1", 1), gpus(3, "20")),
		with(bid("b-2", 2), gpus(2, "18")),
		with(bid("b-3", 3), func(e *Entry) { e.Bid.PowerLimitW = 999; e.Bid.Env = map[string]string{"B": "2", "A": "1"} }),
		bid("b-4", 4),
	}
	m.Running = []market.BidID{"b-1", "b-9"}
	m2 := testMachine()
	m2.ID = "m-2"
	r := round(m, m2)
	d := Clear(r)

	rb, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	db, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var r2 Round
	var d2 Decision
	if err := json.Unmarshal(rb, &r2); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(db, &d2); err != nil {
		t.Fatal(err)
	}
	got, ok := Replay(r2, d2)
	if !ok {
		t.Errorf("replay after JSON does not match")
	}
	if diff := cmp.Diff(d, got); diff != "" {
		t.Errorf("replayed decision (-first +replayed):\n%s", diff)
	}
	d2.Machines[0].Winners[0].GPUs++
	if _, ok := Replay(r2, d2); ok {
		t.Error("replay matched a tampered decision")
	}
}
