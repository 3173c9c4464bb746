// Package auction clears gpumarket's spot market. Clear takes one round's
// input (the time, the interval, and each machine's free GPUs, spot terms,
// running winners and book of bids) and returns a Decision: for each machine
// the candidate bids with their host profit or the reason they were dropped,
// the winners and the preempted bids.
//
// It is pure: no I/O, no clock, no randomness, no map iteration, so the same
// Round always gives the same Decision, which is what `auction replay` checks.
//
// It imports only internal/market and the standard library.
package auction

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// BasisPoints is a fraction in hundredths of a percent: 500 = 5%.
type BasisPoints int64

// DefaultMinIncrement is the minimum increment used when a Round leaves
// MinIncrement at zero: a set of bids must beat the running winners' set by
// 5% of its profit to displace it.
const DefaultMinIncrement BasisPoints = 500

// Limits that keep every product in the profit arithmetic inside 128 bits
// and every sum inside int64. Inputs beyond them are refused, not wrapped.
const (
	MaxGPUs                       = 1024               // free GPUs of one machine
	MaxInterval                   = 24 * time.Hour     // one round's interval
	MaxIncrement      BasisPoints = 1_000_000          // 100x
	MaxPricePerGPUDay             = market.Money(1e15) // 1e9 tokens
	MaxPowerW                     = 100_000            // per GPU
)

// Round is the input of one clearing round. It is a plain value: stored as
// JSON, it is enough for Clear to recompute the round.
type Round struct {
	At       time.Time     `json:"at"`
	Interval time.Duration `json:"interval"` // nanoseconds in JSON
	// MinIncrement is how much (in basis points of the incumbents' profit) a
	// set of bids must beat the running winners by; 0 means
	// DefaultMinIncrement.
	MinIncrement BasisPoints `json:"min_increment_bp"`
	Machines     []Machine   `json:"machines"`
}

// Card is the power range of one GPU of a machine.
type Card struct {
	MinPowerW int `json:"min_power_w"`
	MaxPowerW int `json:"max_power_w,omitempty"` // 0: unknown
}

// Machine is one machine's spot capacity and book in a round.
type Machine struct {
	ID    market.MachineID `json:"id"`
	Owner market.AccountID `json:"owner"`
	// Cards are the machine's GPUs. A bid's power limit applies to every GPU
	// it may get, so it must suit all of them.
	Cards []Card `json:"cards"`
	// Free is the number of GPUs not held by on-demand instances; GPUs held
	// by running spot winners count as free.
	Free  int              `json:"free"`
	Terms market.SpotTerms `json:"terms"`
	// Running are the bids whose instances run now (last round's winners).
	Running []market.BidID `json:"running"`
	// Bids is the machine's book, in any order.
	Bids []Entry `json:"bids"`
}

// Entry is a bid in the book with what its bidder can spend.
type Entry struct {
	Bid     market.Bid   `json:"bid"`
	Balance market.Money `json:"balance"` // the bidder's spendable balance
}

// Decision is the outcome of a round. It is a plain value, deterministic in
// the Round, and its JSON encoding is canonical (see Replay).
type Decision struct {
	MinIncrement BasisPoints       `json:"min_increment_bp"` // as applied
	Error        string            `json:"error,omitempty"`  // the round was not cleared
	Machines     []MachineDecision `json:"machines"`         // in the Round's order
}

// Incumbency says how a machine's running winners fared.
type Incumbency string

// Incumbency outcomes.
const (
	NoIncumbents Incumbency = "none"      // no running winner is still feasible
	Kept         Incumbency = "kept"      // the best set did not beat the incumbents' set by the increment
	Displaced    Incumbency = "displaced" // it did
	NoRoom       Incumbency = "no_room"   // the feasible running winners need more GPUs than are free
)

// MachineDecision is the outcome of a round on one machine.
type MachineDecision struct {
	Machine market.MachineID `json:"machine"`
	Free    int              `json:"free"`
	Error   string           `json:"error,omitempty"` // the machine's input was invalid; nothing won
	// Candidates are all the machine's bids in book order (Seq, then ID),
	// feasible ones with their profit, the others with the reason.
	Candidates []Candidate  `json:"candidates"`
	Winners    []Winner     `json:"winners"`   // in book order
	Preempted  []Preemption `json:"preempted"` // running before, not winning now
	Profit     market.Money `json:"profit"`    // total profit of the winners
	// BestProfit is the profit of the best set ignoring incumbency;
	// IncumbentProfit that of the best set that keeps every feasible running
	// winner (meaningful when Incumbency is Kept or Displaced).
	BestProfit      market.Money `json:"best_profit"`
	IncumbentProfit market.Money `json:"incumbent_profit"`
	Incumbency      Incumbency   `json:"incumbency"`
}

