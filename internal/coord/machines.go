package coord

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// RegisterMachine records the caller's machine from its agent's hardware
// report. It is idempotent by (owner, fingerprint): a restarted agent gets
// its machine back, with the hardware updated and the host's settings kept.
func (s *Service) RegisterMachine(ctx context.Context, caller market.Account, hw market.Hardware) (market.Machine, error) {
	const op = "register machine"
	if err := require(caller, op, market.RoleHost); err != nil {
		return market.Machine{}, err
	}
	if err := validateHardware(hw); err != nil {
		return market.Machine{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	if err := s.checkSpecs(hw); err != nil {
		return market.Machine{}, err
	}
	if m, ok, err := s.registeredAgain(ctx, caller, hw); err != nil || ok {
		return m, err
	}
	if err := s.guardUUIDs(ctx, caller, hw); err != nil {
		return market.Machine{}, err
	}
	now := s.now()
	var m market.Machine
	var isNew bool
	err := s.store.Tx(ctx, func(tx Tx) error {
		old, err := tx.MachineByFingerprint(ctx, caller.ID, hw.Fingerprint)
		isNew = market.IsKind(err, market.NotFound)
		switch {
		case isNew:
			m = market.Machine{
				ID:        market.MachineID(market.NewID(market.MachinePrefix)),
				Owner:     caller.ID,
				Hardware:  hw,
				Online:    true,
				CreatedAt: now,
			}
			m.LastSeenAt = now
			m.Unverified = s.cfg.RequireVerification // until a check passes (verify.go)
			if err := tx.InsertMachine(ctx, m); err != nil {
				return err
			}
			if err := s.afterRegister(ctx, tx, &m); err != nil {
				return err
			}
			return tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.registered", Account: caller.ID, Machine: m.ID,
				Message: fmt.Sprintf("registered %s with %d GPUs", hw.Hostname, len(hw.GPUs))})
		case err != nil:
			return err
		}
		m = old
		// Keep what the host set unless the agent was told explicitly.
		region, dc := m.Region, m.DataCenter
		m.Hardware = hw
		if hw.Region == "" {
			m.Region = region
		}
		if hw.DataCenter == "" {
			m.DataCenter = dc
		}
		wasOnline := m.Online
		m.Online, m.LastSeenAt = true, now
		s.holdIfChanged(&m, old.Hardware)
		if err := tx.UpdateMachine(ctx, m); err != nil {
			return err
		}
		if err := s.afterRegister(ctx, tx, &m); err != nil {
			return err
		}
		if !wasOnline {
			return tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.online", Account: caller.ID, Machine: m.ID, Message: "agent registered again"})
		}
		// The hardware may have changed: other replicas refresh their
		// index from this event.
		return tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.registered", Account: caller.ID, Machine: m.ID, Message: "agent registered again"})
	})
	if err != nil {
		return market.Machine{}, err
	}
	// Online in the store now: its heartbeats go to memory from the first.
	s.live.online(m.ID, m.Owner, now)
	s.noChecks.forget(m.ID) // a check may have started (afterRegister)
	s.reindex(ctx, m.ID)
	// Its facts at once, or searches on reliability would miss it until
	// the next pass. A new machine's follow from its having no history:
	// no read, so that registering 100,000 machines costs no more reads.
	if isNew {
		s.index.SetFacts(m.ID, match.Facts{ReliabilityPPM: int64(reliabilityOf(m, nil, nil, now).Score * 1e6)})
	} else {
		s.refreshMachineFacts(ctx, m.ID)
	}
	return s.fill(ctx, m)
}

// registeredAgain answers the registration of an online machine whose
// agent reports exactly the hardware it has, as after an agent restart or a
// reconnect storm, from memory or with one read, and no write: nothing
// changed, and the heartbeat goes to memory. With verification required a
// restart starts a check, so it takes the full path.
func (s *Service) registeredAgain(ctx context.Context, caller market.Account, hw market.Hardware) (market.Machine, bool, error) {
	if s.cfg.RequireVerification {
		return market.Machine{}, false, nil
	}
	// A machine that beats to this coordinator (so it is online, and the
	// offer index follows its changes) is answered from memory: when every
	// agent reconnects at once, as after a coordinator restart or a network
	// cut, the storm costs no store reads, and heartbeats that do need the
	// store do not queue behind it.
	if m, ok := s.index.ByFingerprint(caller.ID, hw.Fingerprint); ok && m.Online && sameHardware(m, hw) && s.live.beat(m.ID, caller.ID, s.now()) {
		return m, true, nil
	}
	var m market.Machine
	var used map[market.MachineID][]int
	var vouched map[market.MachineID]time.Time
	same := false
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		m, err = tx.MachineByFingerprint(ctx, caller.ID, hw.Fingerprint)
		if market.IsKind(err, market.NotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if !m.Online || !sameHardware(m, hw) {
			return nil
		}
		same = true
		used, vouched, err = fillReads(ctx, tx, []market.MachineID{m.ID})
		return err
	})
	if err != nil || !same {
		return market.Machine{}, false, err
	}
	s.live.online(m.ID, m.Owner, s.now())
	one := []market.Machine{m}
	s.applyFill(one, used, vouched)
	return one[0], true, nil
}

