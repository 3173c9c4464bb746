package fake

import (
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Readings follow load: busy GPUs work near their power limit, idle ones
// do not, across many moments.
func TestSampleFollowsLoad(t *testing.T) {
	gpus, err := Parse("8xH100 80GB", "seed")
	if err != nil {
		t.Fatal(err)
	}
	c := NewControl(gpus)
	busy := []string{gpus[1].UUID, gpus[6].UUID}
	c.SetBusy(busy, true)
	c.SetBusy([]string{"GPU-unknown"}, true) // ignored
	if err := c.Apply(t.Context(), []string{gpus[6].UUID}, 500, market.Clocks{CoreLockMHz: 1800}); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for step := range 50 {
		at := base.Add(time.Duration(step) * 3 * time.Second)
		c.now = func() time.Time { return at }
		got, err := c.Sample(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(gpus) {
			t.Fatalf("%d readings, want %d", len(got), len(gpus))
		}
		for i, s := range got {
			g := gpus[i]
			if s.Index != i || s.UUID != g.UUID || !s.At.Equal(at) {
				t.Fatalf("reading %d = %+v, want GPU %d (%s) at %v", i, s, i, g.UUID, at)
			}
			limit := float64(g.DefaultPowerW)
			if i == 6 {
				limit = 500
			}
			if s.PowerLimitW != int(limit) {
				t.Errorf("GPU %d power limit %d, want %v", i, s.PowerLimitW, limit)
			}
			if i == 1 || i == 6 {
				if s.UtilPct < 85 || s.UtilPct > 99 || s.PowerW < 0.8*limit || s.PowerW > limit ||
					s.MemUsedMiB < g.VRAMMiB/2 || s.MemUsedMiB > g.VRAMMiB || s.TempC < 60 {
					t.Errorf("busy GPU %d at %v: %+v", i, at, s)
				}
				if i == 6 && s.CoreMHz != 1800 {
					t.Errorf("GPU 6 core clock %d, want its 1800 MHz lock", s.CoreMHz)
				}
				continue
			}
			if s.UtilPct != 0 || s.PowerW > 0.15*limit || s.PowerW <= 0 || s.MemUsedMiB > 16 || s.TempC > 40 || s.CoreMHz > 300 {
				t.Errorf("idle GPU %d at %v: %+v", i, at, s)
			}
		}
	}
	c.SetBusy(busy, false)
	got, _ := c.Sample(t.Context())
	if got[1].UtilPct != 0 {
		t.Errorf("GPU 1 after its workload ended: %+v, want idle", got[1])
	}
}
