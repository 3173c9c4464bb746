package coord

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/deploy"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// Deployments: sets of replicas the leader keeps running. The API stores a
// deployment's spec; every tick the leader reads the deployments, their
// replicas (instances carrying the deployment's ID), the machines, pools
// and metrics, asks the pure reconciler (internal/deploy) what to do, and
// applies its plan through the ordinary instance paths: a placement is a
// CreateInstance as the deployment's owner (escrow and billing as for any
// rental), a stop is a stop with the reconciler's reason. Every decision is
// recorded in the deployment's history with its reason.

// Limits of a deployment spec.
const (
	MaxReplicasPerDeployment = 100
	maxDeploymentPriority    = 1000
	maxDeploymentRegions     = 16
	deploymentHistoryShown   = 50
	// failureWindow is how far back failed replicas count towards the
	// crash-loop backoff.
	failureWindow = 10 * time.Minute
)

var deploymentName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// deploymentKey marks the context of an instance create made for a
// deployment: CreateInstance records the instance as its replica, at the
// revision given, in the same transaction (recordReplica).
type deploymentKey struct{}

type replicaOf struct {
	id     market.DeploymentID
	rev    int64
	health *market.HealthCheck
}

func forDeployment(ctx context.Context, id market.DeploymentID, rev int64, health *market.HealthCheck) context.Context {
	return context.WithValue(ctx, deploymentKey{}, replicaOf{id, rev, health})
}

// asReplica marks inst, about to be inserted, as a replica of the
// deployment its create was made for, if any, and reports whether it did.
// A replica carries its deployment's ID in $GPUMARKET_DEPLOYMENT (so that
// any coordinator its agent reports to keeps its signals, signals.go) and
// its health check, if any, in $GPUMARKET_HEALTH_CHECK; renters cannot set
// either. After the insert, recordReplica stores the link.
func asReplica(ctx context.Context, inst *market.Instance) bool {
	r, ok := ctx.Value(deploymentKey{}).(replicaOf)
	if !ok || r.id == "" {
		return false
	}
	inst.Deployment, inst.DeploymentRevision = r.id, r.rev
	inst.Env = maps.Clone(inst.Env)
	if inst.Env == nil {
		inst.Env = map[string]string{}
	}
	inst.Env[market.DeploymentEnv] = string(r.id)
	if r.health != nil {
		inst.Env[market.HealthEnv] = r.health.String()
	}
	return true
}

// recordReplica stores, in tx, the link of inst (inserted, marked by
// asReplica) to its deployment and revision.
func recordReplica(ctx context.Context, tx Tx, inst market.Instance) error {
	if inst.Deployment == "" {
		return nil
	}
	return tx.SetInstanceDeployment(ctx, inst.ID, inst.Deployment, inst.DeploymentRevision)
}

// checkSpec validates and normalises a deployment spec.
func (s *Service) checkSpec(spec *market.DeploymentSpec) error {
	spec.Name = strings.TrimSpace(spec.Name)
	spec.Query = strings.TrimSpace(spec.Query)
	spec.Pool = strings.TrimSpace(spec.Pool)
	switch {
	case !deploymentName.MatchString(spec.Name):
		return fmt.Errorf("deployment name %q must be 1 to 63 lower-case letters, digits and -, starting and ending with a letter or digit", spec.Name)
	case spec.GPUsPerReplica < 1 || spec.GPUsPerReplica > maxGPUsPerReq:
		return fmt.Errorf("GPUs per replica must be between 1 and %d, got %d", maxGPUsPerReq, spec.GPUsPerReplica)
	case spec.MinReplicas < 0:
		return fmt.Errorf("minimum replicas must not be negative, got %d", spec.MinReplicas)
	case spec.MaxReplicas < spec.MinReplicas:
		return fmt.Errorf("maximum replicas %d is below the minimum %d; write --replicas MIN..MAX", spec.MaxReplicas, spec.MinReplicas)
	case spec.MaxReplicas > MaxReplicasPerDeployment:
		return fmt.Errorf("maximum replicas %d is above the limit of %d per deployment", spec.MaxReplicas, MaxReplicasPerDeployment)
	case spec.MaxReplicas == 0:
		return fmt.Errorf("maximum replicas must be at least 1")
	case spec.MaxLatency < 0:
		return fmt.Errorf("max latency must not be negative")
	case spec.MaxLatency > 0 && len(spec.Regions) == 0:
		return fmt.Errorf("a max latency needs regions to measure it from; add --regions")
	case len(spec.Regions) > maxDeploymentRegions:
		return fmt.Errorf("%d regions; the limit is %d", len(spec.Regions), maxDeploymentRegions)
	case spec.Priority < 0 || spec.Priority > maxDeploymentPriority:
		return fmt.Errorf("priority must be between 0 and %d, got %d", maxDeploymentPriority, spec.Priority)
	case spec.MaxPricePerDay < 0:
		return fmt.Errorf("max price per day must not be negative")
	case spec.Spot && spec.MaxPricePerDay == 0:
		return fmt.Errorf("a spot deployment bids --max-price-per-day per GPU-day for each replica; give one")
	case spec.PowerLimitW < 0:
		return fmt.Errorf("power limit must not be negative, got %d W", spec.PowerLimitW)
	case spec.PowerLimitW > 0 && !spec.Spot:
		return fmt.Errorf("a power limit applies to spot replicas; add --spot or drop --power-limit")
	case spec.Image == "" && len(spec.Command) == 0:
		return fmt.Errorf("give an image (--image) or a command to run (after --)")
	}
	for i, r := range spec.Regions {
		r = strings.ToLower(strings.TrimSpace(r))
		if r == "" || len(r) > 64 || strings.ContainsAny(r, " \t[],\"'") {
			return fmt.Errorf("region %q is not a region name like eu or us-east", spec.Regions[i])
		}
		spec.Regions[i] = r
	}
	if spec.Health != nil {
		if err := spec.Health.Check(); err != nil {
			return err
		}
	}
	if spec.Scale != nil {
		if err := spec.Scale.Check(); err != nil {
			return err
		}
		if spec.MaxReplicas == spec.MinReplicas {
			return fmt.Errorf("a scale rule needs room to scale: the replicas are fixed at %d; write --replicas MIN..MAX", spec.MinReplicas)
		}
	}
	if _, err := match.Parse(spec.Query); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	// The replicas' command and environment obey the rules of any rental.
	_, err := s.validateCreate(market.CreateInstanceRequest{Machine: "m-check", GPUs: spec.GPUsPerReplica, Image: spec.Image,
		Command: spec.Command, Env: spec.Env, GraceSeconds: spec.GraceSeconds})
	return err
}

