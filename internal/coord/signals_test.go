package coord_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
)

// TestLeaderSeesSignalsReportedElsewhere runs two coordinators on one
// database. Agents report only to b, which does not lead: the queue
// length, GPU utilisation and health results they carry reach the leader
// a through b's heartbeat flush, and a scales and rolls out on them.
func TestLeaderSeesSignalsReportedElsewhere(t *testing.T) {
	for name, open := range replicaStores(t, 2) {
		t.Run(name, func(t *testing.T) {
			if name == "postgres" {
				pgtest.ServerURL(t)
			}
			testLeaderSeesSignals(t, open(t))
		})
	}
}

func testLeaderSeesSignals(t *testing.T, stores []coord.Store) {
	ctx := t.Context()
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
	a := coord.New(coord.Config{Store: stores[0], Clock: clock, Passwords: plainPasswords{}, Node: "a"})
	b := coord.New(coord.Config{Store: stores[1], Clock: clock, Passwords: plainPasswords{}, Node: "b"})
	e := &env{t: t, ctx: ctx, clock: clock, store: stores[0], svc: a}
	e.admin = must(a.CreateAccount(ctx, "admin@example.com", "password1", []market.Role{market.RoleAdmin}))
	e.host = e.account("host@example.com", market.RoleHost)
	e.renter = e.account("renter@example.com", market.RoleRenter)
	e.mach = e.machine(e.host, "fp-1", 4)
	e.machine(e.host, "fp-2", 4)
	e.machine(e.host, "fp-3", 4)
	e.deposit(e.renter, market.Tokens(1000))
	tickB := func() {
		t.Helper()
		if err := b.Tick(ctx); err != nil { // flushes; does not lead
			t.Fatalf("b's tick: %v", err)
		}
		if b.Leadership().IsLeader {
			t.Fatal("b leads; the test wants a to")
		}
	}
	// report sends an agent's report of r to b.
	report := func(r market.Instance, rep market.InstanceReport, gpus []market.GPUSample) {
		t.Helper()
		rep.Instance, rep.Generation, rep.State = r.ID, r.Generation, market.ObservedRunning
		must(b.Report(ctx, e.host, r.Machine, market.Report{Instances: []market.InstanceReport{rep}, GPUs: gpus}))
	}

	must(a.CreateDeployment(ctx, e.renter, market.DeploymentSpec{Name: "queue", Command: []string{"serve"},
		GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 4,
		Scale: &market.ScaleRule{Metric: market.ScaleQueue, Target: 100, UpCooldown: market.Duration(time.Minute)}}))
	must(a.CreateDeployment(ctx, e.renter, market.DeploymentSpec{Name: "util", Command: []string{"serve"},
		GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 4,
		Scale: &market.ScaleRule{Metric: market.ScaleGPUUtil, Target: 40, UpCooldown: market.Duration(time.Minute)}}))
	e.tick() // a leads and places one replica of each
	e.runAll("queue")
	e.runAll("util")
	if got := e.replicas("queue")[0].Env[market.DeploymentEnv]; !strings.HasPrefix(got, market.DeploymentPrefix) {
		t.Errorf("replica env %s = %q, want its deployment's ID", market.DeploymentEnv, got)
	}
	q := int64(350)
	report(e.replicas("queue")[0], market.InstanceReport{Queue: &q}, nil)
	u := e.replicas("util")[0]
	report(u, market.InstanceReport{}, []market.GPUSample{{Index: u.GPUs[0], UtilPct: 95}})
	e.tick()
	if n := len(e.replicas("queue")); n != 1 {
		t.Fatalf("%d replicas before b flushed, want 1 (the leader cannot know yet)", n)
	}
	tickB()
	e.tick()
	for _, c := range []struct {
		name string
		want int
	}{{"queue", 3}, {"util", 3}} {
		v := must(a.Deployment(ctx, e.renter, c.name))
		if v.Desired != c.want || len(v.Replicas) != c.want {
			t.Errorf("%s after a report to b: desired %d, %d replicas; want %d and %d (%q)", c.name, v.Desired, len(v.Replicas),
				c.want, c.want, history(v, "scale"))
		}
	}

	// A rolling update gated on a health check that only b hears of.
	spec := market.DeploymentSpec{Name: "web", Command: []string{"serve", "v1"}, GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 1,
		Health: &market.HealthCheck{Port: 8080, Path: "/healthz"}}
	must(a.CreateDeployment(ctx, e.renter, spec))
	e.tick()
	old := e.replicas("web")[0]
	healthy := true
	report(old, market.InstanceReport{Healthy: &healthy}, nil)
	spec.Command = []string{"serve", "v2"}
	must(a.UpdateDeployment(ctx, e.renter, "web", spec))
	tickB()
	e.tick() // starts the new replica
	fresh := e.replicaAt("web", 2)
	if fresh.ID == "" {
		t.Fatal("no replica of revision 2 started")
	}
	report(fresh, market.InstanceReport{Healthy: &healthy}, nil)
	e.tick()
	if got := e.inst(old.ID); got.State != market.InstanceRunning {
		t.Fatalf("old replica %s before b flushed the new one's health, want running", got.State)
	}
	tickB()
	e.tick()
	if got := e.inst(old.ID); got.State != market.InstanceStopping {
		t.Fatalf("old replica %s once the new one is healthy on b, want stopping", got.State)
	}
}
