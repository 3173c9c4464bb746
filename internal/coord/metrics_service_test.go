package coord_test

import (
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestMetricsFromReports: agents' samples, sent on heartbeats and on
// reports with instance changes, become the machine's series, the
// instance's series (its GPUs, while it ran) and GPULatest; only the
// owner, the renter and admins see them.
func TestMetricsFromReports(t *testing.T) {
	e := newEnv(t)
	samples := func(util float64) []market.GPUSample {
		var s []market.GPUSample
		for i := range 4 {
			s = append(s, market.GPUSample{Index: i, UUID: e.mach.GPUs[i].UUID, UtilPct: util + float64(i), MemUsedMiB: 1024, PowerW: 300, TempC: 60})
		}
		return s
	}
	beat := func(util float64) {
		t.Helper()
		must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{GPUs: samples(util)}))
	}
	beat(5) // before the rental: the machine's, not the instance's
	e.clock.Advance(10 * time.Second)

	inst := must(e.create(2))
	must(e.svc.Report(e.ctx, e.host, e.mach.ID, market.Report{
		Instances: []market.InstanceReport{{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning}},
		GPUs:      samples(50),
	}))
	for i := range 5 {
		e.clock.Advance(10 * time.Second)
		beat(float64(60 + i))
	}

	mr := must(e.svc.MachineMetrics(e.ctx, e.host, e.mach.ID, time.Hour))
	if len(mr.GPUs) != 4 || len(mr.GPUs[0].Points) != 7 || mr.StepSeconds != 10 {
		t.Fatalf("machine metrics: %d GPUs, %d points, step %d; want 4, 7, 10", len(mr.GPUs), len(mr.GPUs[0].Points), mr.StepSeconds)
	}
	if got := mr.Latest[3].UtilPct; got != 67 {
		t.Errorf("latest of GPU 3 = %v, want 67", got)
	}

	ir := must(e.svc.InstanceMetrics(e.ctx, e.renter, inst.ID, time.Hour))
	if len(ir.GPUs) != len(inst.GPUs) || len(ir.Latest) != len(inst.GPUs) {
		t.Fatalf("instance metrics cover %d GPUs (latest %d), want its %d", len(ir.GPUs), len(ir.Latest), len(inst.GPUs))
	}
	for _, g := range ir.GPUs {
		if len(g.Points) != 6 || g.Points[0].UtilPct != 50+float64(g.Index) {
			t.Errorf("instance GPU %d: %+v; want the 6 points from its start", g.Index, g.Points)
		}
	}
	if got := e.svc.GPULatest(e.mach.ID); len(got) != 4 || got[0].UtilPct != 64 {
		t.Errorf("GPULatest = %+v", got)
	}

	// Others see nothing.
	stranger := e.account("other@example.com", market.RoleRenter, market.RoleHost)
	_, err := e.svc.InstanceMetrics(e.ctx, stranger, inst.ID, time.Hour)
	wantKind(t, err, market.NotFound, string(inst.ID))
	_, err = e.svc.MachineMetrics(e.ctx, stranger, e.mach.ID, time.Hour)
	wantKind(t, err, market.NotFound, string(e.mach.ID))
	_, err = e.svc.MachineMetrics(e.ctx, e.renter, e.mach.ID, time.Hour)
	wantKind(t, err, market.NotFound, string(e.mach.ID))
	if _, err := e.svc.MachineMetrics(e.ctx, e.admin, e.mach.ID, time.Hour); err != nil {
		t.Errorf("admin: %v", err)
	}
	_, err = e.svc.InstanceMetrics(e.ctx, e.renter, inst.ID, 25*time.Hour)
	wantKind(t, err, market.Invalid, "at most")

	// After the instance ends its series stop at the end and it has no
	// latest reading.
	inst = must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	e.report(e.inst(inst.ID), market.ObservedStopped)
	for range 3 {
		e.clock.Advance(10 * time.Second)
		beat(1)
	}
	ir = must(e.svc.InstanceMetrics(e.ctx, e.renter, inst.ID, time.Hour))
	if len(ir.Latest) != 0 {
		t.Errorf("ended instance has latest readings %+v", ir.Latest)
	}
	for _, g := range ir.GPUs {
		for _, p := range g.Points {
			if p.UtilPct < 50 {
				t.Errorf("ended instance's series has a later tenant's point %+v", p)
			}
		}
	}
}

// TestFleetFromIndex: the operator's fleet view lists every machine with
// the GPUs of active instances as used, and only admins get it.
func TestFleetFromIndex(t *testing.T) {
	e := newEnv(t)
	other := e.machine(e.account("host2@example.com", market.RoleHost), "fp-2", 2)
	inst := must(e.create(3))
	ms := must(e.svc.Fleet(e.ctx, e.admin))
	if len(ms) != 2 {
		t.Fatalf("fleet has %d machines, want 2", len(ms))
	}
	for _, m := range ms {
		want := 0
		if m.ID == inst.Machine {
			want = 3
		}
		if len(m.UsedGPUs) != want || m.Status != market.MachineListed {
			t.Errorf("machine %s: used %v, status %s; want %d used, listed", m.ID, m.UsedGPUs, m.Status, want)
		}
	}
	if ms[0].ID != other.ID && ms[1].ID != other.ID {
		t.Errorf("fleet %s, %s lacks %s", ms[0].ID, ms[1].ID, other.ID)
	}
	_, err := e.svc.Fleet(e.ctx, e.host)
	wantKind(t, err, market.Forbidden, "admin")

	// The home page's counts come from the same index.
	e.report(inst, market.ObservedRunning)
	if st := must(e.svc.Stats(e.ctx)); st.Machines != 2 || st.OnlineMachines != 2 || st.RunningInstances != 1 {
		t.Errorf("stats %+v, want 2 machines, 2 online, 1 running", st)
	}
}