// sameWorkload reports whether two specs run the same thing on each
// replica; when not, a new revision rolls out.
func sameWorkload(a, b market.DeploymentSpec) bool {
	return a.Image == b.Image && slices.Equal(a.Command, b.Command) && maps.Equal(a.Env, b.Env) &&
		a.GPUsPerReplica == b.GPUsPerReplica && a.GraceSeconds == b.GraceSeconds && healthKey(a.Health) == healthKey(b.Health)
}

// workloadChanges names what differs between two specs' workloads.
func workloadChanges(a, b market.DeploymentSpec) []string {
	var out []string
	if a.Image != b.Image {
		out = append(out, fmt.Sprintf("image %q", b.Image))
	}
	if !slices.Equal(a.Command, b.Command) {
		out = append(out, "command")
	}
	if !maps.Equal(a.Env, b.Env) {
		out = append(out, "env")
	}
	if a.GPUsPerReplica != b.GPUsPerReplica {
		out = append(out, fmt.Sprintf("%d GPUs per replica", b.GPUsPerReplica))
	}
	if a.GraceSeconds != b.GraceSeconds {
		out = append(out, "grace")
	}
	if healthKey(a.Health) != healthKey(b.Health) {
		out = append(out, "health check")
	}
	return out
}

func healthKey(h *market.HealthCheck) string {
	if h == nil {
		return ""
	}
	return h.String()
}

// ownDeployment loads a deployment of the caller by ID or name (any, by
// ID, for an admin). Others' deployments are reported as not found.
func ownDeployment(ctx context.Context, tx Tx, caller market.Account, ref, op string) (market.Deployment, error) {
	var d market.Deployment
	var err error
	if strings.HasPrefix(ref, market.DeploymentPrefix) {
		d, err = tx.Deployment(ctx, market.DeploymentID(ref))
		if err == nil && d.Owner != caller.ID && !caller.Has(market.RoleAdmin) {
			err = market.Errorf(op, market.NotFound, "deployment %s not found among your deployments (gpumarket deployment list)", ref)
		}
		if err == nil || !market.IsKind(err, market.NotFound) {
			return d, err
		}
	}
	d, err = tx.DeploymentByName(ctx, caller.ID, ref)
	if market.IsKind(err, market.NotFound) {
		return d, market.Errorf(op, market.NotFound, "deployment %q not found among your deployments (gpumarket deployment list)", ref)
	}
	return d, err
}

func (s *Service) checkPool(ctx context.Context, tx Tx, spec market.DeploymentSpec, op string) error {
	if spec.Pool == "" {
		return nil
	}
	_, err := tx.Pool(ctx, spec.Pool)
	if market.IsKind(err, market.NotFound) {
		return market.Errorf(op, market.Invalid, "pool %q does not exist; ask an operator, or leave --pool out to use the open market", spec.Pool)
	}
	return err
}

// CreateDeployment stores a new deployment; the leader places its replicas
// on its next pass.
func (s *Service) CreateDeployment(ctx context.Context, caller market.Account, spec market.DeploymentSpec) (market.Deployment, error) {
	const op = "create deployment"
	if err := require(caller, op, market.RoleRenter); err != nil {
		return market.Deployment{}, err
	}
	if err := s.checkSpec(&spec); err != nil {
		return market.Deployment{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	now := s.now()
	d := market.Deployment{ID: market.DeploymentID(market.NewID(market.DeploymentPrefix)), Owner: caller.ID, Spec: spec,
		Revision: 1, Desired: spec.MinReplicas, CreatedAt: now, UpdatedAt: now}
	err := s.store.Tx(ctx, func(tx Tx) error {
		if err := s.checkPool(ctx, tx, spec, op); err != nil {
			return err
		}
		if err := tx.InsertDeployment(ctx, d); err != nil {
			return err
		}
		return tx.AppendDeploymentHistory(ctx, []market.DeploymentHistory{{Deployment: d.ID, At: now, Kind: "create",
			Message: fmt.Sprintf("created with %d..%d replicas of %d GPUs, revision 1", spec.MinReplicas, spec.MaxReplicas, spec.GPUsPerReplica)}})
	})
	if err != nil {
		return market.Deployment{}, err
	}
	return d, nil
}

// Deployments lists the caller's deployments (every one for an admin who
// asks for all).
func (s *Service) Deployments(ctx context.Context, caller market.Account, all bool) ([]market.Deployment, error) {
	f := DeploymentFilter{Owner: caller.ID}
	if all {
		if err := require(caller, "list all deployments", market.RoleAdmin); err != nil {
			return nil, err
		}
		f.Owner = ""
	}
	var ds []market.Deployment
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		ds, err = tx.Deployments(ctx, f)
		return err
	})
	return orEmpty(ds), err
}

