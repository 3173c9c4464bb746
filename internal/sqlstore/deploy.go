package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Deployments, their history, pools and machine pool assignments
// (migration 0006).

const (
	deploymentColumns   = `id, owner_id, name, spec, revision, desired, last_scale_at, last_scale_up, status, deleted, created_at, updated_at`
	qInsertDeployment   = `INSERT INTO deployments (` + deploymentColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`
	qDeploymentConflict = `SELECT id FROM deployments WHERE id = $1 OR (owner_id = $2 AND name = $3) LIMIT 1`
	qUpdateDeployment   = `UPDATE deployments SET owner_id = $2, name = $3, spec = $4, revision = $5, desired = $6, last_scale_at = $7, last_scale_up = $8, status = $9, deleted = $10, created_at = $11, updated_at = $12 WHERE id = $1`
	qDeleteDeployment   = `DELETE FROM deployments WHERE id = $1`
	qDeleteHistory      = `DELETE FROM deployment_history WHERE deployment_id = $1`
	qDeployment         = `SELECT ` + deploymentColumns + ` FROM deployments WHERE id = $1`
	qDeploymentByName   = `SELECT ` + deploymentColumns + ` FROM deployments WHERE owner_id = $1 AND name = $2`
	qDeployments        = `SELECT ` + deploymentColumns + ` FROM deployments` // + filter + order
	qDeploymentsOrder   = ` ORDER BY created_at, id`

	qSetInstanceDeployment = `UPDATE instances SET deployment_id = $2, deployment_revision = $3 WHERE id = $1`
	qReplicas              = `SELECT ` + instanceColumns + `, deployment_id, deployment_revision FROM instances` // + filter + order
	qActiveReplicas        = `SELECT id, deployment_id, deployment_revision, machine_id, gpus, state, created_at FROM instances WHERE active = $1 AND deployment_id <> '' ORDER BY created_at, id`

	historyColumns   = `seq, deployment_id, at, kind, instance_id, machine_id, message`
	qInsertHistory   = `INSERT INTO deployment_history (` + historyColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7)`
	qHistory         = `SELECT ` + historyColumns + ` FROM deployment_history WHERE deployment_id = $1 ORDER BY seq DESC LIMIT $2`
	counterHistory   = "deployment_history"
	poolColumns      = `name, share_bp, description, created_at, open_to_hosts, reward_asset, reward_per_gpu_hour, reward_from, rewards_paid, rewards_stopped`
	qInsertPool      = `INSERT INTO pools (name, share_bp, description, created_at, open_to_hosts, reward_asset, reward_per_gpu_hour, reward_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO UPDATE SET share_bp = $2, description = $3, open_to_hosts = $5, reward_asset = $6, reward_per_gpu_hour = $7, reward_from = $8`
	qMachinePool     = `SELECT pool FROM machine_pools WHERE machine_id = $1`
	qPool            = `SELECT ` + poolColumns + ` FROM pools WHERE name = $1`
	qPoolExists      = `SELECT name FROM pools WHERE name = $1`
	qPools           = `SELECT ` + poolColumns + ` FROM pools ORDER BY name`
	qPoolInUse       = `SELECT machine_id FROM machine_pools WHERE pool = $1 LIMIT 1`
	qDeletePool      = `DELETE FROM pools WHERE name = $1`
	qSetMachinePool  = `INSERT INTO machine_pools (machine_id, pool) VALUES ($1, $2) ON CONFLICT (machine_id) DO UPDATE SET pool = $2`
	qDropMachinePool = `DELETE FROM machine_pools WHERE machine_id = $1`
	qMachinePools    = `SELECT machine_id, pool FROM machine_pools ORDER BY machine_id`
)

func deploymentArgs(d market.Deployment) ([]any, error) {
	spec, err := toJSON(d.Spec)
	if err != nil {
		return nil, err
	}
	status, err := toJSON(d.Status)
	if err != nil {
		return nil, err
	}
	return []any{d.ID, d.Owner, d.Spec.Name, spec, d.Revision, d.Desired, nullMicros(d.LastScaleAt), d.LastScaleUp,
		status, d.Deleted, micros(d.CreatedAt), micros(d.UpdatedAt)}, nil
}

func scanDeployment(s scanner) (market.Deployment, error) {
	var d market.Deployment
	var name, spec, status string
	var scaleAt sql.NullInt64
	var created, updated int64
	if err := s.Scan(&d.ID, &d.Owner, &name, &spec, &d.Revision, &d.Desired, &scaleAt, &d.LastScaleUp, &status, &d.Deleted, &created, &updated); err != nil {
		return d, err
	}
	if err := json.Unmarshal([]byte(spec), &d.Spec); err != nil {
		return d, fmt.Errorf("decode spec of deployment %s: %w", d.ID, err)
	}
	if err := json.Unmarshal([]byte(status), &d.Status); err != nil {
		return d, fmt.Errorf("decode status of deployment %s: %w", d.ID, err)
	}
	d.Spec.Name = name
	d.LastScaleAt = fromNullMicros(scaleAt)
	d.CreatedAt, d.UpdatedAt = fromMicros(created), fromMicros(updated)
	return d, nil
}

func (t *sqlTx) InsertDeployment(ctx context.Context, d market.Deployment) error {
	const op = "insert deployment"
	args, err := deploymentArgs(d)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, d.ID, err)
	}
	var id string
	switch err := t.tx.QueryRowContext(ctx, qDeploymentConflict, d.ID, d.Owner, d.Spec.Name).Scan(&id); {
	case err == nil:
		return market.Errorf(op, market.Conflict, "you already have a deployment named %q (%s); choose another name or use deployment update", d.Spec.Name, id)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s %s: %w", op, d.ID, err)
	}
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertDeployment, args...)
		switch t.classify(err) {
		case UniqueViolation:
			return market.Errorf(op, market.Conflict, "you already have a deployment named %q; choose another name", d.Spec.Name)
		case ForeignKeyViolation:
			return market.Errorf(op, market.NotFound, "account %s not found", d.Owner)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, d.ID, err)
		}
		return nil
	})
}

