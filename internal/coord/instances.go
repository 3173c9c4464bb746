package coord

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// Limits on what a renter may pass to an instance.
const (
	maxEnvVars    = 100
	maxArgs       = 256
	maxArgBytes   = 64 << 10
	maxGPUsPerReq = 64
)

// CreateInstance rents GPUs of a machine on demand. It reserves exact GPU
// indices and holds one hour of the price in escrow in one transaction, so
// two renters never get the same GPU and nobody rents without the money.
func (s *Service) CreateInstance(ctx context.Context, caller market.Account, req market.CreateInstanceRequest) (market.Instance, error) {
	const op = "create instance"
	if err := require(caller, op, market.RoleRenter); err != nil {
		return market.Instance{}, err
	}
	req, err := market.ApplyTemplate(req)
	if err != nil {
		return market.Instance{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	if req.Auto != "" {
		if req.Machine != "" {
			return market.Instance{}, market.Errorf(op, market.Invalid, "name a machine or give an --auto query, not both")
		}
		return s.createAuto(ctx, caller, req)
	}
	inst, err := s.newInstance(caller, req)
	if err != nil {
		return market.Instance{}, err
	}
	return s.createBatched(ctx, caller, req, inst) // batch.go
}

// newInstance checks a create request (its template already applied) and
// returns the instance it asks for, before any machine is looked at.
func (s *Service) newInstance(caller market.Account, req market.CreateInstanceRequest) (market.Instance, error) {
	const op = "create instance"
	grace, err := s.validateCreate(req)
	if err != nil {
		return market.Instance{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	return market.Instance{
		ID:           market.InstanceID(market.NewID(market.InstancePrefix)),
		Renter:       caller.ID,
		Machine:      req.Machine,
		Kind:         market.OnDemand,
		Image:        req.Image,
		Command:      req.Command,
		Env:          req.Env,
		State:        market.InstancePending,
		Generation:   1,
		CreatedAt:    s.now(),
		GraceSeconds: int(grace / time.Second),
		Template:     req.Template,
		Ports:        req.Ports,
		SSHKeys:      req.SSHKeys,
	}, nil
}

// createIn creates inst, from newInstance, in tx: it checks the machine,
// makes room by preempting spot work, reserves exact GPUs, holds the
// escrow and records the event. The caller notifies the machine's agent
// and reindexes it after the commit. Every refusal has a kind other than
// Internal; run inside Tx.Atomic, a refusal leaves tx as it was.
func (s *Service) createIn(ctx context.Context, tx Tx, caller market.Account, req market.CreateInstanceRequest, inst *market.Instance) error {
	const op = "create instance"
	now := inst.CreatedAt
	if err := beginCreate(ctx, tx); err != nil { // idempotency.go
		return err
	}
	m, err := tx.Machine(ctx, req.Machine)
	if market.IsKind(err, market.NotFound) {
		return market.Errorf(op, market.NotFound, "machine %s not found; find one with `gpumarket offer search`", req.Machine)
	}
	if err != nil {
		return err
	}
	switch {
	case !m.Online:
		return market.Errorf(op, market.Unavailable, "machine %s is offline; choose another with `gpumarket offer search`", m.ID)
	case m.Listed && m.Unverified:
		return market.Errorf(op, market.Conflict, "machine %s has not passed verification; it cannot be rented until it does", m.ID)
	case !m.Listed || !match.Rentable(m):
		return market.Errorf(op, market.Conflict, "machine %s is not listed for rent", m.ID)
	case m.Runner == "process" && req.Template != "":
		return market.Errorf(op, market.Invalid, "machine %s runs plain processes; template %s runs a container image and needs a machine with runner docker", m.ID, req.Template)
	case m.Runner == "process" && req.Image != "":
		return market.Errorf(op, market.Invalid, "machine %s runs plain processes, not container images; drop --image or pick a machine with runner docker", m.ID)
	case m.Runner == "docker" && req.Image == "":
		return market.Errorf(op, market.Invalid, "machine %s runs containers; name an image with --image", m.ID)
	case len(req.Command) == 0 && req.Image == "":
		return market.Errorf(op, market.Invalid, "give a command to run (after --), or an image")
	}
	if err := containerSpec(inst, req, m); err != nil {
		return market.Errorf(op, market.Invalid, "%w", err)
	}
	if err := checkInstanceSettings(m, req.PowerLimitW, req.Clocks, req.GPUClocks, req.GPUs); err != nil { // spot.go
		return market.Errorf(op, market.Invalid, "%w", err)
	}
	inst.PowerLimitW, inst.Clocks, inst.GPUClocks = req.PowerLimitW, req.Clocks, req.GPUClocks
	if m.UsedGPUs, err = s.makeRoom(ctx, tx, m, req.GPUs, now); err != nil { // spot.go
		return err
	}
	if inst.GPUs, err = match.Fit(m, req.GPUs); err != nil {
		return err
	}
	inst.PricePerHour = m.PricePerGPUHour * market.Money(req.GPUs)
	inst.Escrow = inst.PricePerHour
	if err := s.checkSpendCap(ctx, tx, op, caller.ID, inst.PricePerHour); err != nil { // limits.go
		return err
	}
	avail, err := tx.Balance(ctx, market.Available(caller.ID), market.DefaultAsset)
	if err != nil {
		return err
	}
	if avail < inst.Escrow {
		return market.Errorf(op, market.InsufficientFunds,
			"renting %d GPUs of %s holds one hour (%s %s) in escrow, but you have %s available; deposit more or rent fewer GPUs",
			req.GPUs, m.ID, inst.Escrow, market.DefaultAsset, avail)
	}
	asReplica(ctx, inst) // deployments.go
	if err := tx.InsertInstance(ctx, *inst); err != nil {
		return err
	}
	if err := recordReplica(ctx, tx, *inst); err != nil {
		return err
	}
	if err := tx.ApplyTransferLater(ctx, ledger.Hold(caller.ID, inst.ID, inst.Escrow, now)); err != nil {
		return err
	}
	if err := tx.AppendEvent(ctx, market.Event{At: now, Type: "instance.created", Account: caller.ID, Machine: m.ID, Instance: inst.ID,
		Message: fmt.Sprintf("%d GPUs %v at %s/h, %s held in escrow", len(inst.GPUs), inst.GPUs, inst.PricePerHour, inst.Escrow)}); err != nil {
		return err
	}
	return s.recordCreate(ctx, tx, *inst)
}

func (s *Service) validateCreate(req market.CreateInstanceRequest) (time.Duration, error) {
	switch {
	case req.Machine == "":
		return 0, fmt.Errorf("say which machine to rent (find one with `gpumarket offer search`), or give an --auto query")
	case req.GPUs < 1:
		return 0, fmt.Errorf("GPU count must be at least 1, got %d", req.GPUs)
	case req.GPUs > maxGPUsPerReq:
		return 0, fmt.Errorf("GPU count %d is above the limit of %d", req.GPUs, maxGPUsPerReq)
	case len(req.Command) > maxArgs:
		return 0, fmt.Errorf("the command has %d arguments; the limit is %d", len(req.Command), maxArgs)
	case len(req.Env) > maxEnvVars:
		return 0, fmt.Errorf("%d environment variables; the limit is %d", len(req.Env), maxEnvVars)
	case req.GraceSeconds < 0:
		return 0, fmt.Errorf("grace period must not be negative, got %ds", req.GraceSeconds)
	}
	size := 0
	for _, a := range req.Command {
		size += len(a)
		if strings.ContainsRune(a, 0) {
			return 0, fmt.Errorf("command arguments must not contain NUL bytes")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(req.Env)) {
		v := req.Env[k]
		size += len(k) + len(v)
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return 0, fmt.Errorf("environment variable %q: names must be non-empty without '=' and values without NUL bytes", k)
		}
		if isReservedEnv(k) {
			return 0, fmt.Errorf("environment variable %s is set by gpumarket and cannot be overridden", k)
		}
	}
	if size > maxArgBytes {
		return 0, fmt.Errorf("command and environment add up to %d bytes; the limit is %d", size, maxArgBytes)
	}
	if _, err := market.CheckPorts(req.Ports); err != nil {
		return 0, err
	}
	if _, err := market.CheckSSHKeys(req.SSHKeys); err != nil {
		return 0, err
	}
	grace := time.Duration(req.GraceSeconds) * time.Second
	if grace == 0 {
		grace = s.cfg.DefaultGrace
	}
	if grace > s.cfg.MaxGrace {
		return 0, fmt.Errorf("grace period %s is above the maximum of %s", grace, s.cfg.MaxGrace)
	}
	return grace, nil
}

// containerSpec sets the container fields of inst from req, checked
// against machine m: ports, SSH keys and limits need a docker machine,
// ports a host port range wide enough, and limits that fit the machine
// (zero limits are the instance's share of it).
func containerSpec(inst *market.Instance, req market.CreateInstanceRequest, m market.Machine) error {
	var err error
	if m.Runner != "docker" {
		if len(req.Ports) > 0 || len(req.SSHKeys) > 0 || req.Template != "" || req.Limits != (market.Limits{}) {
			return fmt.Errorf("machine %s runs plain processes: ports, SSH keys, templates and resource limits need a machine with runner docker", m.ID)
		}
		return nil
	}
	if inst.Ports, err = market.CheckPorts(req.Ports); err != nil {
		return err
	}
	if n := len(inst.Ports); n > 0 && m.PortRange.Size() == 0 {
		return fmt.Errorf("machine %s publishes no ports (its agent runs without --port-range); rent without --port or pick another machine", m.ID)
	} else if n > m.PortRange.Size() {
		return fmt.Errorf("%d ports asked but machine %s publishes at most %d (host ports %s)", n, m.ID, m.PortRange.Size(), m.PortRange)
	}
	if inst.SSHKeys, err = market.CheckSSHKeys(req.SSHKeys); err != nil {
		return err
	}
	if len(inst.Ports) == 0 {
		inst.Ports = nil
	}
	if len(inst.SSHKeys) == 0 {
		inst.SSHKeys = nil
	}
	inst.Limits, err = req.Limits.Resolve(market.ShareLimits(m.Hardware, req.GPUs), m.Hardware)
	return err
}

func isReservedEnv(k string) bool {
	switch k {
	case "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES":
		return true
	}
	return strings.HasPrefix(k, "GPUMARKET_")
}

// Instances lists the caller's instances (every instance for an admin who
// asks for all), oldest first.
func (s *Service) Instances(ctx context.Context, caller market.Account, all bool) ([]market.Instance, error) {
	f := InstanceFilter{Renter: caller.ID}
	if all {
		if err := require(caller, "list all instances", market.RoleAdmin); err != nil {
			return nil, err
		}
		f.Renter = ""
	}
	var is []market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		is, err = tx.Instances(ctx, f)
		return err
	})
	if is == nil {
		is = []market.Instance{}
	}
	return is, err
}

// ownInstance loads an instance the caller rented (any, for an admin).
// Other renters' instances are reported as not found, so their IDs leak
// nothing.
func ownInstance(ctx context.Context, tx Tx, caller market.Account, id market.InstanceID, op string) (market.Instance, error) {
	inst, err := tx.Instance(ctx, id)
	if err == nil && inst.Renter != caller.ID && !caller.Has(market.RoleAdmin) {
		err = market.Errorf(op, market.NotFound, "instance %s not found among your instances (gpumarket instance list)", id)
	}
	return inst, err
}

// Instance returns one of the caller's instances.
func (s *Service) Instance(ctx context.Context, caller market.Account, id market.InstanceID) (market.Instance, error) {
	var inst market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		inst, err = ownInstance(ctx, tx, caller, id, "show instance")
		return err
	})
	return inst, err
}