// Candidate is one bid as the round saw it.
type Candidate struct {
	Bid  market.BidID `json:"bid"`
	Seq  int64        `json:"seq"`
	GPUs int          `json:"gpus"`
	// Profit is the host's profit over the interval, for feasible bids.
	Profit market.Money `json:"profit"`
	Drop   Reason       `json:"drop,omitempty"` // why it was dropped; empty if feasible
	// Got and Limit are the offending value and the limit it broke (W, MHz,
	// GPUs or micro-tokens, by Drop).
	Got   int64 `json:"got,omitempty"`
	Limit int64 `json:"limit,omitempty"`
}

// Feasible reports whether the bid took part in the knapsack.
func (c Candidate) Feasible() bool { return c.Drop == "" }

// Winner is a bid that holds GPUs for the coming interval.
type Winner struct {
	Bid     market.BidID     `json:"bid"`
	Bidder  market.AccountID `json:"bidder"`
	GPUs    int              `json:"gpus"`
	Profit  market.Money     `json:"profit"`
	Running bool             `json:"running"` // it ran before this round
}

// Preemption is a running bid that does not win this round. Its instance
// gets notice; the bid stays in the book unless it is gone.
type Preemption struct {
	Bid    market.BidID     `json:"bid"`
	Bidder market.AccountID `json:"bidder,omitempty"`
	GPUs   int              `json:"gpus,omitempty"`
	Reason Reason           `json:"reason"`
}

// Reason says why a bid was dropped or preempted.
type Reason string

// Reasons, in the order Clear checks them.
const (
	DropDuplicate     Reason = "duplicate"           // another entry with the same ID comes earlier in the book
	DropWrongMachine  Reason = "wrong_machine"       // the bid names another machine
	DropCancelled     Reason = "cancelled"           // state is cancelled
	DropExpired       Reason = "expired"             // state is expired or the lifetime ended
	DropSelfDealing   Reason = "self_dealing"        // the bidder owns the machine
	DropBadGPUs       Reason = "bad_gpus"            // GPU count below 1
	DropTooManyGPUs   Reason = "too_many_gpus"       // more GPUs than are free
	DropPowerLow      Reason = "power_below_min"     // power limit below the cards' minimum
	DropPowerHigh     Reason = "power_above_max"     // power limit above the host's (or cards') maximum
	DropCoreLock      Reason = "core_lock_range"     // core clock lock outside the host's range
	DropMemLock       Reason = "mem_lock_range"      // memory clock lock outside the host's range
	DropCoreOffset    Reason = "core_offset_range"   // core clock offset outside the host's range
	DropMemOffset     Reason = "mem_offset_range"    // memory clock offset outside the host's range
	DropBelowReserve  Reason = "price_below_reserve" // price per GPU-day below the reserve
	DropPriceTooHigh  Reason = "price_too_high"      // price above MaxPricePerGPUDay
	DropUnprofitable  Reason = "unprofitable"        // price does not cover the energy at the power limit
	DropCannotPay     Reason = "cannot_pay"          // balance below the price of the interval
	PreemptOutbid     Reason = "outbid"              // a set better by the increment took the GPUs
	PreemptNoRoom     Reason = "no_room"             // the running winners no longer fit the free GPUs
	PreemptGone       Reason = "gone"                // the running bid is no longer in the book
	PreemptBadMachine Reason = "machine_invalid"     // the machine's input was invalid
)