func (t *sqlTx) UpdateDeployment(ctx context.Context, d market.Deployment) error {
	const op = "update deployment"
	args, err := deploymentArgs(d)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, d.ID, err)
	}
	var res sql.Result
	err = t.atomic(ctx, func() error {
		var err error
		res, err = t.tx.ExecContext(ctx, qUpdateDeployment, args...)
		if t.classify(err) == UniqueViolation {
			return market.Errorf(op, market.Conflict, "you already have a deployment named %q; choose another name", d.Spec.Name)
		}
		return err
	})
	if err != nil {
		if market.IsKind(err, market.Conflict) {
			return err
		}
		return fmt.Errorf("%s %s: %w", op, d.ID, err)
	}
	return mustAffect(res, market.Errorf(op, market.NotFound, "deployment %s not found", d.ID))
}

func (t *sqlTx) DeleteDeployment(ctx context.Context, id market.DeploymentID) error {
	const op = "delete deployment"
	if _, err := t.tx.ExecContext(ctx, qDeleteHistory, id); err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	res, err := t.tx.ExecContext(ctx, qDeleteDeployment, id)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	return mustAffect(res, market.Errorf(op, market.NotFound, "deployment %s not found", id))
}

func (t *sqlTx) Deployment(ctx context.Context, id market.DeploymentID) (market.Deployment, error) {
	d, err := scanDeployment(t.tx.QueryRowContext(ctx, qDeployment, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, market.Errorf("get deployment", market.NotFound, "deployment %s not found", id)
	}
	if err != nil {
		return d, fmt.Errorf("get deployment %s: %w", id, err)
	}
	return d, nil
}

func (t *sqlTx) DeploymentByName(ctx context.Context, owner market.AccountID, name string) (market.Deployment, error) {
	d, err := scanDeployment(t.tx.QueryRowContext(ctx, qDeploymentByName, owner, name))
	if errors.Is(err, sql.ErrNoRows) {
		return d, market.Errorf("get deployment", market.NotFound, "deployment %q not found among your deployments (gpumarket deployment list)", name)
	}
	if err != nil {
		return d, fmt.Errorf("get deployment %q: %w", name, err)
	}
	return d, nil
}

func (t *sqlTx) Deployments(ctx context.Context, f coord.DeploymentFilter) ([]market.Deployment, error) {
	var w where
	if f.Owner != "" {
		w.add("owner_id = ?", f.Owner)
	}
	rows, err := t.tx.QueryContext(ctx, qDeployments+w.sql()+qDeploymentsOrder, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	ds, err := collect(rows, scanDeployment)
	if err != nil || f.Pool == "" {
		return ds, err
	}
	out := ds[:0]
	for _, d := range ds { // the pool lives in the spec's JSON
		if d.Spec.Pool == f.Pool {
			out = append(out, d)
		}
	}
	return out, nil
}

func (t *sqlTx) SetInstanceDeployment(ctx context.Context, id market.InstanceID, d market.DeploymentID, revision int64) error {
	res, err := t.tx.ExecContext(ctx, qSetInstanceDeployment, id, d, revision)
	if err != nil {
		return fmt.Errorf("set deployment of instance %s: %w", id, err)
	}
	return mustAffect(res, market.Errorf("set instance deployment", market.NotFound, "instance %s not found", id))
}

// extraScan appends columns after those scan functions expect.
type extraScan struct {
	s     scanner
	extra []any
}

func (e extraScan) Scan(dest ...any) error { return e.s.Scan(append(dest, e.extra...)...) }

func (t *sqlTx) Replicas(ctx context.Context, f coord.ReplicaFilter) ([]market.Instance, error) {
	var w where
	w.as("deployment_id <> ''") // instances_deployment's condition
	if f.Deployment != "" {
		w.add("deployment_id = ?", f.Deployment)
	}
	if f.ActiveOnly {
		w.add("active = ?", true)
	}
	if !f.EndedAfter.IsZero() {
		w.add("ended_at > ?", micros(f.EndedAfter))
	}
	order := qInstancesOrder
	if !f.EndedAfter.IsZero() {
		// Read through instances_ended: ordered by creation, SQLite's
		// planner scans every instance instead.
		order = ` ORDER BY ended_at, id`
	}
	rows, err := t.tx.QueryContext(ctx, qReplicas+w.sql()+order+fmt.Sprintf(" LIMIT %d", limitOf(f.Limit)), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return collect(rows, func(s scanner) (market.Instance, error) {
		var dep market.DeploymentID
		var rev int64
		i, err := scanInstance(extraScan{s, []any{&dep, &rev}})
		i.Deployment, i.DeploymentRevision = dep, rev
		return i, err
	})
}

func (t *sqlTx) ActiveReplicas(ctx context.Context) ([]coord.ReplicaState, error) {
	rows, err := t.tx.QueryContext(ctx, qActiveReplicas, true)
	if err != nil {
		return nil, fmt.Errorf("list active replicas: %w", err)
	}
	return collect(rows, func(s scanner) (coord.ReplicaState, error) {
		var r coord.ReplicaState
		var gpus string
		var created int64
		if err := s.Scan(&r.Instance, &r.Deployment, &r.Revision, &r.Machine, &gpus, &r.State, &created); err != nil {
			return r, err
		}
		r.CreatedAt = fromMicros(created)
		if err := decodeJSON(gpus, &r.GPUs); err != nil {
			return r, fmt.Errorf("decode GPUs of instance %s: %w", r.Instance, err)
		}
		return r, nil
	})
}

func (t *sqlTx) AppendDeploymentHistory(ctx context.Context, hs []market.DeploymentHistory) error {
	for _, h := range hs {
		if err := t.tx.QueryRowContext(ctx, qNextCounter, counterHistory).Scan(&h.Seq); err != nil {
			return fmt.Errorf("append deployment history: next seq: %w", err)
		}
		if _, err := t.tx.ExecContext(ctx, qInsertHistory, h.Seq, h.Deployment, micros(h.At), h.Kind, h.Instance, h.Machine, h.Message); err != nil {
			return fmt.Errorf("append deployment history of %s: %w", h.Deployment, err)
		}
	}
	return nil
}

func (t *sqlTx) DeploymentHistory(ctx context.Context, id market.DeploymentID, limit int) ([]market.DeploymentHistory, error) {
	rows, err := t.tx.QueryContext(ctx, qHistory, id, limitOf(limit))
	if err != nil {
		return nil, fmt.Errorf("history of deployment %s: %w", id, err)
	}
	return collect(rows, func(s scanner) (market.DeploymentHistory, error) {
		var h market.DeploymentHistory
		var at int64
		err := s.Scan(&h.Seq, &h.Deployment, &at, &h.Kind, &h.Instance, &h.Machine, &h.Message)
		h.At = fromMicros(at)
		return h, err
	})
}

func scanPool(s scanner) (market.Pool, error) {
	var p market.Pool
	var created int64
	var r market.PoolReward
	var asset, from string
	var rate, paid int64
	err := s.Scan(&p.Name, &p.ShareBP, &p.Description, &created, &p.Open, &asset, &rate, &from, &paid, &r.Stopped)
	p.CreatedAt = fromMicros(created)
	if asset != "" {
		r.Asset, r.PerGPUHour, r.From, r.Paid = market.Asset(asset), market.Money(rate), market.AccountID(from), market.Money(paid)
		p.Reward = &r
	}
	return p, err
}

func (t *sqlTx) PutPool(ctx context.Context, p market.Pool) error {
	var r market.PoolReward
	if p.Reward != nil {
		r = *p.Reward
	}
	if _, err := t.tx.ExecContext(ctx, qInsertPool, p.Name, p.ShareBP, p.Description, micros(p.CreatedAt),
		p.Open, string(r.Asset), int64(r.PerGPUHour), string(r.From)); err != nil {
		return fmt.Errorf("put pool %s: %w", p.Name, err)
	}
	return nil
}

func (t *sqlTx) Pool(ctx context.Context, name string) (market.Pool, error) {
	p, err := scanPool(t.tx.QueryRowContext(ctx, qPool, name))
	if errors.Is(err, sql.ErrNoRows) {
		return p, market.Errorf("get pool", market.NotFound, "pool %q not found (gpumarket admin pool list)", name)
	}
	if err != nil {
		return p, fmt.Errorf("get pool %s: %w", name, err)
	}
	return p, nil
}

func (t *sqlTx) Pools(ctx context.Context) ([]market.Pool, error) {
	rows, err := t.tx.QueryContext(ctx, qPools)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	return collect(rows, scanPool)
}

func (t *sqlTx) DeletePool(ctx context.Context, name string) error {
	const op = "delete pool"
	var m string
	switch err := t.tx.QueryRowContext(ctx, qPoolInUse, name).Scan(&m); {
	case err == nil:
		return market.Errorf(op, market.Conflict, "machines are assigned to pool %q (%s among them); unassign them first", name, m)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	res, err := t.tx.ExecContext(ctx, qDeletePool, name)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	return mustAffect(res, market.Errorf(op, market.NotFound, "pool %q not found", name))
}

func (t *sqlTx) SetMachinePool(ctx context.Context, machine market.MachineID, pool string) error {
	const op = "assign machine to pool"
	if ok, err := t.exists(ctx, qMachineExists, machine); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return market.Errorf(op, market.NotFound, "machine %s not found", machine)
	}
	if pool == "" {
		if _, err := t.tx.ExecContext(ctx, qDropMachinePool, machine); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	if ok, err := t.exists(ctx, qPoolExists, pool); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return market.Errorf(op, market.NotFound, "pool %q not found (gpumarket admin pool list)", pool)
	}
	if _, err := t.tx.ExecContext(ctx, qSetMachinePool, machine, pool); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *sqlTx) MachinePools(ctx context.Context) (map[market.MachineID]string, error) {
	rows, err := t.tx.QueryContext(ctx, qMachinePools)
	if err != nil {
		return nil, fmt.Errorf("list machine pools: %w", err)
	}
	type mp struct {
		m market.MachineID
		p string
	}
	list, err := collect(rows, func(s scanner) (mp, error) {
		var v mp
		err := s.Scan(&v.m, &v.p)
		return v, err
	})
	out := make(map[market.MachineID]string, len(list))
	for _, v := range list {
		out[v.m] = v.p
	}
	return out, err
}

func (t *sqlTx) MachinePool(ctx context.Context, machine market.MachineID) (string, error) {
	var p string
	switch err := t.tx.QueryRowContext(ctx, qMachinePool, machine).Scan(&p); {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("pool of machine %s: %w", machine, err)
	}
	return p, nil
}
