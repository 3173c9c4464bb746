package coord_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// replicas returns the active replicas of a deployment.
func (e *env) replicas(ref string) []market.Instance {
	e.t.Helper()
	return must(e.svc.Deployment(e.ctx, e.renter, ref)).Replicas
}

// runAll reports every pending or starting replica as running.
func (e *env) runAll(ref string) {
	e.t.Helper()
	for _, r := range e.replicas(ref) {
		if r.State == market.InstancePending || r.State == market.InstanceStarting {
			e.report(r, market.ObservedRunning)
		}
	}
}

// replicaAt returns the active replica of a deployment at revision rev
// (the last one listed), or a zero instance when there is none.
func (e *env) replicaAt(ref string, rev int64) market.Instance {
	e.t.Helper()
	var out market.Instance
	for _, r := range e.replicas(ref) {
		if r.DeploymentRevision == rev {
			out = r
		}
	}
	return out
}

func history(v market.DeploymentView, kind string) []string {
	var out []string
	for _, h := range v.History {
		if h.Kind == kind {
			out = append(out, h.Message)
		}
	}
	return out
}

func TestDeploymentPlacesSpreadsAndReplaces(t *testing.T) {
	e := newEnv(t)
	second := e.machine(e.host, "fp-2", 4)
	d := must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "web", Command: []string{"serve"},
		GPUsPerReplica: 1, MinReplicas: 3, MaxReplicas: 3}))
	e.tick()
	reps := e.replicas("web")
	if len(reps) != 3 {
		t.Fatalf("%d replicas after a tick, want 3", len(reps))
	}
	on := map[market.MachineID]int{}
	for _, r := range reps {
		on[r.Machine]++
		if r.Deployment != d.ID || r.DeploymentRevision != 1 || r.Renter != e.renter.ID {
			t.Errorf("replica %s: deployment %s revision %d renter %s; want %s, 1, %s", r.ID, r.Deployment, r.DeploymentRevision, r.Renter, d.ID, e.renter.ID)
		}
	}
	if on[e.mach.ID] == 0 || on[second.ID] == 0 {
		t.Errorf("replicas per machine %v, want both machines used", on)
	}
	// Each replica holds its hour of escrow like any rental.
	if w := e.wallet(e.renter); w.Escrow != 3*600_000 {
		t.Errorf("escrow = %s, want 1.80 for three 1-GPU replicas", w.Escrow)
	}
	e.runAll("web")
	e.tick()
	if n := len(e.replicas("web")); n != 3 {
		t.Fatalf("%d replicas after a quiet tick, want 3", n)
	}
	// A replica's instance fails: the next pass replaces it.
	lost := e.replicas("web")[0]
	e.report(lost, market.ObservedFailed)
	e.clock.Advance(11 * time.Second) // past the crash-loop backoff
	e.tick()
	reps = e.replicas("web")
	if len(reps) != 3 || slices.ContainsFunc(reps, func(r market.Instance) bool { return r.ID == lost.ID }) {
		t.Fatalf("after %s failed: replicas %v, want 3 others", lost.ID, reps)
	}
	v := must(e.svc.Deployment(e.ctx, e.renter, string(d.ID)))
	if places := history(v, "place"); len(places) != 4 {
		t.Errorf("history has %d placements, want 4: %q", len(places), places)
	}
	if v.Status.Replicas != 3 {
		t.Errorf("status %+v, want 3 replicas", v.Status)
	}
}

func TestDeploymentPendingSaysWhy(t *testing.T) {
	e := newEnv(t)
	must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "big", Command: []string{"serve"},
		GPUsPerReplica: 2, MinReplicas: 1, MaxReplicas: 1, Query: "gpu_name=H100", Regions: []string{"eu"}}))
	e.tick()
	v := must(e.svc.Deployment(e.ctx, e.renter, "big"))
	if v.Status.Pending != 1 || !strings.Contains(v.Status.Why, "no machine with 2 free GPUs matching 'gpu_name=H100' in eu") {
		t.Errorf("status %+v, want 1 pending with a reason", v.Status)
	}
	if p := history(v, "pending"); len(p) != 1 {
		t.Errorf("pending history %q, want one entry", p)
	}
	e.tick() // the same reason is not recorded twice
	v = must(e.svc.Deployment(e.ctx, e.renter, "big"))
	if p := history(v, "pending"); len(p) != 1 {
		t.Errorf("pending history after a second tick %q, want still one entry", p)
	}
}