// Message explains why c was dropped, naming the limit, or "" if it was not.
func (c Candidate) Message() string {
	switch c.Drop {
	case "":
		return ""
	case DropDuplicate:
		return fmt.Sprintf("bid %s appears twice in the book", c.Bid)
	case DropWrongMachine:
		return "the bid is for another machine"
	case DropCancelled:
		return "the bid was cancelled"
	case DropExpired:
		return "the bid has expired"
	case DropSelfDealing:
		return "hosts cannot bid on their own machines"
	case DropBadGPUs:
		return fmt.Sprintf("the bid asks for %d GPUs; ask for at least 1", c.Got)
	case DropTooManyGPUs:
		return fmt.Sprintf("the bid asks for %d GPUs but only %d are free for spot", c.Got, c.Limit)
	case DropPowerLow:
		return fmt.Sprintf("power limit %d W is below this machine's minimum of %d W", c.Got, c.Limit)
	case DropPowerHigh:
		return fmt.Sprintf("power limit %d W is above this machine's maximum of %d W", c.Got, c.Limit)
	case DropCoreLock:
		return fmt.Sprintf("core clock lock %d MHz is outside this machine's allowed range", c.Got)
	case DropMemLock:
		return fmt.Sprintf("memory clock lock %d MHz is outside this machine's allowed range", c.Got)
	case DropCoreOffset:
		return fmt.Sprintf("core clock offset %d MHz is outside this machine's allowed range", c.Got)
	case DropMemOffset:
		return fmt.Sprintf("memory clock offset %d MHz is outside this machine's allowed range", c.Got)
	case DropBelowReserve:
		return fmt.Sprintf("price %s per GPU-day is below this machine's reserve of %s", market.Money(c.Got), market.Money(c.Limit))
	case DropPriceTooHigh:
		return fmt.Sprintf("price %s per GPU-day is above the maximum of %s", market.Money(c.Got), market.Money(c.Limit))
	case DropUnprofitable:
		return fmt.Sprintf("price %s per GPU-day does not cover the host's energy cost of %s per GPU-day at this power limit", market.Money(c.Got), market.Money(c.Limit))
	case DropCannotPay:
		return fmt.Sprintf("the bidder's balance %s cannot pay the interval's %s", market.Money(c.Got), market.Money(c.Limit))
	}
	return string(c.Drop)
}

// Replay recomputes the decision of a stored round and reports whether it
// equals the stored decision, comparing canonical JSON encodings so that a
// decision read back from storage compares equal to a fresh one.
func Replay(in Round, stored Decision) (Decision, bool) {
	d := Clear(in)
	a, err1 := json.Marshal(d)
	b, err2 := json.Marshal(stored)
	return d, err1 == nil && err2 == nil && string(a) == string(b)
}

// check validates the round as a whole.
func (in *Round) check(inc BasisPoints) string {
	switch {
	case in.Interval <= 0 || in.Interval > MaxInterval:
		return fmt.Sprintf("interval %s is outside (0, %s]", in.Interval, MaxInterval)
	case inc < 0 || inc > MaxIncrement:
		return fmt.Sprintf("minimum increment %d bp is outside [0, %d]", inc, MaxIncrement)
	}
	return ""
}

// Clear clears one round. For each machine independently it drops the
// infeasible bids, computes the host profit of the others (see Profit),
// finds the set with the largest total profit that fits the free GPUs, and
// keeps the running winners unless that set beats the best set that keeps
// them by the minimum increment.
//
// Ties between sets of equal profit go to the set that contains the
// earliest bid (by Seq, then ID) in which the two sets differ.
func Clear(in Round) Decision {
	inc := in.MinIncrement
	if inc == 0 {
		inc = DefaultMinIncrement
	}
	d := Decision{MinIncrement: inc}
	if msg := in.check(inc); msg != "" {
		d.Error = msg
		return d
	}
	nb, nw, np := 0, 0, 0
	for i := range in.Machines {
		m := &in.Machines[i]
		nb += len(m.Bids)
		nw += min(len(m.Bids), max(m.Free, 0))
		np += len(m.Running)
	}
	// One backing array per output list; each machine takes a window.
	d.Machines = make([]MachineDecision, len(in.Machines))
	cands := make([]Candidate, nb)
	c := clearer{
		at:       in.At,
		interval: int64(in.Interval),
		inc:      inc,
		winners:  make([]Winner, 0, nw),
		preempt:  make([]Preemption, 0, np),
	}
	off := 0
	for i := range in.Machines {
		m := &in.Machines[i]
		n := len(m.Bids)
		c.machine(m, &d.Machines[i], cands[off:off+n:off+n])
		off += n
	}
	return d
}