// sameHardware reports whether an agent registering m again with hw
// changes nothing. An agent that names no region or data center keeps the
// host's.
func sameHardware(m market.Machine, hw market.Hardware) bool {
	if hw.Region == "" {
		hw.Region = m.Region
	}
	if hw.DataCenter == "" {
		hw.DataCenter = m.DataCenter
	}
	return reflect.DeepEqual(hw, m.Hardware)
}

func validateHardware(hw market.Hardware) error {
	var problems []string
	if strings.TrimSpace(hw.Fingerprint) == "" {
		problems = append(problems, "fingerprint is empty")
	}
	if hw.Runner == "" {
		problems = append(problems, "runner is empty")
	}
	seenIdx, seenUUID := map[int]bool{}, map[string]bool{}
	for _, g := range hw.GPUs {
		switch {
		case seenIdx[g.Index]:
			problems = append(problems, fmt.Sprintf("GPU index %d appears twice", g.Index))
		case g.UUID == "" || seenUUID[g.UUID]:
			problems = append(problems, fmt.Sprintf("GPU %d has a missing or repeated UUID %q", g.Index, g.UUID))
		case g.Model == "" || g.VRAMMiB <= 0:
			problems = append(problems, fmt.Sprintf("GPU %d lacks its model or memory size", g.Index))
		case g.MinPowerW > g.MaxPowerW:
			problems = append(problems, fmt.Sprintf("GPU %d has a minimum power limit %d W above its maximum %d W", g.Index, g.MinPowerW, g.MaxPowerW))
		}
		seenIdx[g.Index], seenUUID[g.UUID] = true, true
	}
	if len(problems) > 0 {
		return fmt.Errorf("bad hardware report: %s", strings.Join(problems, "; "))
	}
	return nil
}

// fill sets the derived fields of machines: status and used GPUs.
func (s *Service) fill(ctx context.Context, ms ...market.Machine) (market.Machine, error) {
	if err := s.fillAll(ctx, ms); err != nil || len(ms) == 0 {
		return market.Machine{}, err
	}
	return ms[0], nil
}

func (s *Service) fillAll(ctx context.Context, ms []market.Machine) error {
	ids := make([]market.MachineID, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	var used map[market.MachineID][]int
	var vouched map[market.MachineID]time.Time
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		used, vouched, err = fillReads(ctx, tx, ids)
		return err
	})
	if err != nil {
		return err
	}
	s.applyFill(ms, used, vouched)
	return nil
}

// fillEveryFrom is how many machines make fillReads read every machine's
// rows in one statement each rather than name them in lists of hundreds.
const fillEveryFrom = 2000

// fillReads reads what fillAll adds to machines: their GPUs in use and
// their heartbeats vouched for by other coordinators.
func fillReads(ctx context.Context, tx Tx, ids []market.MachineID) (map[market.MachineID][]int, map[market.MachineID]time.Time, error) {
	if len(ids) >= fillEveryFrom {
		used, err := tx.AllActiveGPUs(ctx)
		if err != nil {
			return nil, nil, err
		}
		vouched, err := tx.AllVouchedSeen(ctx)
		return used, vouched, err
	}
	used, err := tx.ActiveGPUs(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	vouched, err := tx.VouchedSeen(ctx, ids)
	return used, vouched, err
}

func (s *Service) applyFill(ms []market.Machine, used map[market.MachineID][]int, vouched map[market.MachineID]time.Time) {
	for i := range ms {
		// Another coordinator holds its heartbeats: it beat within
		// claimSilence of that coordinator's last vouch.
		if t := vouched[ms[i].ID]; ms[i].Online && t.After(ms[i].LastSeenAt) {
			ms[i].LastSeenAt = t
		}
	}
	s.overlaySeen(ms)
	for i := range ms {
		ms[i].UsedGPUs = slices.Sorted(slices.Values(used[ms[i].ID]))
		if ms[i].UsedGPUs == nil {
			ms[i].UsedGPUs = []int{}
		}
		ms[i].DeriveStatus()
	}
}

// Machines lists the caller's machines, or every machine for an admin who
// asks for all.
func (s *Service) Machines(ctx context.Context, caller market.Account, all bool) ([]market.Machine, error) {
	f := MachineFilter{Owner: caller.ID}
	if all {
		if err := require(caller, "list all machines", market.RoleAdmin); err != nil {
			return nil, err
		}
		f.Owner = ""
	}
	var ms []market.Machine
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		ms, err = tx.Machines(ctx, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	if ms == nil {
		ms = []market.Machine{}
	}
	return ms, s.fillAll(ctx, ms)
}

// Machine returns one machine. Hosts see their own, admins any; renters see
// listed machines (the same facts an offer shows).
func (s *Service) Machine(ctx context.Context, caller market.Account, id market.MachineID) (market.Machine, error) {
	var m market.Machine
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		m, err = tx.Machine(ctx, id)
		return err
	})
	if err != nil {
		return market.Machine{}, err
	}
	if m.Owner != caller.ID && !caller.Has(market.RoleAdmin) && !m.Listed {
		return market.Machine{}, market.Errorf("show machine", market.NotFound, "machine %s not found", id)
	}
	return s.fill(ctx, m)
}

