package deploy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestReconcileInvariants checks, over random fleets, deployments, pools
// and replicas, what must hold whatever the plan: placements use free GPUs
// of rentable machines that match the deployment, no GPU twice; stops name
// active replicas of their own deployment, once; no deployment gets more
// replicas than its maximum plus one (a rolling update's extra).
func TestReconcileInvariants(t *testing.T) {
	regions := []string{"eu", "us", "asia"}
	models := []string{"RTX 4090", "A100"}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var ms []Machine
		for i := range 1 + rng.IntN(12) {
			m := mach(fmt.Sprintf("m-%02d", i), regions[rng.IntN(3)], fmt.Sprintf("dc%d", rng.IntN(3)), 1+rng.IntN(4), models[rng.IntN(2)])
			m.Online = rng.IntN(10) > 0
			m.Listed = rng.IntN(10) > 0
			if rng.IntN(3) == 0 {
				m.Pool = []string{"a", "b"}[rng.IntN(2)]
			}
			ms = append(ms, m)
		}
		var ds []market.Deployment
		for i := range 1 + rng.IntN(5) {
			lo := rng.IntN(4)
			d := depl(fmt.Sprintf("d-%d", i), 1+rng.IntN(2), lo, lo+rng.IntN(3), func(d *market.Deployment) {
				d.Revision = 1 + int64(rng.IntN(2))
				d.Desired = d.Spec.MinReplicas + rng.IntN(d.Spec.MaxReplicas-d.Spec.MinReplicas+1)
				if rng.IntN(2) == 0 {
					d.Spec.Regions = []string{regions[rng.IntN(3)]}
					d.Spec.MaxLatency = market.Duration(time.Duration(rng.IntN(200)) * time.Millisecond)
				}
				if rng.IntN(3) == 0 {
					d.Spec.Pool = []string{"a", "b"}[rng.IntN(2)]
				}
				if rng.IntN(3) == 0 {
					d.Spec.Query = fmt.Sprintf("gpu_name=%q", models[rng.IntN(2)])
				}
				d.Deleted = rng.IntN(10) == 0
				d.Spec.Priority = rng.IntN(3)
			})
			ds = append(ds, d)
		}
		// Replicas on free GPUs of online machines.
		var reps []Replica
		used := map[market.MachineID][]int{}
		for k := range rng.IntN(20) {
			d := ds[rng.IntN(len(ds))]
			m := ms[rng.IntN(len(ms))]
			if !m.Online {
				continue
			}
			var gpus []int
			for g := range len(m.GPUs) {
				if len(gpus) < d.Spec.GPUsPerReplica && !slices.Contains(used[m.ID], g) {
					gpus = append(gpus, g)
				}
			}
			if len(gpus) < d.Spec.GPUsPerReplica {
				continue
			}
			used[m.ID] = append(used[m.ID], gpus...)
			r := rep(fmt.Sprintf("i-%02d", k), string(d.ID), string(m.ID), gpus...)
			r.Revision = 1 + int64(rng.IntN(2))
			r.Ready = rng.IntN(4) > 0
			r.CreatedAt = t0.Add(time.Duration(k) * time.Second)
			if rng.IntN(8) == 0 {
				r.State = market.InstanceStopping
			}
			reps = append(reps, r)
		}
		in := Input{Now: t0, Deployments: ds, Replicas: reps, Machines: withUsed(ms, reps),
			Pools: []market.Pool{{Name: "a", ShareBP: 6000}, {Name: "b", ShareBP: 4000}}}
		plan := Reconcile(in, Config{})

		byID := map[market.MachineID]Machine{}
		for _, m := range in.Machines {
			byID[m.ID] = m
		}
		taken := map[market.MachineID][]int{}
		for m, g := range used {
			taken[m] = slices.Clone(g)
		}
		deps := map[market.DeploymentID]market.Deployment{}
		for _, d := range ds {
			deps[d.ID] = d
		}
		count, placed := map[market.DeploymentID]int{}, map[market.DeploymentID]int{}
		for _, r := range reps {
			if r.State != market.InstanceStopping {
				count[r.Deployment]++
			}
		}
		for _, pl := range plan.Places {
			m, d := byID[pl.Machine], deps[pl.Deployment]
			if !m.Online || !m.Listed {
				t.Fatalf("seed %d: placed %s on %s, which is offline or unlisted", seed, pl.Deployment, m.ID)
			}
			if (m.Pool == "") != (d.Spec.Pool == "") {
				t.Fatalf("seed %d: %s (pool %q) placed on %s (pool %q)", seed, d.ID, d.Spec.Pool, m.ID, m.Pool)
			}
			if d.Deleted || len(pl.GPUs) != d.Spec.GPUsPerReplica || pl.Revision != d.Revision {
				t.Fatalf("seed %d: bad placement %+v of %+v", seed, pl, d)
			}
			for _, g := range pl.GPUs {
				if slices.Contains(taken[m.ID], g) || g >= len(m.GPUs) {
					t.Fatalf("seed %d: GPU %d of %s given twice or does not exist", seed, g, m.ID)
				}
				taken[m.ID] = append(taken[m.ID], g)
			}
			count[d.ID]++
			placed[d.ID]++
		}
		stopped := map[market.InstanceID]bool{}
		for _, st := range plan.Stops {
			i := slices.IndexFunc(reps, func(r Replica) bool { return r.Instance == st.Instance })
			if i < 0 || reps[i].Deployment != st.Deployment || reps[i].State == market.InstanceStopping || stopped[st.Instance] {
				t.Fatalf("seed %d: bad stop %+v", seed, st)
			}
			stopped[st.Instance] = true
			count[st.Deployment]--
		}
		for _, d := range ds {
			if d.Deleted {
				if count[d.ID] != 0 {
					t.Fatalf("seed %d: deleted %s keeps %d replicas", seed, d.ID, count[d.ID])
				}
				continue
			}
			if placed[d.ID] > 0 && count[d.ID] > d.Spec.MaxReplicas+1 {
				t.Fatalf("seed %d: %s placed up to %d replicas, max %d", seed, d.ID, count[d.ID], d.Spec.MaxReplicas)
			}
		}
	}
}
