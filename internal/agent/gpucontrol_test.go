package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/process"
)

func TestGPUControlAppliedBeforeStartAndResetAfter(t *testing.T) {
	gpus, err := fake.Parse("2xRTX 4090", "seed")
	if err != nil {
		t.Fatal(err)
	}
	ctl := fake.NewControl(gpus)
	inner, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := agent.WithGPUControl(inner, ctl)
	ctx := t.Context()
	a := market.Assignment{Instance: "i-1", Generation: 1, Desired: market.DesiredRun, GPUs: []int{1}, GPUUUIDs: []string{gpus[1].UUID},
		Command: []string{"sleep", "30"}, PowerLimitW: 300, Clocks: market.Clocks{CoreLockMHz: 2000}}
	if err := r.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got := ctl.Get(gpus[1].UUID); got.PowerLimitW != 300 || got.Clocks.CoreLockMHz != 2000 {
		t.Errorf("while running: %+v, want 300 W and a 2000 MHz core lock", got)
	}
	if got := ctl.Get(gpus[0].UUID); got.PowerLimitW != gpus[0].DefaultPowerW {
		t.Errorf("the other GPU was touched: %+v", got)
	}
	if err := r.Stop(ctx, "i-1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := ctl.Get(gpus[1].UUID); got.PowerLimitW != gpus[1].DefaultPowerW || got.Clocks != (market.Clocks{}) {
		t.Errorf("after stop: %+v, want defaults", got)
	}
	if log := ctl.Log(); len(log) != 2 || !strings.HasPrefix(log[0], "apply") || !strings.HasPrefix(log[1], "reset") {
		t.Errorf("control log = %v, want one apply then one reset", log)
	}

	// A power limit the card refuses: nothing runs, the instance is failed
	// with the card's range in the message.
	bad := a
	bad.Instance, bad.PowerLimitW = "i-2", 10
	if err := r.Start(ctx, bad); err != nil {
		t.Fatal(err)
	}
	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, rep := range list {
		if rep.Instance == "i-2" {
			found = true
			if rep.State != market.ObservedFailed || !strings.Contains(rep.Message, "150-450 W") {
				t.Errorf("refused settings: %+v, want failed naming the range", rep)
			}
		}
	}
	if !found {
		t.Fatal("the refused instance is not listed")
	}
	if err := r.Forget(ctx, "i-2"); err != nil {
		t.Fatal(err)
	}
}

func TestGPUControlPerGPUClocks(t *testing.T) {
	gpus, err := fake.Parse("2xRTX 4090", "seed")
	if err != nil {
		t.Fatal(err)
	}
	ctl := fake.NewControl(gpus)
	inner, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := agent.WithGPUControl(inner, ctl)
	a := market.Assignment{Instance: "i-1", Generation: 1, Desired: market.DesiredRun, GPUs: []int{0, 1},
		GPUUUIDs: []string{gpus[0].UUID, gpus[1].UUID}, Command: []string{"sleep", "30"}, PowerLimitW: 250,
		GPUClocks: []market.Clocks{{CoreLockMHz: 1500}, {CoreLockMHz: 2100, MemLockMHz: 10000}}}
	if err := r.Start(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(t.Context(), "i-1", time.Second)
	for i, want := range a.GPUClocks {
		if got := ctl.Get(gpus[i].UUID); got.Clocks != want || got.PowerLimitW != 250 {
			t.Errorf("GPU %d: %+v, want %+v at 250 W", i, got, want)
		}
	}
}

// Simulated GPUs are told which of them run a workload, so their metrics
// follow load.
func TestGPUControlMarksBusyGPUs(t *testing.T) {
	gpus, err := fake.Parse("2xRTX 4090", "seed")
	if err != nil {
		t.Fatal(err)
	}
	ctl := fake.NewControl(gpus)
	inner, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := agent.WithGPUControl(inner, ctl)
	ctx := t.Context()
	a := market.Assignment{Instance: "i-1", Generation: 1, Desired: market.DesiredRun, GPUs: []int{1}, GPUUUIDs: []string{gpus[1].UUID},
		Command: []string{"sleep", "30"}}
	if err := r.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	util := func() [2]float64 {
		s, err := ctl.Sample(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return [2]float64{s[0].UtilPct, s[1].UtilPct}
	}
	if u := util(); u[0] != 0 || u[1] < 85 {
		t.Errorf("while i-1 runs on GPU 1: utilisation %v, want GPU 0 idle and GPU 1 busy", u)
	}
	if err := r.Stop(ctx, "i-1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if u := util(); u != [2]float64{} {
		t.Errorf("after i-1 stopped: utilisation %v, want both idle", u)
	}
}
