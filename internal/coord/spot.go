package coord

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/auction"
	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Spot market defaults (see Config).
const (
	DefaultSpotInterval                    = 10 * time.Minute
	DefaultSpotFee      ledger.BasisPoints = 250
	DefaultMaxBids                         = 20
	maxBidLifetime                         = 365 * 24 * time.Hour
	maxWebhookLen                          = 2048
)

// Reasons a spot instance stops without having asked to. Its final state
// is preempted rather than stopped.
const (
	reasonOutbid    = "outbid"
	preemptedPrefix = "preempted: "
	reasonOnDemand  = preemptedPrefix + "an on-demand rental needs the GPUs"
)

// preempting reports whether inst is a spot instance stopping because it
// was preempted.
func preempting(inst market.Instance) bool {
	return inst.Kind == market.Spot && (inst.Reason == reasonOutbid || strings.HasPrefix(inst.Reason, preemptedPrefix))
}

// minuteCharge is what minute k of inst costs: spot instances pay their
// price per day, on-demand ones their price per hour.
func minuteCharge(inst market.Instance, k int64) market.Money {
	if inst.Kind == market.Spot {
		return ledger.DayMinuteCharge(inst.PricePerDay, k)
	}
	return ledger.MinuteCharge(inst.PricePerHour, k)
}

// feeOf is the platform's share of inst's charges.
func (s *Service) feeOf(inst market.Instance) ledger.BasisPoints {
	if inst.Kind == market.Spot {
		return s.cfg.SpotFee
	}
	return s.cfg.Fee
}

// powerRange is the power limit per GPU a bid on m may ask: at least the
// highest card minimum, at most the host's maximum and every card's.
func powerRange(m market.Machine) (minW, maxW int) {
	minW, maxW = 1, auction.MaxPowerW
	if m.Spot.MaxPowerW > 0 {
		maxW = min(maxW, m.Spot.MaxPowerW)
	}
	for _, g := range m.GPUs {
		minW = max(minW, g.MinPowerW)
		if g.MaxPowerW > 0 {
			maxW = min(maxW, g.MaxPowerW)
		}
	}
	return minW, maxW
}

func checkClock(name string, v int, r market.ClockRange) error {
	if r.Contains(v) {
		return nil
	}
	if r == (market.ClockRange{}) {
		return fmt.Errorf("%s %d MHz is not allowed: this machine allows no %s", name, v, name)
	}
	return fmt.Errorf("%s %d MHz is outside this machine's allowed range of %d to %d MHz", name, v, r.Min, r.Max)
}

// checkBidTermsAll checks a bid's price, power limit and the clocks of
// each of its GPUs against m.
func checkBidTermsAll(m market.Machine, b market.Bid) error {
	for i, c := range market.GPUSettings(b.Clocks, b.GPUClocks, b.GPUs) {
		if err := checkBidTerms(m, b.PricePerGPUDay, b.PowerLimitW, c); err != nil {
			if len(b.GPUClocks) > 0 {
				return fmt.Errorf("GPU %d of the bid: %w", i+1, err)
			}
			return err
		}
	}
	return nil
}

// checkBidTerms checks a bid's price, power limit and clocks against m.
func checkBidTerms(m market.Machine, price market.Money, powerW int, c market.Clocks) error {
	switch {
	case price <= 0:
		return fmt.Errorf("price per GPU-day must be above zero, got %s", price)
	case price > auction.MaxPricePerGPUDay:
		return fmt.Errorf("price %s per GPU-day is above the maximum of %s", price, auction.MaxPricePerGPUDay)
	case price < m.Spot.ReservePerGPUDay:
		return fmt.Errorf("price %s per GPU-day is below this machine's reserve of %s", price, m.Spot.ReservePerGPUDay)
	case powerW <= 0:
		minW, maxW := powerRange(m)
		return fmt.Errorf("a power limit per GPU is required (--power-limit W); this machine allows %d to %d W", minW, maxW)
	}
	if err := checkPower(m, powerW); err != nil {
		return err
	}
	if _, ok := auction.Profit(price, m.Spot.EnergyPerKWh, powerW, 1, time.Hour); !ok {
		return fmt.Errorf("price %s per GPU-day does not cover this machine's energy cost at %d W (%s per kWh)", price, powerW, m.Spot.EnergyPerKWh)
	}
	return checkClocks(m, c)
}

// checkPower checks a power limit per GPU against m's range (powerRange).
func checkPower(m market.Machine, powerW int) error {
	minW, maxW := powerRange(m)
	switch {
	case powerW < minW:
		return fmt.Errorf("power limit %d W is below this machine's minimum of %d W; it allows %d to %d W", powerW, minW, minW, maxW)
	case powerW > maxW:
		return fmt.Errorf("power limit %d W is above this machine's maximum of %d W; it allows %d to %d W", powerW, maxW, minW, maxW)
	}
	return nil
}