func TestDeploymentScalesOnQueueAndRollsUpdates(t *testing.T) {
	e := newEnv(t)
	e.machine(e.host, "fp-2", 4)
	d := must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "api", Command: []string{"serve", "v1"},
		GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 4,
		Scale: &market.ScaleRule{Metric: market.ScaleQueue, Target: 100, UpCooldown: market.Duration(time.Minute)}}))
	e.tick()
	e.runAll("api")
	r := e.replicas("api")[0]
	q := int64(350)
	must(e.svc.Report(e.ctx, e.host, r.Machine, market.Report{Instances: []market.InstanceReport{{Instance: r.ID, Generation: r.Generation, State: market.ObservedRunning, Queue: &q}}}))
	e.tick()
	v := must(e.svc.Deployment(e.ctx, e.renter, "api"))
	if v.Desired != 3 || len(v.Replicas) != 3 {
		t.Fatalf("after queue 350 (target 100): desired %d, %d replicas; want 3 and 3 (max step 2)", v.Desired, len(v.Replicas))
	}
	if s := history(v, "scale"); len(s) == 0 || !strings.Contains(s[0], "queue 350 over 1 replicas") {
		t.Errorf("scale history %q, want the reason", s)
	}
	e.runAll("api")

	// Rolling update: new command, revision 2, one replica at a time.
	spec := d.Spec
	spec.MaxReplicas = 3
	spec.MinReplicas = 3
	spec.Scale = nil
	spec.Command = []string{"serve", "v2"}
	d = must(e.svc.UpdateDeployment(e.ctx, e.renter, "api", spec))
	if d.Revision != 2 {
		t.Fatalf("revision %d after a new command, want 2", d.Revision)
	}
	for pass := 0; pass < 12; pass++ {
		e.tick()
		reps := e.replicas("api")
		ready, fresh := 0, 0
		for _, r := range reps {
			if r.State == market.InstanceRunning {
				ready++
			}
			if r.DeploymentRevision == 2 && r.State != market.InstanceRunning && r.State != market.InstanceStopping {
				fresh++
			}
		}
		if fresh > 1 {
			t.Fatalf("pass %d: %d new replicas starting at once, want one at a time", pass, fresh)
		}
		if ready < 3 {
			t.Fatalf("pass %d: %d replicas running, want at least 3 during the update", pass, ready)
		}
		for _, r := range reps { // the agent does what it is told
			switch r.State {
			case market.InstanceStopping:
				e.report(e.inst(r.ID), market.ObservedStopped)
			case market.InstancePending:
				e.report(r, market.ObservedRunning)
			}
		}
	}
	reps := e.replicas("api")
	if len(reps) != 3 {
		t.Fatalf("%d replicas after the update, want 3", len(reps))
	}
	for _, r := range reps {
		if r.DeploymentRevision != 2 || !slices.Equal(r.Command, []string{"serve", "v2"}) {
			t.Errorf("replica %s at revision %d runs %v, want revision 2 running serve v2", r.ID, r.DeploymentRevision, r.Command)
		}
	}

	// Delete: every replica stops, then the deployment goes.
	must(e.svc.DeleteDeployment(e.ctx, e.renter, "api"))
	e.tick()
	for _, r := range e.replicas("api") {
		if r.State != market.InstanceStopping {
			t.Errorf("replica %s is %s after delete, want stopping", r.ID, r.State)
		}
		e.report(e.inst(r.ID), market.ObservedStopped)
	}
	e.tick()
	if _, err := e.svc.Deployment(e.ctx, e.renter, "api"); !market.IsKind(err, market.NotFound) {
		t.Errorf("deployment after its replicas stopped: err %v, want not found", err)
	}
}