// StopInstance asks the agent to stop an instance. Billing ends now; the
// agent gets the stop on its next poll and the GPUs are free once it
// confirms. Stopping an ended instance returns it unchanged.
func (s *Service) StopInstance(ctx context.Context, caller market.Account, id market.InstanceID) (market.Instance, error) {
	const op = "stop instance"
	var inst market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if inst, err = ownInstance(ctx, tx, caller, id, op); err != nil {
			return err
		}
		if inst.State.Terminal() || inst.State == market.InstanceStopping {
			return nil
		}
		now := s.now()
		s.beginStop(&inst, now, "stopped by renter")
		if err := s.settle(ctx, tx, &inst, now); err != nil {
			return err
		}
		if err := tx.UpdateInstance(ctx, inst); err != nil {
			return err
		}
		return tx.AppendEvent(ctx, market.Event{At: now, Type: "instance.stopping", Account: caller.ID, Machine: inst.Machine, Instance: inst.ID, Message: inst.Reason})
	})
	if err != nil {
		return market.Instance{}, err
	}
	s.machineChanged(inst.Machine)
	return inst, nil
}

// beginStop moves an active instance to stopping with a new generation, so
// that a late report of the old generation cannot revive it, and ends its
// billing at now.
func (s *Service) beginStop(inst *market.Instance, now time.Time, reason string) {
	inst.State = market.InstanceStopping
	inst.Generation++
	inst.Reason = reason
	inst.NoticeAt = ptr(now)
	if inst.StopAt == nil {
		inst.StopAt = ptr(now)
	}
}