// checkClocks checks the clocks of one GPU against the ranges m publishes.
func checkClocks(m market.Machine, c market.Clocks) error {
	return errors.Join(
		checkClock("core clock lock", c.CoreLockMHz, m.Spot.CoreLockMHz),
		checkClock("memory clock lock", c.MemLockMHz, m.Spot.MemLockMHz),
		checkClock("core clock offset", c.CoreOffsetMHz, m.Spot.CoreOffsetMHz),
		checkClock("memory clock offset", c.MemOffsetMHz, m.Spot.MemOffsetMHz))
}

// checkInstanceSettings checks the GPU settings asked for an on-demand
// instance of n GPUs on m, within the ranges a spot bid must keep to; the
// power limit is optional (0 leaves the card's own).
func checkInstanceSettings(m market.Machine, powerW int, one market.Clocks, per []market.Clocks, n int) error {
	if len(per) > 0 && len(per) != n {
		return fmt.Errorf("clock settings are given for %d GPUs but %d GPUs are asked for; give one value for all GPUs or one per GPU", len(per), n)
	}
	if powerW < 0 {
		return fmt.Errorf("power limit must not be negative, got %d W", powerW)
	}
	if powerW > 0 {
		if err := checkPower(m, powerW); err != nil {
			return err
		}
	}
	for i, c := range market.GPUSettings(one, per, n) {
		if err := checkClocks(m, c); err != nil {
			if len(per) > 0 {
				return fmt.Errorf("GPU %d of the instance: %w", i+1, err)
			}
			return err
		}
	}
	return nil
}

// checkSpotUpdate checks the spot terms of a machine update.
func checkSpotUpdate(u market.MachineUpdate) error {
	switch {
	case u.SpotReservePerGPUDay != nil && (*u.SpotReservePerGPUDay < 0 || *u.SpotReservePerGPUDay > auction.MaxPricePerGPUDay):
		return fmt.Errorf("spot reserve %s per GPU-day is outside 0 to %s", *u.SpotReservePerGPUDay, auction.MaxPricePerGPUDay)
	case u.EnergyPerKWh != nil && (*u.EnergyPerKWh < 0 || *u.EnergyPerKWh > market.Tokens(1_000_000)):
		return fmt.Errorf("energy price %s per kWh is outside 0 to 1000000 tokens", *u.EnergyPerKWh)
	case u.MaxPowerW != nil && (*u.MaxPowerW < 0 || *u.MaxPowerW > auction.MaxPowerW):
		return fmt.Errorf("maximum power limit %d W is outside 0 to %d W (0: the cards' maximum)", *u.MaxPowerW, auction.MaxPowerW)
	}
	for _, r := range []struct {
		name     string
		r        *market.ClockRange
		min, max int
	}{
		{"core clock lock", u.CoreLockMHz, 0, maxClockMHz},
		{"memory clock lock", u.MemLockMHz, 0, maxClockMHz},
		{"core clock offset", u.CoreOffsetMHz, -maxClockOffsetMHz, maxClockOffsetMHz},
		{"memory clock offset", u.MemOffsetMHz, -maxClockOffsetMHz, maxClockOffsetMHz},
	} {
		if r.r != nil && (r.r.Min > r.r.Max || r.r.Min < r.min || r.r.Max > r.max) {
			return fmt.Errorf("%s range %d..%d MHz must have min <= max within %d..%d MHz", r.name, r.r.Min, r.r.Max, r.min, r.max)
		}
	}
	return nil
}

// Bounds of the clock ranges a host may publish.
const (
	maxClockMHz       = 10_000
	maxClockOffsetMHz = 3_000
)

func applySpotUpdate(m *market.Machine, u market.MachineUpdate) {
	if u.SpotReservePerGPUDay != nil {
		m.Spot.ReservePerGPUDay = *u.SpotReservePerGPUDay
	}
	if u.EnergyPerKWh != nil {
		m.Spot.EnergyPerKWh = *u.EnergyPerKWh
	}
	if u.MaxPowerW != nil {
		m.Spot.MaxPowerW = *u.MaxPowerW
	}
	for _, r := range []struct {
		src *market.ClockRange
		dst *market.ClockRange
	}{{u.CoreLockMHz, &m.Spot.CoreLockMHz}, {u.MemLockMHz, &m.Spot.MemLockMHz}, {u.CoreOffsetMHz, &m.Spot.CoreOffsetMHz}, {u.MemOffsetMHz, &m.Spot.MemOffsetMHz}} {
		if r.src != nil {
			*r.dst = *r.src
		}
	}
}