// Deployment returns a deployment with its active replicas and its recent
// decisions.
func (s *Service) Deployment(ctx context.Context, caller market.Account, ref string) (market.DeploymentView, error) {
	var v market.DeploymentView
	err := s.store.Tx(ctx, func(tx Tx) error {
		d, err := ownDeployment(ctx, tx, caller, ref, "show deployment")
		if err != nil {
			return err
		}
		v.Deployment = d
		if v.Replicas, err = tx.Replicas(ctx, ReplicaFilter{Deployment: d.ID, ActiveOnly: true}); err != nil {
			return err
		}
		if d.Spec.Spot {
			if v.Bids, err = deploymentBids(ctx, tx, d.Owner, d.ID); err != nil {
				return err
			}
		}
		v.History, err = tx.DeploymentHistory(ctx, d.ID, deploymentHistoryShown)
		return err
	})
	v.Replicas, v.History = orEmpty(v.Replicas), orEmpty(v.History)
	return v, err
}

// deploymentBids lists the open bids a spot deployment placed for its
// replicas.
func deploymentBids(ctx context.Context, tx Tx, owner market.AccountID, id market.DeploymentID) ([]market.Bid, error) {
	bs, err := tx.Bids(ctx, BidFilter{Bidder: owner, OpenOnly: true})
	return slices.DeleteFunc(bs, func(b market.Bid) bool { return b.Env[market.DeploymentEnv] != string(id) }), err
}

// UpdateDeployment replaces a deployment's spec. A change of what the
// replicas run (image, command, env, GPUs, grace) starts a rolling update
// to a new revision; other changes apply on the next pass.
func (s *Service) UpdateDeployment(ctx context.Context, caller market.Account, ref string, spec market.DeploymentSpec) (market.Deployment, error) {
	const op = "update deployment"
	if err := s.checkSpec(&spec); err != nil {
		return market.Deployment{}, market.Errorf(op, market.Invalid, "%w", err)
	}
	var d market.Deployment
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if d, err = ownDeployment(ctx, tx, caller, ref, op); err != nil {
			return err
		}
		if d.Deleted {
			return market.Errorf(op, market.Conflict, "deployment %s is being deleted", d.Spec.Name)
		}
		if spec.Name != d.Spec.Name {
			return market.Errorf(op, market.Invalid, "a deployment cannot be renamed (%s to %s); create a new one", d.Spec.Name, spec.Name)
		}
		if spec.Spot != d.Spec.Spot {
			// Its replicas are bids or rentals; the pass does not convert one into the other.
			return market.Errorf(op, market.Invalid, "deployment %s cannot switch between spot and on-demand; create a new one", d.Spec.Name)
		}
		if err := s.checkPool(ctx, tx, spec, op); err != nil {
			return err
		}
		now := s.now()
		var msgs []string
		if !sameWorkload(d.Spec, spec) {
			d.Revision++
			msgs = append(msgs, fmt.Sprintf("rolling update to revision %d (new %s)", d.Revision, strings.Join(workloadChanges(d.Spec, spec), ", ")))
		}
		if spec.MinReplicas != d.Spec.MinReplicas || spec.MaxReplicas != d.Spec.MaxReplicas {
			msgs = append(msgs, fmt.Sprintf("replicas %d..%d", spec.MinReplicas, spec.MaxReplicas))
		}
		if len(msgs) == 0 {
			msgs = append(msgs, "spec changed")
		}
		d.Spec, d.UpdatedAt = spec, now
		d.Desired = min(max(d.Desired, spec.MinReplicas), spec.MaxReplicas)
		if err := tx.UpdateDeployment(ctx, d); err != nil {
			return err
		}
		return tx.AppendDeploymentHistory(ctx, []market.DeploymentHistory{{Deployment: d.ID, At: now, Kind: "update", Message: strings.Join(msgs, "; ")}})
	})
	return d, err
}