// ownMachine loads a machine the caller may change: its owner's, or any
// for an admin.
func ownMachine(ctx context.Context, tx Tx, caller market.Account, id market.MachineID, op string) (market.Machine, error) {
	m, err := tx.Machine(ctx, id)
	if err != nil {
		return m, err
	}
	if m.Owner != caller.ID && !caller.Has(market.RoleAdmin) {
		return m, market.Errorf(op, market.NotFound, "machine %s not found among your machines (gpumarket machine list)", id)
	}
	return m, nil
}

// UpdateMachine changes a host's settings of its machine.
func (s *Service) UpdateMachine(ctx context.Context, caller market.Account, id market.MachineID, u market.MachineUpdate) (market.Machine, error) {
	const op = "update machine"
	if u.PricePerGPUHour != nil {
		p := *u.PricePerGPUHour
		if p <= 0 {
			return market.Machine{}, market.Errorf(op, market.Invalid, "price per GPU-hour must be above zero, got %s", p)
		}
		if p > market.Tokens(1_000_000) {
			return market.Machine{}, market.Errorf(op, market.Invalid, "price per GPU-hour %s is above the limit of 1000000 tokens", p)
		}
	}
	for _, f := range []*string{u.Region, u.DataCenter} {
		if f != nil && len(*f) > 64 {
			return market.Machine{}, market.Errorf(op, market.Invalid, "region and data center names are at most 64 characters")
		}
	}
	if err := checkSpotUpdate(u); err != nil {
		return market.Machine{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	var m market.Machine
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if m, err = ownMachine(ctx, tx, caller, id, op); err != nil {
			return err
		}
		if u.PricePerGPUHour != nil {
			m.PricePerGPUHour = *u.PricePerGPUHour
		}
		if u.Region != nil {
			m.Region = *u.Region
		}
		if u.DataCenter != nil {
			m.DataCenter = *u.DataCenter
		}
		applySpotUpdate(&m, u)
		if err := tx.UpdateMachine(ctx, m); err != nil {
			return err
		}
		if u.Pool != nil {
			if err := setMachinePoolByHost(ctx, tx, caller, m.ID, strings.TrimSpace(*u.Pool), s.now()); err != nil {
				return err
			}
		}
		return tx.AppendEvent(ctx, market.Event{At: s.now(), Type: "machine.updated", Account: caller.ID, Machine: m.ID,
			Message: fmt.Sprintf("settings changed: price %s per GPU-hour, region %q", m.PricePerGPUHour, m.Region)})
	})
	if err != nil {
		return market.Machine{}, err
	}
	s.reindex(ctx, m.ID)
	return s.fill(ctx, m)
}

// SetListed lists a machine for rent or takes it off the market. Running
// instances are not affected by unlisting.
func (s *Service) SetListed(ctx context.Context, caller market.Account, id market.MachineID, listed bool) (market.Machine, error) {
	op := "unlist machine"
	if listed {
		op = "list machine"
	}
	var m market.Machine
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if m, err = ownMachine(ctx, tx, caller, id, op); err != nil {
			return err
		}
		if listed && m.PricePerGPUHour <= 0 {
			return market.Errorf(op, market.Invalid, "set a price first: gpumarket machine set %s --price-per-gpu-hour 0.50", id)
		}
		if listed && len(m.GPUs) == 0 {
			return market.Errorf(op, market.Invalid, "machine %s reported no GPUs; there is nothing to rent", id)
		}
		if m.Listed == listed {
			return nil
		}
		m.Listed = listed
		if err := tx.UpdateMachine(ctx, m); err != nil {
			return err
		}
		typ := "machine.unlisted"
		if listed {
			typ = "machine.listed"
		}
		return tx.AppendEvent(ctx, market.Event{At: s.now(), Type: typ, Account: caller.ID, Machine: id, Message: op})
	})
	if err != nil {
		return market.Machine{}, err
	}
	s.reindex(ctx, m.ID)
	return s.fill(ctx, m)
}
