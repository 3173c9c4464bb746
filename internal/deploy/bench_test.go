package deploy

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// benchInput is a fleet of machines with 8 GPUs each in 10 regions and 40
// data centers, and deployments of 5 one-GPU replicas each, placed by a
// first reconcile; then lostPer100 of every 100 machines go away with their
// replicas.
func benchInput(b *testing.B, machines, deployments, lostPer100 int) (Input, int) {
	rng := rand.New(rand.NewPCG(1, 2))
	models := []string{"RTX 4090", "A100", "H100", "L40S"}
	ms := make([]Machine, machines)
	for i := range ms {
		region := fmt.Sprintf("r%d", i%10)
		ms[i] = mach(fmt.Sprintf("m-%06d", i), region, fmt.Sprintf("dc%d", i%40), 8, models[i%len(models)])
		ms[i].PricePerGPUHour = market.Money(200_000 + rng.IntN(800_000))
	}
	ds := make([]market.Deployment, deployments)
	for i := range ds {
		ds[i] = depl(fmt.Sprintf("d-%06d", i), 1, 5, 5, func(d *market.Deployment) {
			d.Spec.Query = fmt.Sprintf("gpu_name=%q", models[i%len(models)])
			d.Spec.Regions = []string{fmt.Sprintf("r%d", i%10), fmt.Sprintf("r%d", (i+1)%10)}
			d.Spec.MaxLatency = market.Duration(100 * time.Millisecond)
		})
	}
	in := Input{Now: t0, Deployments: ds, Machines: ms}
	first := Reconcile(in, Config{})
	var reps []Replica
	for k, pl := range first.Places {
		reps = append(reps, Replica{Instance: market.InstanceID(fmt.Sprintf("i-%07d", k)), Deployment: pl.Deployment, Machine: pl.Machine,
			GPUs: pl.GPUs, State: market.InstanceRunning, Revision: 1, Ready: true, CreatedAt: t0})
	}
	if len(reps) != deployments*5 {
		for id, st := range first.Status {
			if st.Pending > 0 {
				b.Fatalf("the first pass placed %d replicas, want %d; %s: %+v", len(reps), deployments*5, id, st)
			}
		}
	}
	lost := map[market.MachineID]bool{}
	var alive []Machine
	for i, m := range ms {
		if i%100 < lostPer100 {
			lost[m.ID] = true
			continue
		}
		alive = append(alive, m)
	}
	var kept []Replica
	for _, r := range reps {
		if !lost[r.Machine] {
			kept = append(kept, r)
		}
	}
	in.Machines = withUsed(alive, kept)
	in.Replicas = kept
	return in, len(reps) - len(kept)
}

// BenchmarkReconcileAfterLoss: 10,000 deployments with 50,000 replicas over
// 10,000 machines after 1% of the machines are lost; one op is the pass
// that places every lost replica again.
func BenchmarkReconcileAfterLoss(b *testing.B) {
	in, missing := benchInput(b, 10_000, 10_000, 1)
	b.ResetTimer()
	for b.Loop() {
		p := Reconcile(in, Config{})
		if len(p.Places) != missing {
			b.Fatalf("placed %d replicas, want %d", len(p.Places), missing)
		}
	}
	b.ReportMetric(float64(missing), "replaced/op")
}