func TestDeploymentSpecErrors(t *testing.T) {
	e := newEnv(t)
	ok := market.DeploymentSpec{Name: "web", Command: []string{"serve"}, GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 2}
	with := func(f func(*market.DeploymentSpec)) market.DeploymentSpec {
		s := ok
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		spec market.DeploymentSpec
		kind market.Kind
		msg  string
	}{
		{"bad name", with(func(s *market.DeploymentSpec) { s.Name = "Web App" }), market.Invalid, "lower-case letters"},
		{"min above max", with(func(s *market.DeploymentSpec) { s.MinReplicas = 3 }), market.Invalid, "below the minimum 3"},
		{"too many", with(func(s *market.DeploymentSpec) { s.MaxReplicas = 1000 }), market.Invalid, "above the limit"},
		{"no GPUs", with(func(s *market.DeploymentSpec) { s.GPUsPerReplica = 0 }), market.Invalid, "GPUs per replica"},
		{"bad query", with(func(s *market.DeploymentSpec) { s.Query = "gpu_nam=x" }), market.Invalid, "did you mean"},
		{"latency without regions", with(func(s *market.DeploymentSpec) { s.MaxLatency = market.Duration(time.Second) }), market.Invalid, "add --regions"},
		{"unknown pool", with(func(s *market.DeploymentSpec) { s.Pool = "nope" }), market.Invalid, `pool "nope" does not exist`},
		{"reserved env", with(func(s *market.DeploymentSpec) { s.Env = map[string]string{"GPUMARKET_X": "1"} }), market.Invalid, "cannot be overridden"},
		{"nothing to run", with(func(s *market.DeploymentSpec) { s.Command = nil }), market.Invalid, "give an image"},
		{"health command and path", with(func(s *market.DeploymentSpec) {
			s.Health = &market.HealthCheck{Port: 8080, Path: "/healthz", Command: []string{"true"}}
		}), market.Invalid, "not both"},
		{"health command timeout", with(func(s *market.DeploymentSpec) {
			s.Health = &market.HealthCheck{Command: []string{"true"}, Timeout: market.Duration(time.Hour)}
		}), market.Invalid, "between 1s and 1m0s"},
		{"empty health command", with(func(s *market.DeploymentSpec) { s.Health = &market.HealthCheck{Command: []string{""}} }),
			market.Invalid, "no program"},
		{"fixed replicas with a scale rule", with(func(s *market.DeploymentSpec) {
			s.MaxReplicas = 1
			s.Scale = &market.ScaleRule{Metric: market.ScaleQueue, Target: 5}
		}), market.Invalid, "needs room to scale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.CreateDeployment(e.ctx, e.renter, tc.spec)
			wantKind(t, err, tc.kind, tc.msg)
		})
	}
	must(e.svc.CreateDeployment(e.ctx, e.renter, ok))
	_, err := e.svc.CreateDeployment(e.ctx, e.renter, ok)
	wantKind(t, err, market.Conflict, "already have a deployment named")
	_, err = e.svc.Deployment(e.ctx, e.host, "web")
	wantKind(t, err, market.NotFound, "not found among your deployments")
	_, err = e.svc.ScaleDeployment(e.ctx, e.renter, "web", market.ScaleRequest{Replicas: ptrTo(5)})
	if err != nil {
		t.Fatalf("scale without a rule to 5: %v", err)
	}
	_, err = e.svc.UpdateDeployment(e.ctx, e.renter, "web", with(func(s *market.DeploymentSpec) { s.Name = "other" }))
	wantKind(t, err, market.Invalid, "cannot be renamed")
}

func ptrTo[T any](v T) *T { return &v }

