package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// maxPollWait caps an agent's long poll.
const maxPollWait = 60 * time.Second

// Desired returns the desired state of the caller's machine. If since is
// the current version it waits up to wait for a change first. The answer is
// always the full state: the agent reconciles against it every time.
func (s *Service) Desired(ctx context.Context, caller market.Account, id market.MachineID, since int64, wait time.Duration) (market.DesiredState, error) {
	const op = "get desired state"
	// Only the owner may wait on a machine. An online machine's owner is
	// known here (a machine never changes hands); the read below checks
	// again in the store.
	if s.hub.version(machineTopic(id)) == since && wait > 0 && !s.live.owns(id, caller.ID) {
		err := s.read(ctx, func(tx Tx) error {
			_, err := ownMachine(ctx, tx, caller, id, op)
			return err
		})
		if err != nil {
			return market.DesiredState{}, err
		}
	}
	version := s.hub.wait(ctx, machineTopic(id), since, min(wait, maxPollWait))
	ds := market.DesiredState{Machine: id, Version: version, Assignments: []market.Assignment{}, LostAfterSeconds: int(s.cfg.LostAfter / time.Second)}
	var m market.Machine
	// The machine is read for its GPUs' UUIDs, and to check its owner:
	// for the caller's machine online here, the offer index has them.
	indexed, known := s.index.Machine(id)
	known = known && s.live.owns(id, caller.ID)
	// The machine, its instances and its challenge need not be read at
	// one instant: each is answered as it stands, and a change after
	// wakes the agent again.
	_, noCheck := s.noChecks.get(id)
	insts, kept := s.work.get(id)
	gen := s.work.reading(id)
	var err error
	if known && kept && noCheck {
		m = indexed // nothing to read
	} else {
		err = s.read(ctx, func(tx Tx) error {
			var err error
			if known {
				m = indexed
			} else if m, err = ownMachine(ctx, tx, caller, id, op); err != nil {
				return err
			}
			if !kept {
				if insts, err = tx.Instances(ctx, InstanceFilter{Machine: id, ActiveOnly: true}); err != nil {
					return err
				}
			}
			if noCheck {
				return nil
			}
			ds.Challenge, err = s.challengeIn(ctx, tx, id, false)
			return err
		})
		if err == nil && !kept {
			s.work.store(id, gen, insts, len(insts))
		}
	}
	if errors.Is(err, errUnissued) {
		// Once per check: issuing it starts its clock, a write.
		err = s.store.Tx(ctx, func(tx Tx) error {
			var err error
			ds.Challenge, err = s.challengeIn(ctx, tx, id, true)
			return err
		})
	}
	if err != nil {
		return market.DesiredState{}, err
	}
	uuid := map[int]string{}
	for _, g := range m.GPUs {
		uuid[g.Index] = g.UUID
	}
	for _, inst := range insts {
		a := market.Assignment{
			Instance:     inst.ID,
			Generation:   inst.Generation,
			Desired:      market.DesiredRun,
			GPUs:         inst.GPUs,
			Image:        inst.Image,
			Command:      inst.Command,
			Env:          inst.Env,
			GraceSeconds: inst.GraceSeconds,

			PowerLimitW:   inst.PowerLimitW,
			Clocks:        inst.Clocks,
			GPUClocks:     inst.GPUClocks,
			NoticeSeconds: inst.NoticeSeconds,

			Ports:   inst.Ports,
			SSHKeys: inst.SSHKeys,
			Limits:  inst.Limits,
		}
		if inst.State == market.InstanceStopping {
			a.Desired = market.DesiredStop
		}
		for _, g := range inst.GPUs {
			a.GPUUUIDs = append(a.GPUUUIDs, uuid[g])
		}
		ds.Assignments = append(ds.Assignments, a)
	}
	return ds, nil
}