// CreateBid places a spot bid on a machine. The bid takes part in every
// clearing round until it is cancelled or its lifetime ends.
func (s *Service) CreateBid(ctx context.Context, caller market.Account, req market.CreateBidRequest) (market.Bid, error) {
	const op = "create bid"
	if err := require(caller, op, market.RoleRenter); err != nil {
		return market.Bid{}, err
	}
	invalid := func(format string, args ...any) (market.Bid, error) {
		return market.Bid{}, market.Errorf(op, market.Invalid, format, args...)
	}
	switch {
	case req.Machine == "":
		return invalid("say which machine to bid on (see `gpumarket offer search` or the market snapshot)")
	case req.GPUs < 0:
		return invalid("GPU count must not be negative, got %d (0 means all of the machine's GPUs)", req.GPUs)
	case req.GPUs > maxGPUsPerReq:
		return invalid("GPU count %d is above the limit of %d", req.GPUs, maxGPUsPerReq)
	case req.NoticeSeconds < 0:
		return invalid("notice must not be negative, got %ds", req.NoticeSeconds)
	case time.Duration(req.NoticeSeconds)*time.Second > s.cfg.MaxGrace:
		return invalid("notice %ds is above the platform's maximum of %s", req.NoticeSeconds, s.cfg.MaxGrace)
	case req.LifetimeSeconds < 0 || time.Duration(req.LifetimeSeconds)*time.Second > maxBidLifetime:
		return invalid("lifetime %ds is outside 0 to %s (0 means %s)", req.LifetimeSeconds, maxBidLifetime, market.DefaultBidLifetime)
	case len(req.Webhook) > maxWebhookLen:
		return invalid("webhook URL is %d bytes; the limit is %d", len(req.Webhook), maxWebhookLen)
	}
	if req.Webhook != "" {
		if u, err := url.Parse(req.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalid("webhook %q must be an http or https URL", req.Webhook)
		}
	}
	if _, err := s.validateCreate(market.CreateInstanceRequest{Machine: req.Machine, GPUs: 1, Command: req.Command, Env: req.Env}); err != nil {
		return market.Bid{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	now := s.now()
	lifetime := time.Duration(req.LifetimeSeconds) * time.Second
	if lifetime == 0 {
		lifetime = market.DefaultBidLifetime
	}
	b := market.Bid{
		ID: market.BidID(market.NewID(market.BidPrefix)), Bidder: caller.ID, Machine: req.Machine, GPUs: req.GPUs,
		PricePerGPUDay: req.PricePerGPUDay, PowerLimitW: req.PowerLimitW, Clocks: req.Clocks, GPUClocks: req.GPUClocks,
		Image: req.Image, Command: req.Command, Env: req.Env, Webhook: req.Webhook, NoticeSeconds: req.NoticeSeconds,
		State: market.BidActive, CreatedAt: now, ExpiresAt: now.Add(lifetime),
	}
	if r, ok := ctx.Value(deploymentKey{}).(replicaOf); ok && r.id != "" {
		// A spot deployment's replica: its instance is recorded as one
		// when the bid wins (startSpot).
		b.Env = maps.Clone(b.Env)
		if b.Env == nil {
			b.Env = map[string]string{}
		}
		b.Env[market.DeploymentEnv] = string(r.id)
		b.Env[market.DeploymentRevisionEnv] = strconv.FormatInt(r.rev, 10)
		if r.health != nil {
			b.Env[market.HealthEnv] = r.health.String()
		}
	}
	err := s.store.Tx(ctx, func(tx Tx) error {
		m, err := tx.Machine(ctx, req.Machine)
		if market.IsKind(err, market.NotFound) {
			return market.Errorf(op, market.NotFound, "machine %s not found; see `gpumarket offer search` for machines", req.Machine)
		}
		if err != nil {
			return err
		}
		switch {
		case m.Owner == caller.ID:
			return market.Errorf(op, market.Forbidden, "you host machine %s; hosts cannot bid on their own machines", m.ID)
		case !m.Listed || m.Unverified:
			return market.Errorf(op, market.Conflict, "machine %s is not listed for rent (or has not passed verification)", m.ID)
		case m.Runner == "process" && req.Image != "":
			return market.Errorf(op, market.Invalid, "machine %s runs plain processes, not container images; drop --image or pick a machine with runner docker", m.ID)
		case len(req.Command) == 0 && req.Image == "":
			return market.Errorf(op, market.Invalid, "give a command to run (after --), or an image")
		case len(m.GPUs) == 0:
			return market.Errorf(op, market.Invalid, "machine %s reported no GPUs", m.ID)
		}
		if b.GPUs == 0 {
			b.GPUs = len(m.GPUs)
		}
		if b.GPUs > len(m.GPUs) {
			return market.Errorf(op, market.Invalid, "the bid asks for %d GPUs but machine %s has %d", b.GPUs, m.ID, len(m.GPUs))
		}
		if len(b.GPUClocks) > 0 && len(b.GPUClocks) != b.GPUs {
			return market.Errorf(op, market.Invalid, "the bid gives clock settings for %d GPUs but asks for %d; give one value for all GPUs or one per GPU", len(b.GPUClocks), b.GPUs)
		}
		if err := checkBidTermsAll(m, b); err != nil {
			return market.Errorf(op, market.Invalid, "%w", err)
		}
		open, err := tx.Bids(ctx, BidFilter{Bidder: caller.ID, OpenOnly: true})
		if err != nil {
			return err
		}
		if len(open) >= s.cfg.MaxBids {
			return market.Errorf(op, market.Conflict, "you have %d open bids, the limit per renter is %d; cancel one first (gpumarket bid cancel)", len(open), s.cfg.MaxBids)
		}
		if err := s.checkSpendCap(ctx, tx, op, caller.ID, b.PricePerGPUDay*market.Money(b.GPUs)/24); err != nil { // limits.go
			return err
		}
		if b, err = tx.InsertBid(ctx, b); err != nil {
			return err
		}
		return tx.AppendEvent(ctx, market.Event{At: now, Type: "bid.created", Account: caller.ID, Machine: m.ID,
			Message: fmt.Sprintf("bid %s: %d GPUs at %s per GPU-day, %d W", b.ID, b.GPUs, b.PricePerGPUDay, b.PowerLimitW)})
	})
	if err != nil {
		return market.Bid{}, err
	}
	return b, nil
}

// ownBid loads a bid the caller placed (any, for an admin); others' bids
// are reported as not found.
func ownBid(ctx context.Context, tx Tx, caller market.Account, id market.BidID, op string) (market.Bid, error) {
	b, err := tx.Bid(ctx, id)
	if err == nil && b.Bidder != caller.ID && !caller.Has(market.RoleAdmin) {
		err = market.Errorf(op, market.NotFound, "bid %s not found among your bids (gpumarket bid list)", id)
	}
	return b, err
}

// Bids lists the caller's bids, oldest first.
func (s *Service) Bids(ctx context.Context, caller market.Account) ([]market.Bid, error) {
	var bs []market.Bid
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		bs, err = tx.Bids(ctx, BidFilter{Bidder: caller.ID})
		return err
	})
	return orEmpty(bs), err
}