// ApplyDeployment creates the caller's deployment named in spec, or
// updates it when it exists.
func (s *Service) ApplyDeployment(ctx context.Context, caller market.Account, spec market.DeploymentSpec) (market.Deployment, bool, error) {
	var exists bool
	err := s.store.Tx(ctx, func(tx Tx) error {
		_, err := tx.DeploymentByName(ctx, caller.ID, strings.TrimSpace(spec.Name))
		exists = err == nil
		if market.IsKind(err, market.NotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return market.Deployment{}, false, err
	}
	if exists {
		d, err := s.UpdateDeployment(ctx, caller, strings.TrimSpace(spec.Name), spec)
		return d, false, err
	}
	d, err := s.CreateDeployment(ctx, caller, spec)
	return d, true, err
}

// ScaleDeployment changes a deployment's replica bounds or its current
// replica count.
func (s *Service) ScaleDeployment(ctx context.Context, caller market.Account, ref string, req market.ScaleRequest) (market.Deployment, error) {
	const op = "scale deployment"
	var d market.Deployment
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if d, err = ownDeployment(ctx, tx, caller, ref, op); err != nil {
			return err
		}
		if d.Deleted {
			return market.Errorf(op, market.Conflict, "deployment %s is being deleted", d.Spec.Name)
		}
		spec := d.Spec
		if req.MinReplicas != nil {
			spec.MinReplicas = *req.MinReplicas
		}
		if req.MaxReplicas != nil {
			spec.MaxReplicas = *req.MaxReplicas
		}
		if req.Replicas != nil && req.MinReplicas == nil && req.MaxReplicas == nil && spec.Scale == nil {
			// Without a scale rule, a replica count fixes both bounds.
			spec.MinReplicas, spec.MaxReplicas = *req.Replicas, *req.Replicas
		}
		if err := s.checkSpec(&spec); err != nil {
			return market.Errorf(op, market.Invalid, "%w", err)
		}
		want := min(max(d.Desired, spec.MinReplicas), spec.MaxReplicas)
		if req.Replicas != nil {
			if *req.Replicas < spec.MinReplicas || *req.Replicas > spec.MaxReplicas {
				return market.Errorf(op, market.Invalid, "%d replicas is outside the bounds %d..%d; change them with --min and --max", *req.Replicas, spec.MinReplicas, spec.MaxReplicas)
			}
			want = *req.Replicas
		}
		now := s.now()
		msg := fmt.Sprintf("scaled by %s: replicas %d..%d, desired %d -> %d", caller.Email, spec.MinReplicas, spec.MaxReplicas, d.Desired, want)
		if want != d.Desired {
			d.LastScaleAt, d.LastScaleUp = ptr(now), want > d.Desired
		}
		d.Spec, d.Desired, d.UpdatedAt = spec, want, now
		if err := tx.UpdateDeployment(ctx, d); err != nil {
			return err
		}
		return tx.AppendDeploymentHistory(ctx, []market.DeploymentHistory{{Deployment: d.ID, At: now, Kind: "scale", Message: msg}})
	})
	return d, err
}

// DeleteDeployment stops a deployment's replicas; the deployment is gone
// once they have stopped.
func (s *Service) DeleteDeployment(ctx context.Context, caller market.Account, ref string) (market.Deployment, error) {
	const op = "delete deployment"
	var d market.Deployment
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if d, err = ownDeployment(ctx, tx, caller, ref, op); err != nil || d.Deleted {
			return err
		}
		now := s.now()
		d.Deleted, d.UpdatedAt = true, now
		if err := tx.UpdateDeployment(ctx, d); err != nil {
			return err
		}
		return tx.AppendDeploymentHistory(ctx, []market.DeploymentHistory{{Deployment: d.ID, At: now, Kind: "delete", Message: "deleted; stopping every replica"}})
	})
	return d, err
}

// Pools.

var poolName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// PutPool creates or changes a pool (admin only). The shares of all pools
// may add up to at most 100%. A pool without Reward pays none (setting a
// pool without it drops its reward).
func (s *Service) PutPool(ctx context.Context, caller market.Account, p market.Pool) (market.Pool, error) {
	const op = "set pool"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return market.Pool{}, err
	}
	p.Name = strings.TrimSpace(p.Name)
	switch {
	case !poolName.MatchString(p.Name):
		return market.Pool{}, market.Errorf(op, market.Invalid, "pool name %q must be 1 to 32 lower-case letters, digits and -", p.Name)
	case p.ShareBP < 0 || p.ShareBP > 10000:
		return market.Pool{}, market.Errorf(op, market.Invalid, "share must be between 0%% and 100%%, got %s", fmtShare(p.ShareBP))
	case len(p.Description) > 200:
		return market.Pool{}, market.Errorf(op, market.Invalid, "description is longer than 200 characters")
	}
	err := s.store.Tx(ctx, func(tx Tx) error {
		ps, err := tx.Pools(ctx)
		if err != nil {
			return err
		}
		total := p.ShareBP
		p.CreatedAt = s.now()
		var old *market.PoolReward
		for _, o := range ps {
			if o.Name == p.Name {
				p.CreatedAt, old = o.CreatedAt, o.Reward
				continue
			}
			total += o.ShareBP
		}
		if p.Reward != nil {
			if err := s.checkPoolReward(ctx, tx, op, p.Reward, old); err != nil {
				return err
			}
		}
		if total > 10000 {
			return market.Errorf(op, market.Invalid, "the pools' shares would add up to %s; lower this or another pool's share to stay within 100%%", fmtShare(total))
		}
		return tx.PutPool(ctx, p)
	})
	return p, err
}

func fmtShare(bp int64) string {
	if bp%100 == 0 {
		return fmt.Sprintf("%d%%", bp/100)
	}
	return fmt.Sprintf("%d.%02d%%", bp/100, bp%100)
}

// DeletePool removes a pool without machines (admin only).
func (s *Service) DeletePool(ctx context.Context, caller market.Account, name string) error {
	if err := require(caller, "delete pool", market.RoleAdmin); err != nil {
		return err
	}
	return s.store.Tx(ctx, func(tx Tx) error { return tx.DeletePool(ctx, name) })
}

