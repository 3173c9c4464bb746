package coord_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

// On-demand instances take the GPU settings spot bids take, checked against
// the same ranges (cards 150-450 W, host maximum 400 W, core locks
// 300-2500 MHz, memory offsets -500..500 MHz, no memory locks), and the
// agent gets them with the assignment.
func TestInstanceGPUSettings(t *testing.T) {
	e := newEnv(t)
	maxW := 400
	must(e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{MaxPowerW: &maxW,
		CoreLockMHz: &market.ClockRange{Min: 300, Max: 2500}, MemOffsetMHz: &market.ClockRange{Min: -500, Max: 500}}))
	base := func() market.CreateInstanceRequest {
		return market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 2, Command: []string{"sleep", "60"}}
	}
	for _, tc := range []struct {
		name string
		edit func(r *market.CreateInstanceRequest)
		msg  string // "" for a valid request
	}{
		{"none", func(r *market.CreateInstanceRequest) {}, ""},
		{"power and clocks for all GPUs", func(r *market.CreateInstanceRequest) {
			r.PowerLimitW, r.Clocks = 300, market.Clocks{CoreLockMHz: 1800, MemOffsetMHz: -200}
		}, ""},
		{"clocks per GPU", func(r *market.CreateInstanceRequest) {
			r.GPUClocks = []market.Clocks{{CoreLockMHz: 1800}, {CoreLockMHz: 2100, MemOffsetMHz: 500}}
		}, ""},
		{"power at the card minimum", func(r *market.CreateInstanceRequest) { r.PowerLimitW = 150 }, ""},
		{"power below the card minimum", func(r *market.CreateInstanceRequest) { r.PowerLimitW = 100 },
			"power limit 100 W is below this machine's minimum of 150 W; it allows 150 to 400 W"},
		{"power above the host maximum", func(r *market.CreateInstanceRequest) { r.PowerLimitW = 420 },
			"power limit 420 W is above this machine's maximum of 400 W; it allows 150 to 400 W"},
		{"negative power", func(r *market.CreateInstanceRequest) { r.PowerLimitW = -5 }, "power limit must not be negative, got -5 W"},
		{"core lock outside the range", func(r *market.CreateInstanceRequest) { r.Clocks.CoreLockMHz = 3000 },
			"core clock lock 3000 MHz is outside this machine's allowed range of 300 to 2500 MHz"},
		{"memory lock not allowed", func(r *market.CreateInstanceRequest) { r.Clocks.MemLockMHz = 9000 },
			"memory clock lock 9000 MHz is not allowed: this machine allows no memory clock lock"},
		{"offset below the range", func(r *market.CreateInstanceRequest) { r.Clocks.MemOffsetMHz = -800 },
			"memory clock offset -800 MHz is outside this machine's allowed range of -500 to 500 MHz"},
		{"one GPU of two out of range", func(r *market.CreateInstanceRequest) {
			r.GPUClocks = []market.Clocks{{CoreLockMHz: 1800}, {CoreLockMHz: 200}}
		}, "GPU 2 of the instance: core clock lock 200 MHz is outside this machine's allowed range of 300 to 2500 MHz"},
		{"clocks for fewer GPUs than asked", func(r *market.CreateInstanceRequest) {
			r.GPUClocks = []market.Clocks{{CoreLockMHz: 1800}, {CoreLockMHz: 1800}, {CoreLockMHz: 1800}}
		}, "clock settings are given for 3 GPUs but 2 GPUs are asked for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := base()
			tc.edit(&req)
			inst, err := e.svc.CreateInstance(e.ctx, e.renter, req)
			if tc.msg != "" {
				wantKind(t, err, market.Invalid, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				inst := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
				e.report(inst, market.ObservedStopped) // frees the GPUs
			})
			want := market.Instance{PowerLimitW: req.PowerLimitW, Clocks: req.Clocks, GPUClocks: req.GPUClocks}
			stored := e.inst(inst.ID)
			got := market.Instance{PowerLimitW: stored.PowerLimitW, Clocks: stored.Clocks, GPUClocks: stored.GPUClocks}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("stored settings (-want +got):\n%s", diff)
			}
			ds := must(e.svc.Desired(e.ctx, e.host, e.mach.ID, -1, 0))
			found := false
			for _, a := range ds.Assignments {
				if a.Instance != inst.ID {
					continue
				}
				found = true
				got := market.Instance{PowerLimitW: a.PowerLimitW, Clocks: a.Clocks, GPUClocks: a.GPUClocks}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("assignment settings (-want +got):\n%s", diff)
				}
			}
			if !found {
				t.Errorf("the desired state has no assignment of %s: %+v", inst.ID, ds.Assignments)
			}
		})
	}
}
