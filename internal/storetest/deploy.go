package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func deployment(owner market.AccountID, name string) market.Deployment {
	return market.Deployment{
		ID:    market.DeploymentID(market.NewID(market.DeploymentPrefix)),
		Owner: owner,
		Spec: market.DeploymentSpec{Name: name, Image: "vllm/vllm:0.6", Command: []string{"serve"}, Env: map[string]string{"A": "1"},
			GPUsPerReplica: 2, MinReplicas: 1, MaxReplicas: 4, Query: "gpu_name=RTX_4090", Regions: []string{"eu", "us"},
			MaxLatency: market.Duration(80 * time.Millisecond), Pool: "depin", Priority: 5,
			Scale: &market.ScaleRule{Metric: market.ScaleQueue, Target: 100, UpCooldown: market.Duration(time.Minute)}},
		Revision:  1,
		Desired:   1,
		CreatedAt: t0,
		UpdatedAt: t0,
	}
}

func testDeployments(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 8)
	d := deployment(w.renter, "web")
	d.LastScaleAt, d.LastScaleUp = ptr(at(3)), true
	d.Status = market.DeploymentStatus{Replicas: 1, Ready: 1, Pending: 1, Why: "no machine", At: at(4)}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.InsertDeployment(ctx, d) })

	t.Run("round trip", func(t *testing.T) {
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Deployment(ctx, d.ID)
			if err != nil {
				return err
			}
			diff(t, "Deployment", got, d)
			byName, err := tx.DeploymentByName(ctx, w.renter, "web")
			if err != nil {
				return err
			}
			diff(t, "DeploymentByName", byName, d)
			return nil
		})
	})
	t.Run("name taken", func(t *testing.T) {
		wantKind(t, "InsertDeployment same name", try(t, s, func(ctx context.Context, tx coord.Tx) error {
			return tx.InsertDeployment(ctx, deployment(w.renter, "web"))
		}), market.Conflict)
		// Another owner may use the name.
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			return tx.InsertDeployment(ctx, deployment(w.host, "web"))
		})
	})
	t.Run("update and filters", func(t *testing.T) {
		d2 := d
		d2.Revision, d2.Desired, d2.Deleted = 2, 3, true
		d2.Spec.Image = "vllm/vllm:0.7"
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.UpdateDeployment(ctx, d2) })
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.Deployment(ctx, d.ID)
			diff(t, "updated", got, d2)
			if err != nil {
				return err
			}
			mine, err := tx.Deployments(ctx, coord.DeploymentFilter{Owner: w.renter})
			if len(mine) != 1 || mine[0].ID != d.ID {
				t.Errorf("Deployments(owner) = %v, want just %s", mine, d.ID)
			}
			all, err2 := tx.Deployments(ctx, coord.DeploymentFilter{Pool: "depin"})
			if len(all) != 2 {
				t.Errorf("Deployments(pool) returned %d, want 2", len(all))
			}
			none, err3 := tx.Deployments(ctx, coord.DeploymentFilter{Pool: "leasing"})
			if len(none) != 0 {
				t.Errorf("Deployments(other pool) returned %d, want 0", len(none))
			}
			return firstErr(err, err2, err3)
		})
		wantKind(t, "UpdateDeployment unknown", try(t, s, func(ctx context.Context, tx coord.Tx) error {
			return tx.UpdateDeployment(ctx, deployment(w.renter, "ghost"))
		}), market.NotFound)
	})
	t.Run("replicas and history", func(t *testing.T) {
		a, b, c := instance(w.renter, w.machine, 0), instance(w.renter, w.machine, 1), instance(w.renter, w.machine, 2)
		b.State, b.EndedAt = market.InstanceFailed, ptr(at(5))
		b.CreatedAt = at(1)
		c.CreatedAt = at(2)
		for _, i := range []market.Instance{a, b, c} {
			addInstance(t, s, i)
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			if err := tx.SetInstanceDeployment(ctx, a.ID, d.ID, 1); err != nil {
				return err
			}
			return tx.SetInstanceDeployment(ctx, b.ID, d.ID, 2)
		})
		wantKind(t, "SetInstanceDeployment unknown", try(t, s, func(ctx context.Context, tx coord.Tx) error {
			return tx.SetInstanceDeployment(ctx, "i-ghost", d.ID, 1)
		}), market.NotFound)
		a.Deployment, b.Deployment = d.ID, d.ID
		a.DeploymentRevision, b.DeploymentRevision = 1, 2
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			all, err := tx.Replicas(ctx, coord.ReplicaFilter{})
			diff(t, "Replicas all", all, []market.Instance{a, b})
			active, err2 := tx.Replicas(ctx, coord.ReplicaFilter{Deployment: d.ID, ActiveOnly: true})
			diff(t, "Replicas active", active, []market.Instance{a})
			ended, err3 := tx.Replicas(ctx, coord.ReplicaFilter{EndedAfter: at(4)})
			diff(t, "Replicas ended after", ended, []market.Instance{b})
			late, err4 := tx.Replicas(ctx, coord.ReplicaFilter{EndedAfter: at(5)})
			diff(t, "Replicas ended after the end", len(late), 0)
			states, err5 := tx.ActiveReplicas(ctx)
			diff(t, "ActiveReplicas", states, []coord.ReplicaState{{Instance: a.ID, Deployment: d.ID, Revision: 1, Machine: w.machine,
				GPUs: []int{0}, State: market.InstancePending, CreatedAt: t0}})
			return firstErr(err, err2, err3, err4, err5)
		})
		hs := []market.DeploymentHistory{
			{Deployment: d.ID, At: at(1), Kind: "place", Instance: a.ID, Machine: w.machine, Message: "1 of 1 replicas running"},
			{Deployment: d.ID, At: at(2), Kind: "scale", Message: "queue 500 wants 5"},
		}
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.AppendDeploymentHistory(ctx, hs) })
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			got, err := tx.DeploymentHistory(ctx, d.ID, 10)
			if err != nil {
				return err
			}
			if len(got) != 2 || got[0].Kind != "scale" || got[1].Kind != "place" || got[0].Seq <= got[1].Seq {
				t.Fatalf("DeploymentHistory = %+v, want scale then place, newest first", got)
			}
			hs[0].Seq, hs[1].Seq = got[1].Seq, got[0].Seq
			diff(t, "history", got, []market.DeploymentHistory{hs[1], hs[0]})
			one, err := tx.DeploymentHistory(ctx, d.ID, 1)
			diff(t, "history limit", len(one), 1)
			return err
		})
		do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.DeleteDeployment(ctx, d.ID) })
		do(t, s, func(ctx context.Context, tx coord.Tx) error {
			_, err := tx.Deployment(ctx, d.ID)
			wantKind(t, "Deployment after delete", err, market.NotFound)
			got, err := tx.DeploymentHistory(ctx, d.ID, 10)
			diff(t, "history after delete", len(got), 0)
			return err
		})
	})
}