// AssignPool assigns machines to a pool, or takes them out of pools with
// pool "" (admin only).
func (s *Service) AssignPool(ctx context.Context, caller market.Account, pool string, machines []market.MachineID) error {
	const op = "assign machines to pool"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return err
	}
	if len(machines) == 0 {
		return market.Errorf(op, market.Invalid, "name at least one machine")
	}
	return s.store.Tx(ctx, func(tx Tx) error {
		for _, m := range machines {
			if err := tx.SetMachinePool(ctx, m, pool); err != nil {
				return err
			}
		}
		return tx.AppendEvent(ctx, market.Event{At: s.now(), Type: "pool.assigned", Account: caller.ID,
			Message: fmt.Sprintf("machines %v assigned to pool %q", machines, pool)})
	})
}

// Pools lists the pools with their quota and use (admin only).
func (s *Service) Pools(ctx context.Context, caller market.Account) ([]market.PoolUsage, error) {
	if err := require(caller, "list pools", market.RoleAdmin); err != nil {
		return nil, err
	}
	var ps []market.Pool
	var assigned map[market.MachineID]string
	var ms []market.Machine
	var ds []market.Deployment
	var reps []market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if ps, err = tx.Pools(ctx); err != nil {
			return err
		}
		if assigned, err = tx.MachinePools(ctx); err != nil {
			return err
		}
		if ms, err = tx.Machines(ctx, MachineFilter{}); err != nil {
			return err
		}
		if ds, err = tx.Deployments(ctx, DeploymentFilter{}); err != nil {
			return err
		}
		reps, err = tx.Replicas(ctx, ReplicaFilter{ActiveOnly: true})
		return err
	})
	if err != nil {
		return nil, err
	}
	total := 0
	machines := map[string]int{}
	for _, m := range ms {
		if p := assigned[m.ID]; p != "" {
			machines[p]++
			if m.Online {
				total += len(m.GPUs)
			}
		}
	}
	poolOf := map[market.DeploymentID]string{}
	deps := map[string]int{}
	for _, d := range ds {
		poolOf[d.ID] = d.Spec.Pool
		deps[d.Spec.Pool]++
	}
	used := map[string]int{}
	for _, r := range reps {
		if r.State != market.InstanceStopping {
			used[poolOf[r.Deployment]] += len(r.GPUs)
		}
	}
	out := make([]market.PoolUsage, len(ps))
	for i, p := range ps {
		u := market.PoolUsage{Pool: p, Machines: machines[p.Name], QuotaGPUs: int(int64(total) * p.ShareBP / 10000),
			UsedGPUs: used[p.Name], Deployments: deps[p.Name]}
		u.BorrowedGPU = max(u.UsedGPUs-u.QuotaGPUs, 0)
		out[i] = u
	}
	return out, nil
}

// The leader's pass.

// tickDeployments runs one reconcile pass and applies its plan. Errors
// applying one decision are recorded in the deployment's history and do
// not stop the others.
func (s *Service) tickDeployments(ctx context.Context) error {
	now := s.now()
	start := time.Now()
	var ds []market.Deployment
	var reps []ReplicaState
	var failed []market.Instance
	var ms []market.Machine
	var pools []market.Pool
	var assigned map[market.MachineID]string
	var stored map[market.InstanceID]ReplicaSignal
	var bids []deploy.Bid
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if ds, err = tx.Deployments(ctx, DeploymentFilter{}); err != nil || len(ds) == 0 {
			return err
		}
		if reps, err = tx.ActiveReplicas(ctx); err != nil {
			return err
		}
		if stored, err = tx.ReplicaSignals(ctx, now.Add(-failureWindow)); err != nil {
			return err
		}
		if failed, err = tx.Replicas(ctx, ReplicaFilter{EndedAfter: now.Add(-failureWindow)}); err != nil {
			return err
		}
		if pools, err = tx.Pools(ctx); err != nil {
			return err
		}
		if bids, err = s.replicaBids(ctx, tx, ds); err != nil {
			return err
		}
		assigned, err = tx.MachinePools(ctx)
		return err
	})
	if err != nil || len(ds) == 0 {
		return err
	}
	// The machines come from the offer index, which follows the store
	// (reindex, follow.go), rather than from the store: decoding every
	// machine's hardware was the largest part of this read. The GPUs in
	// use come from the store, every GPU held (spot ones too), as do the
	// heartbeats other coordinators vouched for.
	ms = make([]market.Machine, 0, s.index.Len())
	s.index.Each(func(m *market.Machine) { ms = append(ms, *m) }) // GPUs are shared, read only
	slices.SortFunc(ms, func(a, b market.Machine) int { return strings.Compare(string(a.ID), string(b.ID)) })
	if err := s.fillAll(ctx, ms); err != nil {
		return err
	}
	in := deploy.Input{Now: now, Deployments: ds, Pools: pools, HoldUntil: holdUntil(failed), Bids: bids}
	bidOf := map[market.InstanceID]market.BidID{}
	for _, b := range bids {
		if b.Instance != "" {
			bidOf[b.Instance] = b.ID
		}
	}
	if s.cfg.Ranking != nil {
		in.Latency = s.cfg.Ranking.Latency
	} else {
		in.Latency = match.DefaultRanking().Latency
	}
	in.Machines = make([]deploy.Machine, len(ms))
	for i, m := range ms {
		in.Machines[i] = deploy.Machine{Machine: m, Facts: s.index.Facts(m.ID), Pool: assigned[m.ID]}
	}
	in.Replicas = make([]deploy.Replica, 0, len(reps))
	checked := map[market.DeploymentID]bool{}
	for _, d := range ds {
		checked[d.ID] = d.Spec.Health != nil
	}
	active := map[market.InstanceID]bool{}
	for _, r := range reps {
		active[r.Instance] = true
		// Signals reported to other coordinators, overlaid with the
		// fresher ones reported here.
		sig := stored[r.Instance]
		if l, ok := s.signals.local(r.Instance, s.metrics); ok {
			sig.merge(l)
		}
		// Ready: running, and passing the health check when there is one.
		healthy := sig.Healthy != nil && *sig.Healthy
		ready := r.State == market.InstanceRunning && (!checked[r.Deployment] || healthy)
		dr := deploy.Replica{Instance: r.Instance, Deployment: r.Deployment, Machine: r.Machine, GPUs: r.GPUs, State: r.State,
			Revision: r.Revision, Ready: ready, CreatedAt: r.CreatedAt, Util: sig.Util, Bid: bidOf[r.Instance]}
		if sig.Queue != nil && !sig.QueueAt.Before(now.Add(-failureWindow)) {
			dr.Queue = sig.Queue
		}
		in.Replicas = append(in.Replicas, dr)
	}
	s.signals.keep(active)
	read := time.Now()
	plan := deploy.Reconcile(in, deploy.Config{MoveBidAfter: 3 * s.cfg.SpotInterval})
	decided := time.Now()
	err = s.applyPlan(ctx, ds, reps, plan, now)
	s.log.Debug("deployments pass", "deployments", len(ds), "replicas", len(reps), "machines", len(ms),
		"placed", len(plan.Places), "stopped", len(plan.Stops), "scaled", len(plan.Scales),
		"read_ms", read.Sub(start).Milliseconds(), "reconcile_ms", decided.Sub(read).Milliseconds(), "apply_ms", time.Since(decided).Milliseconds())
	return err
}