// clearer holds the round's parameters, the output arrays and scratch space
// reused from machine to machine, so that a round allocates a fixed number
// of times however many bids it has.
type clearer struct {
	at       time.Time
	interval int64 // ns
	inc      BasisPoints
	winners  []Winner
	preempt  []Preemption

	order   []int32 // book order: indices into Machine.Bids
	running []bool  // per candidate: ran before this round
	items   []int32 // feasible candidates offered to a knapsack
	takeB   []bool  // per candidate: in the best set
	takeI   []bool  // per candidate: in the incumbents' set
	table   []int64 // knapsack table
}

func (c *clearer) machine(m *Machine, md *MachineDecision, cands []Candidate) {
	md.Machine = m.ID
	md.Free = m.Free
	md.Incumbency = NoIncumbents
	wStart, pStart := len(c.winners), len(c.preempt)
	defer func() {
		md.Winners = c.winners[wStart:len(c.winners):len(c.winners)]
		md.Preempted = c.preempt[pStart:len(c.preempt):len(c.preempt)]
	}()
	md.Candidates = cands
	n := len(m.Bids)
	c.order = grow(c.order, n)
	for i := range c.order {
		c.order[i] = int32(i)
	}
	sortBook(c.order, m.Bids)

	if msg := checkMachine(m); msg != "" {
		md.Error = msg
		for k, bi := range c.order {
			b := &m.Bids[bi].Bid
			cands[k] = Candidate{Bid: b.ID, Seq: b.Seq, GPUs: b.GPUs, Drop: PreemptBadMachine}
		}
		for i, id := range m.Running {
			if !slices.Contains(m.Running[:i], id) {
				c.preempt = append(c.preempt, Preemption{Bid: id, Reason: PreemptBadMachine})
			}
		}
		return
	}

	lim := limitsOf(m)
	for k, bi := range c.order {
		cands[k] = c.evaluate(&m.Bids[bi], m, &lim)
		for j := range k { // n is small; a quadratic scan beats a map
			if cands[j].Bid == cands[k].Bid {
				cands[k].Drop, cands[k].Profit, cands[k].Got, cands[k].Limit = DropDuplicate, 0, 0, 0
				break
			}
		}
	}

	// Running winners: find each in the book.
	c.running = growBool(c.running, n)
	sumR, nR := 0, 0
	var profitR int64
	for i, id := range m.Running {
		if slices.Contains(m.Running[:i], id) {
			continue
		}
		k := -1
		for j := range cands {
			if cands[j].Bid == id && cands[j].Drop != DropDuplicate {
				k = j
				break
			}
		}
		switch {
		case k < 0:
			c.preempt = append(c.preempt, Preemption{Bid: id, Reason: PreemptGone})
		case !cands[k].Feasible():
			b := &m.Bids[c.order[k]].Bid
			c.preempt = append(c.preempt, Preemption{Bid: id, Bidder: b.Bidder, GPUs: b.GPUs, Reason: cands[k].Drop})
		default:
			c.running[k] = true
			sumR += cands[k].GPUs
			profitR += int64(cands[k].Profit)
			nR++
		}
	}

	// The best set, ignoring incumbency.
	c.items = c.items[:0]
	for k := range cands {
		if cands[k].Feasible() {
			c.items = append(c.items, int32(k))
		}
	}
	c.takeB = growBool(c.takeB, n)
	best := c.knapsack(cands, c.items, m.Free, c.takeB)
	md.BestProfit = market.Money(best)
	take := c.takeB
	reason := PreemptOutbid

	switch {
	case nR == 0:
	case sumR > m.Free:
		md.Incumbency = NoRoom
		reason = PreemptNoRoom
	default:
		// The best set that keeps every running winner: the incumbents
		// plus the best fill of the GPUs they leave.
		c.items = c.items[:0]
		for k := range cands {
			if cands[k].Feasible() && !c.running[k] {
				c.items = append(c.items, int32(k))
			}
		}
		c.takeI = growBool(c.takeI, n)
		inc := profitR + c.knapsack(cands, c.items, m.Free-sumR, c.takeI)
		for k := range cands {
			if c.running[k] {
				c.takeI[k] = true
			}
		}
		md.IncumbentProfit = market.Money(inc)
		if Beats(market.Money(best), market.Money(inc), c.inc) {
			md.Incumbency = Displaced
		} else {
			md.Incumbency = Kept
			take = c.takeI
		}
	}

	var total int64
	for k := range cands {
		b := &m.Bids[c.order[k]].Bid
		switch {
		case take[k]:
			total += int64(cands[k].Profit)
			c.winners = append(c.winners, Winner{Bid: b.ID, Bidder: b.Bidder, GPUs: b.GPUs, Profit: cands[k].Profit, Running: c.running[k]})
		case c.running[k]:
			c.preempt = append(c.preempt, Preemption{Bid: b.ID, Bidder: b.Bidder, GPUs: b.GPUs, Reason: reason})
		}
	}
	md.Profit = market.Money(total)
}