func TestPoolsQuotaAndReclaim(t *testing.T) {
	e := newEnv(t)
	m2 := e.machine(e.host, "fp-2", 4)
	_, err := e.svc.PutPool(e.ctx, e.renter, market.Pool{Name: "depin", ShareBP: 5000})
	wantKind(t, err, market.Forbidden, "")
	must(e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "leasing", ShareBP: 5000}))
	must(e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "depin", ShareBP: 5000}))
	_, err = e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "incubation", ShareBP: 500})
	wantKind(t, err, market.Invalid, "add up to 105%")
	if err := e.svc.AssignPool(e.ctx, e.admin, "leasing", []market.MachineID{e.mach.ID}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.AssignPool(e.ctx, e.admin, "depin", []market.MachineID{m2.ID}); err != nil {
		t.Fatal(err)
	}
	// leasing borrows: 6 GPUs on a quota of 4.
	must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "lease", Command: []string{"serve"}, GPUsPerReplica: 1,
		MinReplicas: 6, MaxReplicas: 6, Pool: "leasing"}))
	e.tick()
	e.runAll("lease")
	if n := len(e.replicas("lease")); n != 6 {
		t.Fatalf("%d leasing replicas, want 6 (4 in quota, 2 borrowed)", n)
	}
	use := must(e.svc.Pools(e.ctx, e.admin))
	if use[1].Name != "leasing" || use[1].UsedGPUs != 6 || use[1].QuotaGPUs != 4 || use[1].BorrowedGPU != 2 {
		t.Errorf("leasing usage %+v, want 6 used of a quota of 4, 2 borrowed", use[1])
	}
	// depin needs its quota back.
	must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "node", Command: []string{"node"}, GPUsPerReplica: 4,
		MinReplicas: 1, MaxReplicas: 1, Pool: "depin"}))
	e.tick()
	var preempted int
	for _, r := range e.replicas("lease") {
		if r.State == market.InstanceStopping {
			preempted++
			if !strings.Contains(r.Reason, "pool depin reclaims its quota") {
				t.Errorf("preempted replica's reason %q", r.Reason)
			}
			e.report(e.inst(r.ID), market.ObservedStopped)
		}
	}
	if preempted != 2 {
		t.Fatalf("%d leasing replicas preempted, want the 2 borrowed", preempted)
	}
	e.tick()
	node := e.replicas("node")
	if len(node) != 1 || node[0].Machine != m2.ID {
		t.Fatalf("depin replicas %v, want one on %s", node, m2.ID)
	}
	// leasing keeps its quota and waits for room.
	e.tick()
	lv := must(e.svc.Deployment(e.ctx, e.renter, "lease"))
	if len(lv.Replicas) != 4 || lv.Status.Pending != 2 {
		t.Errorf("leasing: %d replicas, status %+v; want 4 running and 2 pending", len(lv.Replicas), lv.Status)
	}
	if err := e.svc.DeletePool(e.ctx, e.admin, "depin"); !market.IsKind(err, market.Conflict) {
		t.Errorf("delete a pool with machines: %v, want conflict", err)
	}
}

func TestDeploymentUpdateWaitsForHealth(t *testing.T) {
	e := newEnv(t)
	e.machine(e.host, "fp-2", 4)
	spec := market.DeploymentSpec{Name: "api", Command: []string{"serve", "v1"}, GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 1,
		Health: &market.HealthCheck{Port: 8080, Path: "/healthz"}}
	must(e.svc.CreateDeployment(e.ctx, e.renter, spec))
	e.tick()
	old := e.replicas("api")[0]
	if got := old.Env[market.HealthEnv]; got != "8080 /healthz" {
		t.Fatalf("replica env %s = %q, want the check for its agent", market.HealthEnv, got)
	}
	e.report(old, market.ObservedRunning)
	spec.Command = []string{"serve", "v2"}
	must(e.svc.UpdateDeployment(e.ctx, e.renter, "api", spec))
	e.tick() // starts the new replica
	fresh := e.replicaAt("api", 2)
	if fresh.ID == "" || fresh.Machine == old.Machine {
		t.Fatalf("new replica %+v, want one on the other machine (processes with a health check never share one)", fresh)
	}
	report := func(healthy bool) {
		t.Helper()
		must(e.svc.Report(e.ctx, e.host, fresh.Machine, market.Report{Instances: []market.InstanceReport{{Instance: fresh.ID,
			Generation: fresh.Generation, State: market.ObservedRunning, Healthy: &healthy}}}))
	}
	report(false)
	e.tick()
	if got := e.inst(old.ID); got.State != market.InstanceRunning {
		t.Fatalf("old replica %s while the new one is unhealthy, want running", got.State)
	}
	v := must(e.svc.Deployment(e.ctx, e.renter, "api"))
	if !strings.Contains(v.Status.Why, "waiting for 1 new replicas to be ready") {
		t.Errorf("status %+v, want it to say it waits", v.Status)
	}
	report(true)
	e.tick()
	if got := e.inst(old.ID); got.State != market.InstanceStopping {
		t.Fatalf("old replica %s once the new one is healthy, want stopping", got.State)
	}
	_, err := e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "bad", Command: []string{"x"}, GPUsPerReplica: 1,
		MinReplicas: 1, MaxReplicas: 1, Health: &market.HealthCheck{Port: 0, Path: "healthz"}})
	wantKind(t, err, market.Invalid, "not a port number")
}