// Bid returns one of the caller's bids.
func (s *Service) Bid(ctx context.Context, caller market.Account, id market.BidID) (market.Bid, error) {
	var b market.Bid
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		b, err = ownBid(ctx, tx, caller, id, "show bid")
		return err
	})
	return b, err
}

// ChangeBid changes the price of an open bid. A winning bid's instance
// pays the new price from the next minute on; the next round weighs it.
func (s *Service) ChangeBid(ctx context.Context, caller market.Account, id market.BidID, c market.BidChange) (market.Bid, error) {
	const op = "change bid"
	var b market.Bid
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if b, err = ownBid(ctx, tx, caller, id, op); err != nil {
			return err
		}
		if !b.State.Open() {
			return market.Errorf(op, market.Conflict, "bid %s is %s; place a new bid instead", b.ID, b.State)
		}
		if c.PricePerGPUDay == nil {
			return nil
		}
		m, err := tx.Machine(ctx, b.Machine)
		if err != nil {
			return err
		}
		changed := b
		changed.PricePerGPUDay = *c.PricePerGPUDay
		if err := checkBidTermsAll(m, changed); err != nil {
			return market.Errorf(op, market.Invalid, "%w", err)
		}
		now := s.now()
		b.PricePerGPUDay = *c.PricePerGPUDay
		if err := tx.UpdateBid(ctx, b); err != nil {
			return err
		}
		if b.Instance != "" {
			inst, err := tx.Instance(ctx, b.Instance)
			if err != nil {
				return err
			}
			if inst.Active() && inst.State != market.InstanceStopping {
				// Minutes completed so far are billed at the old price.
				if err := s.settle(ctx, tx, &inst, now); err != nil {
					return err
				}
				inst.PricePerDay = b.PricePerGPUDay * market.Money(b.GPUs)
				inst.PricePerHour = inst.PricePerDay.MulDiv(1, 24)
				if err := tx.UpdateInstance(ctx, inst); err != nil {
					return err
				}
			}
		}
		return tx.AppendEvent(ctx, market.Event{At: now, Type: "bid.changed", Account: b.Bidder, Machine: b.Machine,
			Message: fmt.Sprintf("bid %s: price now %s per GPU-day", b.ID, b.PricePerGPUDay)})
	})
	return b, err
}