// Beats reports whether a set with profit challenger displaces incumbents
// with profit incumbent under minimum increment inc: it must be strictly
// larger and at least incumbent x (1 + inc/10,000), compared exactly.
func Beats(challenger, incumbent market.Money, inc BasisPoints) bool {
	if challenger <= incumbent {
		return false
	}
	if incumbent <= 0 {
		return true
	}
	// 10,000 x challenger >= (10,000 + inc) x incumbent, in 128 bits.
	ch, cl := bits.Mul64(uint64(challenger), 10_000)
	ih, il := bits.Mul64(uint64(incumbent), uint64(10_000+inc))
	return ch > ih || (ch == ih && cl >= il)
}

// sortBook sorts indices of bids into book order: Seq, then ID, then input
// position, so equal keys still sort the same way every time.
func sortBook(order []int32, bids []Entry) {
	less := func(a, b int32) bool {
		x, y := &bids[a].Bid, &bids[b].Bid
		if x.Seq != y.Seq {
			return x.Seq < y.Seq
		}
		if x.ID != y.ID {
			return x.ID < y.ID
		}
		return a < b
	}
	if len(order) <= 16 {
		for i := 1; i < len(order); i++ {
			for j := i; j > 0 && less(order[j], order[j-1]); j-- {
				order[j], order[j-1] = order[j-1], order[j]
			}
		}
		return
	}
	slices.SortFunc(order, func(a, b int32) int {
		if less(a, b) {
			return -1
		}
		if less(b, a) {
			return 1
		}
		return 0
	})
}

func checkMachine(m *Machine) string {
	t := &m.Terms
	switch {
	case m.Free < 0 || m.Free > MaxGPUs:
		return fmt.Sprintf("free GPU count %d is outside [0, %d]", m.Free, MaxGPUs)
	case len(m.Cards) > 0 && m.Free > len(m.Cards):
		return fmt.Sprintf("free GPU count %d exceeds the machine's %d GPUs", m.Free, len(m.Cards))
	case t.ReservePerGPUDay < 0:
		return fmt.Sprintf("reserve price %s is negative", t.ReservePerGPUDay)
	case t.EnergyPerKWh < 0:
		return fmt.Sprintf("energy price %s is negative", t.EnergyPerKWh)
	case t.MaxPowerW < 0:
		return fmt.Sprintf("maximum power limit %d W is negative", t.MaxPowerW)
	}
	return ""
}

// limits are a machine's power range for bids.
type limits struct {
	minW, maxW int
}

// limitsOf returns the power range every card of m accepts within the
// host's maximum: [highest card minimum (at least 1 W), lowest of the host
// maximum and the known card maxima]. With no maximum known it is MaxPowerW.
func limitsOf(m *Machine) limits {
	l := limits{minW: 1, maxW: MaxPowerW}
	if m.Terms.MaxPowerW > 0 {
		l.maxW = min(l.maxW, m.Terms.MaxPowerW)
	}
	for _, card := range m.Cards {
		l.minW = max(l.minW, card.MinPowerW)
		if card.MaxPowerW > 0 {
			l.maxW = min(l.maxW, card.MaxPowerW)
		}
	}
	return l
}