// replicaBids reads the open bids of the spot deployments among ds, each
// with the time it was placed or last lost its instance.
func (s *Service) replicaBids(ctx context.Context, tx Tx, ds []market.Deployment) ([]deploy.Bid, error) {
	var out []deploy.Bid
	for _, d := range ds {
		if !d.Spec.Spot {
			continue
		}
		bs, err := deploymentBids(ctx, tx, d.Owner, d.ID)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			rev, _ := strconv.ParseInt(b.Env[market.DeploymentRevisionEnv], 10, 64)
			db := deploy.Bid{ID: b.ID, Deployment: d.ID, Machine: b.Machine, State: b.State, Instance: b.Instance, Revision: rev, Since: b.CreatedAt}
			if b.Instance != "" {
				inst, err := tx.Instance(ctx, b.Instance)
				if err != nil && !market.IsKind(err, market.NotFound) {
					return nil, err
				}
				if inst.EndedAt != nil && inst.EndedAt.After(db.Since) {
					db.Since = *inst.EndedAt
				}
			}
			out = append(out, db)
		}
	}
	return out, nil
}

// holdUntil computes the crash-loop backoff: a deployment whose replicas
// failed on their own (not because their host was lost, not stopped by
// the coordinator) n times in the failure window waits 10 s x 2^(n-1),
// at most 5 minutes, after the last failure.
func holdUntil(failed []market.Instance) map[market.DeploymentID]time.Time {
	n := map[market.DeploymentID]int{}
	last := map[market.DeploymentID]time.Time{}
	for _, i := range failed {
		own := (i.State == market.InstanceFailed && i.Reason != "host lost contact") ||
			(i.State == market.InstanceStopped && strings.HasPrefix(i.Reason, "exited"))
		if !own || i.EndedAt == nil {
			continue
		}
		n[i.Deployment]++
		if i.EndedAt.After(last[i.Deployment]) {
			last[i.Deployment] = *i.EndedAt
		}
	}
	out := map[market.DeploymentID]time.Time{}
	for d, k := range n {
		wait := 10 * time.Second << min(k-1, 5)
		out[d] = last[d].Add(min(wait, 5*time.Minute))
	}
	return out
}