// Report records an agent's observed state; it is also the machine's
// heartbeat. Reports about instances that are not assigned to this machine,
// or that carry another generation than the current one, are rejected one
// by one and change nothing. A heartbeat (an empty report, or one that
// repeats the instance reports recorded: work.go) is kept in memory;
// other reports share a transaction with the creates and reports that
// arrive with them (batch.go), each a step of it, undone alone when
// refused.
func (s *Service) Report(ctx context.Context, caller market.Account, id market.MachineID, r market.Report) (market.ReportResult, error) {
	now := s.now()
	bare := len(r.Instances) == 0 && len(r.Logs) == 0
	if seen, repeats := s.repeats(id, r); (bare || repeats) && s.live.beat(id, caller.ID, now) {
		// A heartbeat of a machine known online, bare or repeating the
		// reports recorded (work.go): memory only, with the replicas'
		// signals.
		for _, rep := range r.Instances {
			if k, _ := seen.find(rep.Instance); rep.Queue != nil || rep.Healthy != nil || k.replica {
				s.signals.record(rep.Instance, id, k.gpus, rep.Queue, rep.Healthy, now) // signals.go
			}
		}
		s.beats.inMemory.Add(1)
		s.metrics.record(id, r.GPUs, now)
		return market.ReportResult{}, nil
	}
	c := &reportCall{ctx: context.WithoutCancel(ctx), caller: caller, machine: id, r: r, seenGen: s.seen.reading(id)}
	s.batches.do(c) // batch.go
	if c.err != nil {
		return market.ReportResult{}, c.err
	}
	return c.res, nil
}

type reportCall struct {
	ctx     context.Context // the caller's values, without its cancellation
	caller  market.Account
	machine market.MachineID
	r       market.Report

	// What recording it did, for after the commit.
	res                market.ReportResult
	changedLogs, ended []market.InstanceID
	cameOnline         bool
	owner              market.AccountID
	at                 time.Time
	err                error
	// The reports that left their instance as the same report again
	// would (noteSeen), and Service.seen's generation before the batch.
	seen    seenReports
	seenGen uint64
}

func (c *reportCall) fail() {
	c.err = market.Errorf("report", market.Internal, "internal error (logged)")
}

// reported follows the reports of a batch committed, and returns the
// machines whose offers to refresh from the store (reindex).
func (s *Service) reported(reports []*reportCall) (reindex []market.MachineID) {
	for _, c := range reports {
		if c.err != nil {
			continue
		}
		s.live.online(c.machine, c.owner, c.at)
		s.metrics.record(c.machine, c.r.GPUs, c.at)
		for _, id := range c.changedLogs {
			s.hub.notify(logTopic(id))
		}
		s.instancesEnded(c.machine, c.ended)
		s.seen.store(c.machine, c.seenGen, c.seen, len(c.seen))
		if c.cameOnline || len(c.ended) > 0 {
			reindex = append(reindex, c.machine)
		}
	}
	return reindex
}