// Logs returns an instance's log chunks after the given sequence number.
// With wait > 0 and nothing new, it waits up to wait for more while the
// instance is active.
func (s *Service) Logs(ctx context.Context, caller market.Account, id market.InstanceID, after int64, limit int, wait time.Duration) ([]market.LogChunk, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	if wait > time.Minute {
		wait = time.Minute
	}
	read := func() ([]market.LogChunk, bool, error) {
		var chunks []market.LogChunk
		var active bool
		err := s.store.Tx(ctx, func(tx Tx) error {
			inst, err := ownInstance(ctx, tx, caller, id, "read logs")
			if err != nil {
				return err
			}
			active = inst.Active()
			chunks, err = tx.Logs(ctx, id, after, limit)
			return err
		})
		return chunks, active, err
	}
	v := s.hub.version(logTopic(id))
	chunks, active, err := read()
	if err != nil || len(chunks) > 0 || !active || wait <= 0 {
		return orEmpty(chunks), err
	}
	s.hub.wait(ctx, logTopic(id), v, wait)
	chunks, _, err = read()
	return orEmpty(chunks), err
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Events lists events the caller may see: about one of its instances or
// machines, or (without a filter) those it caused. Admins see all.
func (s *Service) Events(ctx context.Context, caller market.Account, f EventFilter) ([]market.Event, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	var es []market.Event
	err := s.store.Tx(ctx, func(tx Tx) error {
		if !caller.Has(market.RoleAdmin) {
			switch {
			case f.Instance != "":
				if _, err := ownInstance(ctx, tx, caller, f.Instance, "list events"); err != nil {
					return err
				}
			case f.Machine != "":
				if _, err := ownMachine(ctx, tx, caller, f.Machine, "list events"); err != nil {
					return err
				}
			default:
				f.Account = caller.ID
			}
		}
		var err error
		es, err = tx.Events(ctx, f)
		return err
	})
	return orEmpty(es), err
}