func testPools(t *testing.T, s coord.Store) {
	w := newWorld(t, s, 4)
	p := market.Pool{Name: "depin", ShareBP: 4500, Description: "DePIN projects", CreatedAt: t0}
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		if err := tx.PutPool(ctx, p); err != nil {
			return err
		}
		return tx.PutPool(ctx, market.Pool{Name: "leasing", ShareBP: 5000, CreatedAt: t0})
	})
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.Pool(ctx, "depin")
		diff(t, "Pool", got, p)
		return err
	})
	p.ShareBP = 4000
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.PutPool(ctx, p) })
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		ps, err := tx.Pools(ctx)
		if len(ps) != 2 || ps[0] != p || ps[1].Name != "leasing" {
			t.Errorf("Pools = %+v, want depin (share 4000) and leasing", ps)
		}
		return err
	})
	if err := try(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.PutPool(ctx, market.Pool{Name: "x", ShareBP: 10001, CreatedAt: t0})
	}); err == nil {
		t.Error("PutPool with a share above 100% succeeded; the schema must refuse it")
	}
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.SetMachinePool(ctx, w.machine, "depin") })
	wantKind(t, "assign to unknown pool", try(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.SetMachinePool(ctx, w.machine, "nope")
	}), market.NotFound)
	wantKind(t, "assign unknown machine", try(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.SetMachinePool(ctx, "m-ghost", "depin")
	}), market.NotFound)
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		got, err := tx.MachinePools(ctx)
		diff(t, "MachinePools", got, map[market.MachineID]string{w.machine: "depin"})
		return err
	})
	wantKind(t, "delete a pool in use", try(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.DeletePool(ctx, "depin")
	}), market.Conflict)
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.SetMachinePool(ctx, w.machine, "") })
	do(t, s, func(ctx context.Context, tx coord.Tx) error { return tx.DeletePool(ctx, "depin") })
	do(t, s, func(ctx context.Context, tx coord.Tx) error {
		_, err := tx.Pool(ctx, "depin")
		wantKind(t, "Pool after delete", err, market.NotFound)
		got, err := tx.MachinePools(ctx)
		diff(t, "MachinePools after unassign", len(got), 0)
		return err
	})
	wantKind(t, "delete unknown pool", try(t, s, func(ctx context.Context, tx coord.Tx) error {
		return tx.DeletePool(ctx, "depin")
	}), market.NotFound)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