func (c *clearer) evaluate(e *Entry, m *Machine, lim *limits) Candidate {
	b := &e.Bid
	t := &m.Terms
	cand := Candidate{Bid: b.ID, Seq: b.Seq, GPUs: b.GPUs}
	drop := func(r Reason, got, limit int64) Candidate {
		cand.Drop, cand.Got, cand.Limit = r, got, limit
		return cand
	}
	clockBad, clockValue := clockOutside(t, b)
	switch {
	case b.Machine != m.ID:
		return drop(DropWrongMachine, 0, 0)
	case b.State == market.BidCancelled:
		return drop(DropCancelled, 0, 0)
	case !b.State.Open():
		return drop(DropExpired, 0, 0)
	case !b.ExpiresAt.IsZero() && !c.at.Before(b.ExpiresAt):
		return drop(DropExpired, 0, 0)
	case b.Bidder == m.Owner:
		return drop(DropSelfDealing, 0, 0)
	case b.GPUs < 1:
		return drop(DropBadGPUs, int64(b.GPUs), 1)
	case b.GPUs > m.Free:
		return drop(DropTooManyGPUs, int64(b.GPUs), int64(m.Free))
	case b.PowerLimitW < lim.minW:
		return drop(DropPowerLow, int64(b.PowerLimitW), int64(lim.minW))
	case b.PowerLimitW > lim.maxW:
		return drop(DropPowerHigh, int64(b.PowerLimitW), int64(lim.maxW))
	case clockBad != "":
		return drop(clockBad, int64(clockValue), 0)
	case b.PricePerGPUDay < t.ReservePerGPUDay:
		return drop(DropBelowReserve, int64(b.PricePerGPUDay), int64(t.ReservePerGPUDay))
	case b.PricePerGPUDay > MaxPricePerGPUDay:
		return drop(DropPriceTooHigh, int64(b.PricePerGPUDay), int64(MaxPricePerGPUDay))
	}
	p, ok := Profit(b.PricePerGPUDay, t.EnergyPerKWh, b.PowerLimitW, b.GPUs, time.Duration(c.interval))
	if !ok {
		return drop(DropUnprofitable, int64(b.PricePerGPUDay), int64(energyPerGPUDay(t.EnergyPerKWh, b.PowerLimitW)))
	}
	if cost := Cost(b.PricePerGPUDay, b.GPUs, time.Duration(c.interval)); e.Balance < cost {
		return drop(DropCannotPay, int64(e.Balance), int64(cost))
	}
	cand.Profit = p
	return cand
}

const (
	nsPerDay = int64(24 * time.Hour)
	// profitDen = ns per day x 1000 W/kW = ns per hour x 1000 W/kW x 24 h/day:
	// the common denominator of revenue and energy cost.
	profitDen = uint64(nsPerDay) * 1000
)

// Profit is the host's profit of a bid over one interval, in micro-tokens:
//
//	price/GPU-day x GPUs x interval/24h - energy/kWh x (W/1000) x GPUs x interval/1h
//	= GPUs x interval_ns x (1000 x price - 24 x energy x W) / (86,400e9 x 1000)
//
// computed exactly in 128-bit integers with a single division, rounded down
// to a whole micro-token (the host never sees a profit it does not make).
// ok is false when the profit is negative, that is when 1000 x price <
// 24 x energy x W: the price does not cover the energy at the power limit.
// ok is also false for arguments outside the package limits (price in [0,
// MaxPricePerGPUDay], GPUs in [1, MaxGPUs], interval in (0, MaxInterval]).
func Profit(pricePerGPUDay, energyPerKWh market.Money, powerW, gpus int, interval time.Duration) (market.Money, bool) {
	if pricePerGPUDay < 0 || pricePerGPUDay > MaxPricePerGPUDay || energyPerKWh < 0 || powerW < 0 ||
		gpus < 1 || gpus > MaxGPUs || interval <= 0 || interval > MaxInterval {
		return 0, false
	}
	rev := uint64(pricePerGPUDay) * 1000 // <= 1e18
	eh, el := bits.Mul64(uint64(energyPerKWh), 24*uint64(powerW))
	if eh != 0 || el > rev {
		return 0, false
	}
	hi, lo := bits.Mul64(rev-el, uint64(gpus)*uint64(interval))
	q, _ := bits.Div64(hi, lo, profitDen)
	return market.Money(q), true
}