// CancelBid takes a bid out of the book; its running instance, if any,
// stops with the usual grace. Cancelling a closed bid returns it unchanged.
func (s *Service) CancelBid(ctx context.Context, caller market.Account, id market.BidID) (market.Bid, error) {
	const op = "cancel bid"
	var b market.Bid
	var stopped bool
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		stopped = false
		if b, err = ownBid(ctx, tx, caller, id, op); err != nil {
			return err
		}
		if !b.State.Open() {
			return nil
		}
		now := s.now()
		b.State = market.BidCancelled
		if err := tx.UpdateBid(ctx, b); err != nil {
			return err
		}
		if b.Instance != "" {
			inst, err := tx.Instance(ctx, b.Instance)
			if err != nil {
				return err
			}
			if inst.Active() && inst.State != market.InstanceStopping {
				s.beginStop(&inst, now, "bid cancelled")
				if err := s.settle(ctx, tx, &inst, now); err != nil {
					return err
				}
				if err := tx.UpdateInstance(ctx, inst); err != nil {
					return err
				}
				stopped = true
			}
		}
		return tx.AppendEvent(ctx, market.Event{At: now, Type: "bid.cancelled", Account: b.Bidder, Machine: b.Machine, Instance: b.Instance,
			Message: fmt.Sprintf("bid %s cancelled", b.ID)})
	})
	if err == nil && stopped {
		s.machineChanged(b.Machine)
		s.reindex(ctx, b.Machine)
	}
	return b, err
}

// Snapshot is the public market data feed: listed, online machines with
// their spot terms and books, bidders left out.
func (s *Service) Snapshot(ctx context.Context) (market.Snapshot, error) {
	snap := market.Snapshot{At: s.now(), Interval: s.cfg.SpotInterval, Machines: []market.SnapshotMachine{}}
	// The listed, online machines come from the offer index, which holds
	// them all: reading them from the store took 250 ms at 10,000.
	s.index.Each(func(m *market.Machine) {
		if !m.Listed || !m.Online || len(m.GPUs) == 0 {
			return
		}
		minW, maxW := powerRange(*m)
		snap.Machines = append(snap.Machines, market.SnapshotMachine{
			Machine: m.ID, GPUModel: m.GPUs[0].Model, TotalGPUs: len(m.GPUs),
			Region: m.Region, Terms: m.Spot, MinPowerW: minW, MaxPowerW: maxW,
		})
	})
	slices.SortFunc(snap.Machines, func(a, b market.SnapshotMachine) int { return cmp.Compare(a.Machine, b.Machine) })
	err := s.store.Tx(ctx, func(tx Tx) error {
		insts, err := tx.Instances(ctx, InstanceFilter{ActiveOnly: true})
		if err != nil {
			return err
		}
		onDemand := map[market.MachineID]int{}
		for _, i := range insts {
			if i.Kind != market.Spot {
				onDemand[i.Machine] += len(i.GPUs)
			}
		}
		bids, err := tx.Bids(ctx, BidFilter{OpenOnly: true})
		if err != nil {
			return err
		}
		book := map[market.MachineID][]market.SnapshotBid{}
		for _, b := range bids {
			book[b.Machine] = append(book[b.Machine], market.SnapshotBid{Seq: b.Seq, GPUs: b.GPUs, PricePerGPUDay: b.PricePerGPUDay,
				PowerLimitW: b.PowerLimitW, Clocks: b.Clocks, State: b.State})
		}
		for i := range snap.Machines {
			sm := &snap.Machines[i]
			sm.SpotGPUs = sm.TotalGPUs - onDemand[sm.Machine]
			sm.Bids = orEmpty(book[sm.Machine])
		}
		return nil
	})
	return snap, err
}

// AuctionRound is a stored clearing round of one machine.
type AuctionRound struct {
	ID       market.RoundID   `json:"id"`
	Seq      int64            `json:"seq"`
	Machine  market.MachineID `json:"machine"`
	At       time.Time        `json:"at"`
	Input    auction.Round    `json:"input"`
	Decision auction.Decision `json:"decision"`
}

// RoundReplay says whether a round recomputed from its stored input gives
// the stored decision.
type RoundReplay struct {
	Round      market.RoundID   `json:"round"`
	Match      bool             `json:"match"`
	Stored     auction.Decision `json:"stored"`
	Recomputed auction.Decision `json:"recomputed"`
}

func decodeRound(r RoundRecord) (AuctionRound, error) {
	out := AuctionRound{ID: r.ID, Seq: r.Seq, Machine: r.Machine, At: r.At}
	if err := json.Unmarshal(r.Input, &out.Input); err != nil {
		return out, fmt.Errorf("decode input of round %s: %w", r.ID, err)
	}
	if err := json.Unmarshal(r.Decision, &out.Decision); err != nil {
		return out, fmt.Errorf("decode decision of round %s: %w", r.ID, err)
	}
	return out, nil
}

// Rounds lists stored rounds, newest first, of one machine or all.
func (s *Service) Rounds(ctx context.Context, f RoundFilter) ([]AuctionRound, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	var recs []RoundRecord
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		recs, err = tx.Rounds(ctx, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]AuctionRound, 0, len(recs))
	for _, r := range recs {
		ar, err := decodeRound(r)
		if err != nil {
			return nil, err
		}
		out = append(out, ar)
	}
	return out, nil
}