// applyPlan carries out a reconcile plan and records it.
func (s *Service) applyPlan(ctx context.Context, ds []market.Deployment, reps []ReplicaState, plan deploy.Plan, now time.Time) error {
	byID := map[market.DeploymentID]*market.Deployment{}
	for i := range ds {
		byID[ds[i].ID] = &ds[i]
	}
	var hist []market.DeploymentHistory
	note := func(d market.DeploymentID, kind string, inst market.InstanceID, m market.MachineID, msg string) {
		hist = append(hist, market.DeploymentHistory{Deployment: d, At: now, Kind: kind, Instance: inst, Machine: m, Message: msg})
	}
	changed := map[market.DeploymentID]bool{}
	for _, sc := range plan.Scales {
		d := byID[sc.Deployment]
		d.Desired, d.LastScaleAt, d.LastScaleUp = sc.To, ptr(now), sc.Up
		changed[d.ID] = true
		note(d.ID, "scale", "", "", sc.Reason)
	}
	for _, st := range plan.Stops {
		kind := "stop"
		if st.Preempt {
			kind = "preempt"
		}
		if err := s.stopOrCancel(ctx, byID[st.Deployment], st); err != nil {
			if errors.Is(err, errNotLeader) {
				return err
			}
			note(st.Deployment, "error", st.Instance, st.Machine, fmt.Sprintf("could not stop the replica (%s): %v", st.Reason, err))
			continue
		}
		note(st.Deployment, kind, st.Instance, st.Machine, st.Reason)
	}
	for _, r := range s.placeAll(ctx, byID, plan.Places) {
		switch {
		case errors.Is(r.err, errNotLeader):
			return r.err
		case r.err != nil:
			st := plan.Status[r.pl.Deployment]
			st.Pending++
			st.Replicas--
			st.Why = fmt.Sprintf("could not start a replica on %s: %v", r.pl.Machine, r.err)
			plan.Status[r.pl.Deployment] = st
		case r.pl.Spot:
			note(r.pl.Deployment, "bid", "", r.pl.Machine, fmt.Sprintf("%s; bid %s at revision %d", r.pl.Reason, r.bid, r.pl.Revision))
		default:
			note(r.pl.Deployment, "place", r.inst.ID, r.inst.Machine, fmt.Sprintf("%s; GPUs %v at revision %d", r.pl.Reason, r.inst.GPUs, r.pl.Revision))
		}
	}
	activeOf := map[market.DeploymentID]int{}
	for _, r := range reps {
		activeOf[r.Deployment]++
	}
	// Only deployments whose status or count changed are written.
	var write, gone []*market.Deployment
	for i := range ds {
		d := &ds[i]
		st := plan.Status[d.ID]
		if d.Deleted {
			if activeOf[d.ID] == 0 {
				gone = append(gone, d)
			}
			continue
		}
		old := d.Status
		old.At = st.At
		if old == st && !changed[d.ID] {
			continue
		}
		if st.Why != "" && st.Why != d.Status.Why && st.Pending > 0 {
			note(d.ID, "pending", "", "", st.Why)
		}
		write = append(write, d)
	}
	return s.store.Tx(ctx, func(tx Tx) error {
		for _, d := range gone {
			if err := tx.DeleteDeployment(ctx, d.ID); err != nil && !market.IsKind(err, market.NotFound) {
				return err
			}
		}
		for _, d := range write {
			st := plan.Status[d.ID]
			cur, err := tx.Deployment(ctx, d.ID)
			if market.IsKind(err, market.NotFound) {
				continue
			}
			if err != nil {
				return err
			}
			// The API may have changed the spec meanwhile: write only what
			// the pass owns.
			cur.Status = st
			if changed[d.ID] {
				cur.Desired = min(max(d.Desired, cur.Spec.MinReplicas), cur.Spec.MaxReplicas)
				cur.LastScaleAt, cur.LastScaleUp = d.LastScaleAt, d.LastScaleUp
			}
			if err := tx.UpdateDeployment(ctx, cur); err != nil {
				return err
			}
		}
		return tx.AppendDeploymentHistory(ctx, hist)
	})
}

// placeBatch is how many replicas one transaction creates: enough that
// the commit and the leader fence cost little per replica, few enough
// that the API's writes do not wait long behind the batch.
const placeBatch = 128

type placeResult struct {
	pl   deploy.Place
	inst market.Instance
	bid  market.BidID // spot replicas
	err  error
}