// reportIn records c's report in tx.
func (s *Service) reportIn(ctx context.Context, tx Tx, c *reportCall) error {
	const op = "report"
	c.res, c.changedLogs, c.ended, c.cameOnline, c.seen = market.ReportResult{}, nil, nil, false, nil
	id, r := c.machine, c.r
	now := s.now()
	c.owner, c.at = c.caller.ID, now
	// A machine online here, the caller's, needs no read: as for a bare
	// heartbeat in Report.
	if !s.live.owns(id, c.caller.ID) {
		m, err := ownMachine(ctx, tx, c.caller, id, op)
		if err != nil {
			return err
		}
		c.owner = m.Owner
		if !m.Online {
			c.cameOnline = true
			if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.online", Account: m.Owner, Machine: m.ID, Message: "heartbeats resumed"}); err != nil {
				return err
			}
			// Only the change is written at once; later heartbeats of an
			// online machine go to memory and are flushed in batches.
			m.Online, m.LastSeenAt = true, now
			if err := tx.UpdateMachine(ctx, m); err != nil {
				return err
			}
		}
	}
	accepted := map[market.InstanceID]bool{}
	for _, rep := range r.Instances {
		inst, err := tx.Instance(ctx, rep.Instance)
		switch {
		case market.IsKind(err, market.NotFound) || (err == nil && inst.Machine != id):
			c.res.Rejected = append(c.res.Rejected, market.Rejection{Instance: rep.Instance, Reason: "not assigned to this machine"})
			continue
		case err != nil:
			return err
		case rep.Generation != inst.Generation:
			c.res.Rejected = append(c.res.Rejected, market.Rejection{Instance: rep.Instance,
				Reason: fmt.Sprintf("stale generation %d; the current one is %d", rep.Generation, inst.Generation)})
			continue
		}
		accepted[inst.ID] = true
		if rep.Queue != nil || rep.Healthy != nil || inst.Env[market.DeploymentEnv] != "" {
			s.signals.record(inst.ID, id, inst.GPUs, rep.Queue, rep.Healthy, now) // signals.go
		}
		// Where the agent published the ports: kept while it runs.
		ports := len(rep.Ports) > 0 && !inst.State.Terminal() && !slices.Equal(rep.Ports, inst.PortMap)
		if ports {
			inst.PortMap = rep.Ports
		}
		typ, ok := observe(&inst, rep, now)
		noteSeen(&c.seen, rep, inst) // work.go
		if !ok {
			if ports {
				if err := tx.UpdateInstance(ctx, inst); err != nil {
					return err
				}
			}
			continue
		}
		if inst.State.Terminal() {
			c.ended = append(c.ended, inst.ID)
			if err := s.settle(ctx, tx, &inst, now); err != nil {
				return err
			}
		}
		if err := tx.UpdateInstance(ctx, inst); err != nil {
			return err
		}
		if err := tx.AppendEvent(ctx, market.Event{At: now, Type: typ, Account: inst.Renter, Machine: id, Instance: inst.ID, Message: describe(inst)}); err != nil {
			return err
		}
	}
	var logs []market.LogChunk
	for _, l := range r.Logs {
		if !accepted[l.Instance] {
			inst, err := tx.Instance(ctx, l.Instance)
			if err != nil || inst.Machine != id {
				continue // logs of an instance this machine does not run
			}
			accepted[l.Instance] = true
		}
		if l.At.IsZero() {
			l.At = now
		}
		logs = append(logs, l)
		c.changedLogs = append(c.changedLogs, l.Instance)
	}
	if len(logs) > 0 {
		return tx.AppendLogs(ctx, logs)
	}
	return nil
}

// observe applies an accepted report to inst and returns the event type
// and whether anything changed.
func observe(inst *market.Instance, rep market.InstanceReport, now time.Time) (string, bool) {
	if inst.State.Terminal() {
		return "", false
	}
	end := func(state market.InstanceState, reason string) {
		if state == market.InstanceStopped && preempting(*inst) {
			state = market.InstancePreempted
		}
		inst.State = state
		if inst.Reason == "" || state == market.InstanceFailed {
			inst.Reason = reason
		}
		inst.ExitCode = rep.ExitCode
		inst.EndedAt = ptr(now)
		if inst.StopAt == nil {
			inst.StopAt = ptr(now)
		}
	}
	switch rep.State {
	case market.ObservedStarting:
		if inst.State != market.InstancePending {
			return "", false
		}
		inst.State = market.InstanceStarting
		return "instance.starting", true
	case market.ObservedRunning:
		if inst.State != market.InstancePending && inst.State != market.InstanceStarting {
			return "", false
		}
		inst.State = market.InstanceRunning
		inst.StartedAt = ptr(now)
		return "instance.running", true
	case market.ObservedExited:
		code := "unknown"
		if rep.ExitCode != nil {
			code = fmt.Sprint(*rep.ExitCode)
		}
		// The runner's detail, such as "(out of memory)", for the renter.
		detail := strings.TrimPrefix(rep.Message, "exited "+code)
		if detail != "" && !strings.HasPrefix(detail, " ") && !strings.HasPrefix(detail, ":") {
			detail = ": " + detail
		}
		end(market.InstanceStopped, "exited with code "+code+detail)
		return "instance.stopped", true
	case market.ObservedStopped:
		end(market.InstanceStopped, "stopped")
		return "instance.stopped", true
	case market.ObservedFailed:
		msg := rep.Message
		if msg == "" {
			msg = "the agent could not start it"
		}
		end(market.InstanceFailed, "failed: "+msg)
		return "instance.failed", true
	}
	return "", false
}

func describe(inst market.Instance) string {
	s := string(inst.State)
	if inst.Reason != "" {
		s += ": " + inst.Reason
	}
	return s
}