// Round returns one stored round.
func (s *Service) Round(ctx context.Context, id market.RoundID) (AuctionRound, error) {
	var rec RoundRecord
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		rec, err = tx.Round(ctx, id)
		return err
	})
	if err != nil {
		return AuctionRound{}, err
	}
	return decodeRound(rec)
}

// ReplayRound recomputes a stored round from its input.
func (s *Service) ReplayRound(ctx context.Context, id market.RoundID) (RoundReplay, error) {
	r, err := s.Round(ctx, id)
	if err != nil {
		return RoundReplay{}, err
	}
	d, ok := auction.Replay(r.Input, r.Decision)
	return RoundReplay{Round: id, Match: ok, Stored: r.Decision, Recomputed: d}, nil
}

// clearSpot runs a clearing round on every machine with bids once per
// spot interval: the first Tick in a new interval clears it.
func (s *Service) clearSpot(ctx context.Context) error {
	now := s.now()
	start := now.Truncate(s.cfg.SpotInterval)
	s.spotMu.Lock()
	if s.lastRound.IsZero() {
		// After a restart, the newest stored round says which interval
		// was cleared last, so that none is cleared twice.
		err := s.store.Tx(ctx, func(tx Tx) error {
			rs, err := tx.Rounds(ctx, RoundFilter{Limit: 1})
			if err == nil && len(rs) > 0 {
				s.lastRound = rs[0].At.Truncate(s.cfg.SpotInterval)
			}
			return err
		})
		if err != nil {
			s.spotMu.Unlock()
			return fmt.Errorf("find the last spot round: %w", err)
		}
	}
	due := start.After(s.lastRound)
	if due {
		s.lastRound = start
	}
	s.spotMu.Unlock()
	if !due {
		return nil
	}
	var machines []market.MachineID
	err := s.store.Tx(ctx, func(tx Tx) error {
		bids, err := tx.Bids(ctx, BidFilter{OpenOnly: true})
		machines = nil
		for _, b := range bids {
			if !slices.Contains(machines, b.Machine) {
				machines = append(machines, b.Machine)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("list bids: %w", err)
	}
	slices.Sort(machines)
	var errs []error
	for _, id := range machines {
		if err := s.clearMachine(ctx, id, now); err != nil {
			errs = append(errs, fmt.Errorf("clear spot round of %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// roundBid is the part of a bid a round sees: the workload and the
// webhook do not take part in clearing and stay out of the public record.
func roundBid(b market.Bid) market.Bid {
	b.Image, b.Command, b.Env, b.Webhook, b.Instance = "", nil, nil, "", ""
	return b
}

// clearMachine runs one clearing round on a machine and applies it in one
// transaction: the round is stored, expired bids leave the book, losers
// that ran are preempted and new winners start.
func (s *Service) clearMachine(ctx context.Context, id market.MachineID, now time.Time) error {
	changed := false
	err := s.store.Tx(ctx, func(tx Tx) error {
		changed = false
		m, err := tx.Machine(ctx, id)
		if err != nil {
			return err
		}
		if !m.Online || !m.Listed || m.Unverified {
			return nil // running winners go on; nothing new starts
		}
		bids, err := tx.Bids(ctx, BidFilter{Machine: id, OpenOnly: true})
		if err != nil {
			return err
		}
		insts, err := tx.Instances(ctx, InstanceFilter{Machine: id, ActiveOnly: true})
		if err != nil {
			return err
		}
		onDemand := 0
		runningInst := map[market.BidID]market.Instance{}
		for _, i := range insts {
			switch {
			case i.Kind != market.Spot:
				onDemand += len(i.GPUs)
			case i.State != market.InstanceStopping:
				runningInst[i.Bid] = i
			}
		}
		in := auction.Machine{ID: m.ID, Owner: m.Owner, Free: max(len(m.GPUs)-onDemand, 0), Terms: m.Spot,
			Running: []market.BidID{}, Bids: []auction.Entry{}}
		for _, g := range m.GPUs {
			in.Cards = append(in.Cards, auction.Card{MinPowerW: g.MinPowerW, MaxPowerW: g.MaxPowerW})
		}
		byID := map[market.BidID]market.Bid{}
		for _, b := range bids {
			if _, ok := runningInst[b.ID]; !ok && b.State == market.BidWinning && b.Instance != "" {
				// A winner whose instance ended on its own (it exited,
				// or its renter stopped it) is done: it leaves the book.
				last, err := tx.Instance(ctx, b.Instance)
				if err != nil {
					return err
				}
				if last.State.Terminal() && last.State != market.InstancePreempted {
					b.State = market.BidCancelled
					if err := tx.UpdateBid(ctx, b); err != nil {
						return err
					}
					if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "bid.closed", Account: b.Bidder, Machine: id, Instance: last.ID,
						Message: fmt.Sprintf("bid %s left the book: its instance ended (%s)", b.ID, describe(last))}); err != nil {
						return err
					}
					continue
				}
			}
			bal, err := tx.Balance(ctx, market.Available(b.Bidder), market.DefaultAsset)
			if err != nil {
				return err
			}
			byID[b.ID] = b
			in.Bids = append(in.Bids, auction.Entry{Bid: roundBid(b), Balance: bal})
			if _, ok := runningInst[b.ID]; ok {
				in.Running = append(in.Running, b.ID)
			}
		}
		// A running instance whose bid left the book is preempted too.
		for bid := range runningInst {
			if _, ok := byID[bid]; !ok {
				in.Running = append(in.Running, bid)
			}
		}
		slices.Sort(in.Running)
		if len(in.Bids) == 0 && len(in.Running) == 0 {
			return nil
		}
		round := auction.Round{At: now, Interval: s.cfg.SpotInterval, MinIncrement: s.cfg.MinIncrement, Machines: []auction.Machine{in}}
		d := auction.Clear(round)
		rec := RoundRecord{ID: market.RoundID(market.NewID(market.RoundPrefix)), Machine: id, At: now}
		if rec.Input, err = json.Marshal(round); err != nil {
			return err
		}
		if rec.Decision, err = json.Marshal(d); err != nil {
			return err
		}
		if rec, err = tx.InsertRound(ctx, rec); err != nil {
			return err
		}
		changed = true
		if d.Error != "" || len(d.Machines) != 1 {
			return tx.AppendEvent(ctx, market.Event{At: now, Type: "auction.failed", Account: m.Owner, Machine: id,
				Message: fmt.Sprintf("round %s was not cleared: %s", rec.ID, d.Error)})
		}
		md := d.Machines[0]
		for _, c := range md.Candidates {
			if b, ok := byID[c.Bid]; ok && c.Drop == auction.DropExpired {
				b.State = market.BidExpired
				byID[b.ID] = b
				if err := tx.UpdateBid(ctx, b); err != nil {
					return err
				}
			}
		}
		for _, p := range md.Preempted {
			if inst, ok := runningInst[p.Bid]; ok {
				reason := reasonOutbid
				if p.Reason != auction.PreemptOutbid {
					reason = preemptedPrefix + string(p.Reason)
				}
				if err := s.preempt(ctx, tx, &inst, now, reason); err != nil {
					return err
				}
			}
			if b, ok := byID[p.Bid]; ok && b.State == market.BidWinning {
				b.State = market.BidOutbid
				byID[b.ID] = b
				if err := tx.UpdateBid(ctx, b); err != nil {
					return err
				}
			}
		}
		for _, w := range md.Winners {
			b := byID[w.Bid]
			if w.Running {
				continue
			}
			inst, err := s.startSpot(ctx, tx, m, b, now)
			if err != nil {
				return fmt.Errorf("start winner %s: %w", b.ID, err)
			}
			b.State, b.Instance = market.BidWinning, inst.ID
			if err := tx.UpdateBid(ctx, b); err != nil {
				return err
			}
		}
		winners := make([]string, len(md.Winners))
		for i, w := range md.Winners {
			winners[i] = string(w.Bid)
		}
		return tx.AppendEvent(ctx, market.Event{At: now, Type: "auction.round", Account: m.Owner, Machine: id,
			Message: fmt.Sprintf("round %s: %d bids, winners [%s], %d preempted, host profit %s", rec.ID, len(md.Candidates),
				strings.Join(winners, " "), len(md.Preempted), md.Profit)})
	})
	if err == nil && changed {
		s.machineChanged(id)
		s.reindex(ctx, id)
	}
	return err
}

// preempt gives a running spot instance notice: it moves to stopping (the
// agent writes the notice file, then SIGTERM, SIGKILL after its grace) and
// stops paying now. The caller notifies the machine's agent.
func (s *Service) preempt(ctx context.Context, tx Tx, inst *market.Instance, now time.Time, reason string) error {
	s.beginStop(inst, now, reason)
	if err := s.settle(ctx, tx, inst, now); err != nil {
		return err
	}
	if err := tx.UpdateInstance(ctx, *inst); err != nil {
		return err
	}
	return tx.AppendEvent(ctx, market.Event{At: now, Type: "instance.preempted", Account: inst.Renter, Machine: inst.Machine, Instance: inst.ID,
		Message: fmt.Sprintf("preempted (%s); SIGTERM now, SIGKILL after %ds", reason, inst.GraceSeconds)})
}

// startSpot creates the spot instance of a winning bid on free GPUs of m.
func (s *Service) startSpot(ctx context.Context, tx Tx, m market.Machine, b market.Bid, now time.Time) (market.Instance, error) {
	used, err := tx.ActiveGPUs(ctx, []market.MachineID{m.ID})
	if err != nil {
		return market.Instance{}, err
	}
	m.UsedGPUs = used[m.ID]
	free := m.FreeGPUs()
	if len(free) < b.GPUs {
		return market.Instance{}, market.Errorf("start spot instance", market.Unavailable, "bid %s won %d GPUs but only %d are free", b.ID, b.GPUs, len(free))
	}
	grace := min(max(time.Duration(b.NoticeSeconds)*time.Second, s.cfg.DefaultGrace), s.cfg.MaxGrace)
	inst := market.Instance{
		ID:            market.InstanceID(market.NewID(market.InstancePrefix)),
		Renter:        b.Bidder,
		Machine:       m.ID,
		Kind:          market.Spot,
		GPUs:          free[:b.GPUs],
		Image:         b.Image,
		Command:       b.Command,
		Env:           b.Env,
		State:         market.InstancePending,
		Generation:    1,
		CreatedAt:     now,
		GraceSeconds:  int(grace / time.Second),
		Bid:           b.ID,
		PricePerDay:   b.PricePerGPUDay * market.Money(b.GPUs),
		PowerLimitW:   b.PowerLimitW,
		Clocks:        b.Clocks,
		GPUClocks:     b.GPUClocks,
		NoticeSeconds: b.NoticeSeconds,
	}
	if inst.Command == nil {
		inst.Command = []string{}
	}
	if m.Runner == "docker" {
		inst.Limits = market.ShareLimits(m.Hardware, b.GPUs) // a container gets its GPU share of the machine
	}
	inst.PricePerHour = inst.PricePerDay.MulDiv(1, 24) // shown to users; spot bills per day
	if err := tx.InsertInstance(ctx, inst); err != nil {
		return market.Instance{}, err
	}
	if d := market.DeploymentID(b.Env[market.DeploymentEnv]); d != "" {
		rev, _ := strconv.ParseInt(b.Env[market.DeploymentRevisionEnv], 10, 64) // set by CreateBid
		inst.Deployment, inst.DeploymentRevision = d, rev
		if err := tx.SetInstanceDeployment(ctx, inst.ID, d, rev); err != nil {
			return market.Instance{}, err
		}
	}
	return inst, tx.AppendEvent(ctx, market.Event{At: now, Type: "instance.created", Account: b.Bidder, Machine: m.ID, Instance: inst.ID,
		Message: fmt.Sprintf("spot: bid %s won GPUs %v at %s per GPU-day, power limit %d W", b.ID, inst.GPUs, b.PricePerGPUDay, b.PowerLimitW)})
}

// makeRoom preempts running spot instances of m until gpus GPUs are free
// for an on-demand rental, if the spot instances are what stands in the
// way. Spot instances with the lowest price per GPU go first. It returns
// the GPUs of m in use afterwards.
func (s *Service) makeRoom(ctx context.Context, tx Tx, m market.Machine, gpus int, now time.Time) ([]int, error) {
	used, err := tx.ActiveGPUs(ctx, []market.MachineID{m.ID})
	if err != nil {
		return nil, err
	}
	free := len(m.GPUs) - len(used[m.ID])
	if free >= gpus || gpus > len(m.GPUs) {
		return used[m.ID], nil
	}
	if err := s.preemptFor(ctx, tx, m, gpus, free, now); err != nil {
		return nil, err
	}
	if used, err = tx.ActiveGPUs(ctx, []market.MachineID{m.ID}); err != nil {
		return nil, err
	}
	return used[m.ID], nil
}

// preemptFor preempts spot instances of m, cheapest per GPU first, until
// gpus GPUs are free (free are already).
func (s *Service) preemptFor(ctx context.Context, tx Tx, m market.Machine, gpus, free int, now time.Time) error {
	insts, err := tx.Instances(ctx, InstanceFilter{Machine: m.ID, ActiveOnly: true})
	if err != nil {
		return err
	}
	var spot []market.Instance
	spotGPUs := 0
	for _, i := range insts {
		if i.Kind == market.Spot && i.State != market.InstanceStopping {
			spot = append(spot, i)
			spotGPUs += len(i.GPUs)
		}
	}
	if free+spotGPUs < gpus {
		return nil // on-demand instances hold them; placement says so
	}
	slices.SortStableFunc(spot, func(a, b market.Instance) int {
		// Price per GPU, compared without division: a/len(a) vs b/len(b).
		return cmp.Compare(int64(a.PricePerDay)*int64(len(b.GPUs)), int64(b.PricePerDay)*int64(len(a.GPUs)))
	})
	for i := 0; free < gpus && i < len(spot); i++ {
		inst := spot[i]
		if err := s.preempt(ctx, tx, &inst, now, reasonOnDemand); err != nil {
			return err
		}
		free += len(inst.GPUs)
		if inst.Bid != "" {
			b, err := tx.Bid(ctx, inst.Bid)
			if err != nil {
				return err
			}
			if b.State == market.BidWinning {
				b.State = market.BidOutbid
				if err := tx.UpdateBid(ctx, b); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