// placeAll creates the plan's replicas: on-demand ones in batches of
// placeBatch per transaction, each create a step that is undone alone
// when refused (Tx.Atomic), spot ones one bid at a time. A deployment
// stops at its first refusal (one is enough to say why it waits).
// Results come in plan order, less the placements skipped after a
// refusal.
func (s *Service) placeAll(ctx context.Context, byID map[market.DeploymentID]*market.Deployment, places []deploy.Place) []placeResult {
	results := make([]*placeResult, len(places))
	failed := map[market.DeploymentID]bool{}
	owners := map[market.AccountID]market.Account{}
	owner := func(id market.AccountID) (market.Account, error) {
		if a, ok := owners[id]; ok {
			return a, nil
		}
		var a market.Account
		err := s.store.Tx(ctx, func(tx Tx) error {
			var err error
			a, err = tx.Account(ctx, id)
			return err
		})
		if err == nil {
			owners[id] = a
		}
		return a, err
	}
	var batch []replicaCreate
	flush := func() {
		if len(batch) == 0 {
			return
		}
		done := s.createReplicas(ctx, byID, places, batch, failed)
		for k, c := range batch {
			if done[k] != nil {
				results[c.i] = done[k]
			}
		}
		batch = batch[:0]
	}
	for i, pl := range places {
		if failed[pl.Deployment] {
			continue
		}
		d := byID[pl.Deployment]
		r := &placeResult{pl: pl}
		a, err := owner(d.Owner)
		switch {
		case err != nil:
			r.err = err
		case pl.Spot:
			r.bid, r.err = s.placeBid(ctx, d, pl, a)
		default:
			req := replicaRequest(d, pl)
			var inst market.Instance
			if inst, r.err = s.newInstance(a, req); r.err == nil {
				batch = append(batch, replicaCreate{i: i, req: req, inst: inst, as: a})
				if len(batch) == placeBatch {
					flush()
				}
				continue
			}
		}
		results[i] = r
		if r.err != nil {
			failed[pl.Deployment] = true
		}
	}
	flush()
	out := make([]placeResult, 0, len(places))
	for _, r := range results {
		if r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// replicaCreate is one create of a batch: the place it carries out (an
// index into the plan's places), its request, the instance it makes and
// the deployment owner's account it makes it as.
type replicaCreate struct {
	i    int
	req  market.CreateInstanceRequest
	inst market.Instance
	as   market.Account
}

// createReplicas creates the replicas of batch in one transaction and returns
// the result of each, nil for those skipped because their deployment
// failed first; it adds to failed the deployments refused. When the
// transaction itself fails, the first create of each deployment in the
// batch carries its error.
func (s *Service) createReplicas(ctx context.Context, byID map[market.DeploymentID]*market.Deployment, places []deploy.Place,
	batch []replicaCreate, failed map[market.DeploymentID]bool) []*placeResult {
	var out []*placeResult
	var refused map[market.DeploymentID]bool
	err := s.store.Tx(ctx, func(tx Tx) error {
		// A retried transaction starts over.
		out, refused = make([]*placeResult, len(batch)), map[market.DeploymentID]bool{}
		for k, c := range batch {
			pl := places[c.i]
			if failed[pl.Deployment] || refused[pl.Deployment] {
				continue
			}
			d := byID[pl.Deployment]
			r := &placeResult{pl: pl, inst: c.inst}
			out[k] = r
			rctx := forDeployment(ctx, d.ID, pl.Revision, d.Spec.Health)
			r.err = tx.Atomic(ctx, func() error { return s.createIn(rctx, tx, c.as, c.req, &r.inst) })
			if storeFailure(r.err) { // batch.go
				return r.err // the batch is lost
			}
			if r.err != nil {
				refused[pl.Deployment] = true
			}
		}
		return nil
	})
	if err != nil {
		out = make([]*placeResult, len(batch))
		for k, c := range batch {
			if d := places[c.i].Deployment; !failed[d] {
				out[k] = &placeResult{pl: places[c.i], err: err}
				failed[d] = true // its first failure: the rest of it is skipped
			}
		}
		return out
	}
	var touched []market.MachineID
	for k, r := range out {
		if r != nil && r.err == nil {
			touched = append(touched, r.inst.Machine)
			s.machineChanged(r.inst.Machine)
		}
		if r != nil && r.err != nil {
			failed[places[batch[k].i].Deployment] = true
		}
	}
	s.reindex(ctx, touched...)
	return out
}

// replicaRequest is the instance create of one replica of d.
func replicaRequest(d *market.Deployment, pl deploy.Place) market.CreateInstanceRequest {
	req := market.CreateInstanceRequest{Machine: pl.Machine, GPUs: d.Spec.GPUsPerReplica, Image: d.Spec.Image,
		Command: d.Spec.Command, Env: d.Spec.Env, GraceSeconds: d.Spec.GraceSeconds}
	if h := d.Spec.Health; h != nil && h.HTTP() && d.Spec.Image != "" {
		req.Ports = []string{fmt.Sprintf("%d/tcp", h.Port)} // the agent checks it through the published port
	}
	return req
}

// placeBid places a spot replica's bid: the deployment's price per
// GPU-day, at its power limit or the machine's maximum.
func (s *Service) placeBid(ctx context.Context, d *market.Deployment, pl deploy.Place, owner market.Account) (market.BidID, error) {
	power := d.Spec.PowerLimitW
	if power == 0 {
		err := s.store.Tx(ctx, func(tx Tx) error {
			m, err := tx.Machine(ctx, pl.Machine)
			_, power = powerRange(m)
			return err
		})
		if err != nil {
			return "", err
		}
	}
	req := market.CreateBidRequest{Machine: pl.Machine, GPUs: d.Spec.GPUsPerReplica, PricePerGPUDay: d.Spec.MaxPricePerDay,
		PowerLimitW: power, Image: d.Spec.Image, Command: d.Spec.Command, Env: d.Spec.Env, NoticeSeconds: d.Spec.GraceSeconds}
	b, err := s.CreateBid(forDeployment(ctx, d.ID, pl.Revision, d.Spec.Health), owner, req)
	return b.ID, err
}

// stopOrCancel carries out a reconciler's stop: the instance stops and,
// for a spot replica, its bid is cancelled so that it does not win again.
func (s *Service) stopOrCancel(ctx context.Context, d *market.Deployment, st deploy.Stop) error {
	if st.Instance != "" {
		if err := s.stopReplica(ctx, st.Instance, "deployment: "+st.Reason); err != nil {
			return err
		}
	}
	if st.Bid == "" || d == nil {
		return nil
	}
	_, err := s.CancelBid(ctx, market.Account{ID: d.Owner}, st.Bid)
	return err
}

// stopReplica stops an instance with the reconciler's reason, as a stop by
// its renter would (billing ends now; the agent stops it on its next poll).
func (s *Service) stopReplica(ctx context.Context, id market.InstanceID, reason string) error {
	var inst market.Instance
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		if inst, err = tx.Instance(ctx, id); err != nil {
			return err
		}
		if inst.State.Terminal() || inst.State == market.InstanceStopping {
			return nil
		}
		now := s.now()
		s.beginStop(&inst, now, reason)
		if err := s.settle(ctx, tx, &inst, now); err != nil {
			return err
		}
		if err := tx.UpdateInstance(ctx, inst); err != nil {
			return err
		}
		return tx.AppendEvent(ctx, market.Event{At: now, Type: "instance.stopping", Account: inst.Renter, Machine: inst.Machine, Instance: inst.ID, Message: reason})
	})
	if err == nil {
		s.machineChanged(inst.Machine)
	}
	return err
}