// TestDeploymentHealthCommand: a replica with a health check command gets
// it in its environment for the agent, publishes no port, and replicas of
// plain processes may share a machine (no port to clash on); a rolling
// update waits for the command to pass.
func TestDeploymentHealthCommand(t *testing.T) {
	e := newEnv(t)
	check := &market.HealthCheck{Command: []string{"sh", "-c", "curl -fs localhost:8080/healthz"}, Timeout: market.Duration(3 * time.Second)}
	spec := market.DeploymentSpec{Name: "api", Command: []string{"serve", "v1"}, GPUsPerReplica: 1, MinReplicas: 2, MaxReplicas: 2, Health: check}
	must(e.svc.CreateDeployment(e.ctx, e.renter, spec))
	e.tick()
	reps := e.replicas("api")
	if len(reps) != 2 || reps[0].Machine != reps[1].Machine {
		t.Fatalf("replicas %+v, want 2 on the one machine", reps)
	}
	got, err := market.ParseHealthCheck(reps[0].Env[market.HealthEnv])
	if err != nil || !slices.Equal(got.Command, check.Command) || got.CommandTimeout() != 3*time.Second || len(reps[0].Ports) != 0 {
		t.Errorf("replica env %s = %q (%v), ports %v; want the command check and no port", market.HealthEnv, reps[0].Env[market.HealthEnv], err, reps[0].Ports)
	}
	healthy := true
	for _, r := range reps {
		must(e.svc.Report(e.ctx, e.host, r.Machine, market.Report{Instances: []market.InstanceReport{{Instance: r.ID,
			Generation: r.Generation, State: market.ObservedRunning, Healthy: &healthy}}}))
	}
	spec.Command = []string{"serve", "v2"}
	must(e.svc.UpdateDeployment(e.ctx, e.renter, "api", spec))
	e.tick()
	fresh := e.replicaAt("api", 2)
	if fresh.ID == "" {
		t.Fatal("no replica of revision 2 started")
	}
	e.report(fresh, market.ObservedRunning)
	e.tick()
	for _, r := range reps {
		if got := e.inst(r.ID); got.State != market.InstanceRunning {
			t.Fatalf("old replica %s while the new one has no check result, want running", got.State)
		}
	}
	must(e.svc.Report(e.ctx, e.host, fresh.Machine, market.Report{Instances: []market.InstanceReport{{Instance: fresh.ID,
		Generation: fresh.Generation, State: market.ObservedRunning, Healthy: &healthy}}}))
	e.tick()
	stopping := 0
	for _, r := range reps {
		if e.inst(r.ID).State == market.InstanceStopping {
			stopping++
		}
	}
	if stopping != 1 {
		t.Errorf("%d old replicas stopping once the new one passes its check, want 1", stopping)
	}
}

// One tick places the replicas of many deployments in one transaction; a
// create refused in the middle (here: its owner cannot pay the escrow)
// leaves no trace, and the creates around it stay.
func TestDeploymentBatchKeepsCreatesAroundARefusal(t *testing.T) {
	e := newEnv(t)
	e.machine(e.host, "fp-2", 4)
	poor := e.account("poor@example.com", market.RoleRenter)
	e.deposit(poor, 2*600_000) // escrow for two 1-GPU replicas, not three
	must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "first", Command: []string{"serve"},
		GPUsPerReplica: 1, MinReplicas: 2, MaxReplicas: 2}))
	must(e.svc.CreateDeployment(e.ctx, poor, market.DeploymentSpec{Name: "short", Command: []string{"serve"},
		GPUsPerReplica: 1, MinReplicas: 3, MaxReplicas: 3}))
	must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "last", Command: []string{"serve"},
		GPUsPerReplica: 1, MinReplicas: 2, MaxReplicas: 2}))
	e.tick() // checks the ledger
	if a, b := len(e.replicas("first")), len(e.replicas("last")); a != 2 || b != 2 {
		t.Errorf("replicas of the deployments around the refusal: %d and %d, want 2 and 2", a, b)
	}
	v := must(e.svc.Deployment(e.ctx, poor, "short"))
	if len(v.Replicas) != 2 || v.Status.Pending != 1 || !strings.Contains(v.Status.Why, "in escrow") {
		t.Errorf("short: %d replicas, status %+v; want 2 placed and 1 pending for lack of escrow", len(v.Replicas), v.Status)
	}
	if w := e.wallet(poor); w.Escrow != 2*600_000 || w.Available != 0 {
		t.Errorf("poor's wallet %+v, want 1.20 in escrow and nothing available", w)
	}
	insts := must(e.svc.Instances(e.ctx, poor, false))
	if len(insts) != 2 {
		t.Errorf("poor has %d instances, want 2: the refused create must leave no row", len(insts))
	}
}