// Cost is what a bid pays for one interval: price x GPUs x interval/24h in
// micro-tokens, rounded up, so a bidder who can pay Cost can pay every
// minute of the interval. Outside the package limits it is the largest
// Money: nobody can pay it.
func Cost(pricePerGPUDay market.Money, gpus int, interval time.Duration) market.Money {
	if pricePerGPUDay < 0 || pricePerGPUDay > MaxPricePerGPUDay || gpus < 1 || gpus > MaxGPUs ||
		interval <= 0 || interval > MaxInterval {
		return market.Money(1<<63 - 1)
	}
	hi, lo := bits.Mul64(uint64(pricePerGPUDay)*uint64(gpus), uint64(interval))
	q, r := bits.Div64(hi, lo, uint64(nsPerDay))
	if r != 0 {
		q++
	}
	return market.Money(q)
}

// energyPerGPUDay is the energy cost of one GPU at powerW for 24 hours,
// saturated at the largest Money, for messages.
func energyPerGPUDay(energyPerKWh market.Money, powerW int) market.Money {
	hi, lo := bits.Mul64(uint64(energyPerKWh), 24*uint64(powerW))
	q := lo / 1000
	if hi != 0 || q > uint64(1<<63-1) {
		return market.Money(1<<63 - 1)
	}
	return market.Money(q)
}

// knapsack chooses, among items (candidate indices in book order), the set
// with the largest total profit whose GPUs fit capacity, sets take[k] for
// the chosen and returns the total. Of sets with equal profit it chooses the
// one containing the earliest item in which they differ: it fills the table
// from the last item to the first, so best[i][c] is the best over items
// i.., and then walks forward taking item i whenever taking it still
// reaches best[i][c].
func (c *clearer) knapsack(cands []Candidate, items []int32, capacity int, take []bool) int64 {
	for i := range take {
		take[i] = false
	}
	if len(items) == 0 || capacity <= 0 {
		return 0
	}
	// Shortcut: everything fits, and no profit is negative.
	sum := 0
	for _, k := range items {
		sum += cands[k].GPUs
	}
	if sum <= capacity {
		var total int64
		for _, k := range items {
			take[k] = true
			total += int64(cands[k].Profit)
		}
		return total
	}
	w := capacity + 1
	c.table = grow64(c.table, (len(items)+1)*w)
	t := c.table
	last := t[len(items)*w:]
	for i := range last {
		last[i] = 0
	}
	for i := len(items) - 1; i >= 0; i-- {
		g, p := cands[items[i]].GPUs, int64(cands[items[i]].Profit)
		row, next := t[i*w:(i+1)*w], t[(i+1)*w:(i+2)*w]
		copy(row, next)
		for cp := g; cp < w; cp++ {
			if v := next[cp-g] + p; v > row[cp] {
				row[cp] = v
			}
		}
	}
	cp := capacity
	for i, k := range items {
		g := cands[k].GPUs
		next := t[(i+1)*w : (i+2)*w]
		if g <= cp && next[cp-g]+int64(cands[k].Profit) >= next[cp] {
			take[k] = true
			cp -= g
		}
	}
	return t[capacity]
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, max(n, 2*cap(s)))
	}
	return s[:n]
}

func growBool(s []bool, n int) []bool {
	s = grow(s, n)
	clear(s)
	return s
}

func grow64(s []int64, n int) []int64 { return grow(s, n) }

// clockOutside returns the first clock setting of b, on any of its GPUs,
// that lies outside the machine's published ranges, and its value; "" when
// all are inside.
func clockOutside(t *market.SpotTerms, b *market.Bid) (Reason, int) {
	if len(b.GPUClocks) == 0 {
		return clockOutsideOne(t, &b.Clocks)
	}
	for i := range b.GPUClocks {
		if r, v := clockOutsideOne(t, &b.GPUClocks[i]); r != "" {
			return r, v
		}
	}
	return "", 0
}

func clockOutsideOne(t *market.SpotTerms, c *market.Clocks) (Reason, int) {
	switch {
	case !t.CoreLockMHz.Contains(c.CoreLockMHz):
		return DropCoreLock, c.CoreLockMHz
	case !t.MemLockMHz.Contains(c.MemLockMHz):
		return DropMemLock, c.MemLockMHz
	case !t.CoreOffsetMHz.Contains(c.CoreOffsetMHz):
		return DropCoreOffset, c.CoreOffsetMHz
	case !t.MemOffsetMHz.Contains(c.MemOffsetMHz):
		return DropMemOffset, c.MemOffsetMHz
	}
	return "", 0
}