// detectLost takes machines silent past the lost deadline offline and fails
// their instances, billed up to the last heartbeat.
func (s *Service) detectLost(ctx context.Context) error {
	online := true
	deadline := s.now().Add(-s.cfg.LostAfter*time.Duration(s.cfg.Speedup) - s.heartbeatSlack())
	var ms []market.Machine
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		ms, err = tx.Machines(ctx, MachineFilter{Online: &online, SeenBefore: deadline})
		return err
	})
	if err != nil {
		return fmt.Errorf("list online machines: %w", err)
	}
	var ids []market.MachineID
	for _, m := range ms {
		if m.LastSeenAt.Before(deadline) {
			ids = append(ids, m.ID)
		}
	}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), loseBatch)]
		ids = ids[len(chunk):]
		if err := s.loseMachines(ctx, chunk, deadline); err != nil {
			return fmt.Errorf("take %d machines offline (%s first): %w", len(chunk), chunk[0], err)
		}
	}
	return nil
}

// loseBatch is how many silent machines one transaction takes offline.
const loseBatch = 64

// loseMachines takes offline, in one transaction, the machines of ids that
// are still silent since deadline, fails their instances (billed up to the
// last heartbeat) and slashes for the downtime.
func (s *Service) loseMachines(ctx context.Context, ids []market.MachineID, deadline time.Time) error {
	var lost []market.MachineID
	ended := map[market.MachineID][]market.InstanceID{}
	err := s.store.Tx(ctx, func(tx Tx) error {
		lost, ended = nil, map[market.MachineID][]market.InstanceID{}
		vouched, err := tx.VouchedSeen(ctx, ids)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := tx.Machine(ctx, id)
			if err != nil {
				return err
			}
			if !m.Online || !m.LastSeenAt.Before(deadline) {
				continue // a heartbeat came in meanwhile
			}
			if !vouched[id].Before(deadline) {
				continue // a coordinator claimed it meanwhile
			}
			e, err := s.loseMachine(ctx, tx, m)
			if err != nil {
				return err
			}
			lost, ended[id] = append(lost, id), e
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range lost {
		// Only a machine taken offline is forgotten: one that a claim
		// saved (this coordinator's own flush, between the list and this
		// transaction) must stay, or nothing would ever release its claim
		// and the vouch would keep it online after its agent died.
		s.live.forget(id)
		s.instancesEnded(id, ended[id])
	}
	s.reindex(ctx, lost...)
	return nil
}

// loseMachine takes m offline in tx and fails its active instances; it
// returns the instances it ended.
func (s *Service) loseMachine(ctx context.Context, tx Tx, m market.Machine) ([]market.InstanceID, error) {
	now := s.now()
	m.Online = false
	if err := tx.UpdateMachine(ctx, m); err != nil {
		return nil, err
	}
	if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "machine.offline", Account: m.Owner, Machine: m.ID,
		Message: fmt.Sprintf("no heartbeat since %s", m.LastSeenAt.Format(time.RFC3339))}); err != nil {
		return nil, err
	}
	insts, err := tx.Instances(ctx, InstanceFilter{Machine: m.ID, ActiveOnly: true})
	if err != nil {
		return nil, err
	}
	var ended []market.InstanceID
	for _, inst := range insts {
		inst.State = market.InstanceFailed
		inst.Reason = "host lost contact"
		inst.EndedAt = ptr(now)
		if inst.StopAt == nil || m.LastSeenAt.Before(*inst.StopAt) {
			inst.StopAt = ptr(m.LastSeenAt)
		}
		inst.Generation++
		if err := s.settle(ctx, tx, &inst, now); err != nil {
			return nil, err
		}
		if err := tx.UpdateInstance(ctx, inst); err != nil {
			return nil, err
		}
		ended = append(ended, inst.ID)
		if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "instance.failed", Account: inst.Renter, Machine: m.ID, Instance: inst.ID, Message: describe(inst)}); err != nil {
			return nil, err
		}
	}
	return ended, s.slashForDowntime(ctx, tx, m, insts) // bond.go
}

// instancesEnded wakes the long polls about instances that reached a
// terminal state: the machine's agent (they leave its desired state) and
// log followers, whose topics are then dropped since nobody waits on the
// logs of an ended instance.
func (s *Service) instancesEnded(machine market.MachineID, ended []market.InstanceID) {
	if len(ended) == 0 {
		return
	}
	s.machineChanged(machine)
	for _, id := range ended {
		s.hub.notify(logTopic(id))
		s.hub.forget(logTopic(id))
	}
}
