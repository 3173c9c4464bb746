package coord

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestRingBucketsAndWraps(t *testing.T) {
	for _, tc := range []struct {
		name    string
		step    time.Duration
		cap     int
		samples [][2]float64 // unix second, value
		want    [][2]float64 // bucket start, mean
	}{
		{"one per bucket", 10 * time.Second, 5, [][2]float64{{0, 1}, {10, 2}, {20, 3}}, [][2]float64{{0, 1}, {10, 2}, {20, 3}}},
		{"mean within a bucket", 10 * time.Second, 5, [][2]float64{{0, 10}, {3, 20}, {9, 60}, {10, 5}}, [][2]float64{{0, 30}, {10, 5}}},
		{"buckets align to the step", time.Minute, 5, [][2]float64{{59, 1}, {61, 3}, {119, 5}}, [][2]float64{{0, 1}, {60, 4}}},
		{"older samples dropped", 10 * time.Second, 5, [][2]float64{{20, 1}, {5, 100}, {25, 3}}, [][2]float64{{20, 2}}},
		{"gaps stay gaps", 10 * time.Second, 5, [][2]float64{{0, 1}, {100, 2}}, [][2]float64{{0, 1}, {100, 2}}},
		{"overwrites the oldest", 10 * time.Second, 3, [][2]float64{{0, 1}, {10, 2}, {20, 3}, {30, 4}, {40, 5}}, [][2]float64{{20, 3}, {30, 4}, {40, 5}}},
		{"times before 1970 ignored", 10 * time.Second, 3, [][2]float64{{-15, 1}, {5, 3}}, [][2]float64{{0, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(metricTier{step: tc.step, points: tc.cap})
			for _, s := range tc.samples {
				r.add(int64(s[0]), s[1], s[1], s[1], s[1])
			}
			var got [][2]float64
			for _, p := range r.since(math.MinInt64, math.MaxInt64) {
				if p.UtilPct != p.PowerW || p.MemUsedMiB != p.TempC || p.UtilPct != p.TempC {
					t.Errorf("metrics of one point differ: %+v", p)
				}
				got = append(got, [2]float64{float64(p.At.Unix()), p.UtilPct})
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("points (-want +got):\n%s", d)
			}
			if r.len() > tc.cap {
				t.Errorf("ring holds %d buckets, cap %d", r.len(), tc.cap)
			}
		})
	}
}

func TestTierFor(t *testing.T) {
	for _, tc := range []struct {
		window time.Duration
		step   time.Duration
	}{
		{time.Minute, 10 * time.Second},
		{time.Hour, 10 * time.Second},
		{time.Hour + time.Second, 5 * time.Minute},
		{24 * time.Hour, 5 * time.Minute},
		{48 * time.Hour, 5 * time.Minute},
	} {
		if _, got := tierFor(tc.window); got.step != tc.step {
			t.Errorf("window %s: step %s, want %s", tc.window, got.step, tc.step)
		}
	}
}

// TestMetricStoreDownsamples feeds two hours of 10 s samples: the last
// hour is served at 10 s, a day's window at 5 min with each step's mean,
// and memory stays within the tiers' bounds.
func TestMetricStoreDownsamples(t *testing.T) {
	ms := newMetricStore()
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	const m = market.MachineID("m-1")
	for i := range 720 { // 2 h every 10 s; utilisation counts 0..5 in each minute
		at := start.Add(time.Duration(i) * 10 * time.Second)
		ms.record(m, []market.GPUSample{
			{Index: 0, UUID: "GPU-a", UtilPct: float64(i % 6), MemUsedMiB: 100, PowerW: 200, TempC: 50},
			{Index: 1, UUID: "GPU-b", UtilPct: 90, PowerW: math.NaN()},
			{Index: 99, UtilPct: 1}, // beyond any machine: ignored
			{Index: -1, UtilPct: 1}, // ignored
		}, at)
	}
	now := start.Add(2 * time.Hour)

	got, step := ms.series(m, nil, now.Add(-time.Hour), now)
	if step != 10*time.Second || len(got) != 2 {
		t.Fatalf("1 h: step %s, %d series; want 10s, 2", step, len(got))
	}
	if n := len(got[0].Points); n != 360 {
		t.Errorf("1 h at 10 s: %d points, want 360", n)
	}
	if got[0].UUID != "GPU-a" || got[1].Index != 1 || got[1].Points[0].PowerW != 0 {
		t.Errorf("series %d %q, GPU 1 power %v (NaN must become 0)", got[0].Index, got[0].UUID, got[1].Points[0].PowerW)
	}

	got, step = ms.series(m, []int{0}, now.Add(-24*time.Hour), now)
	if step != 5*time.Minute || len(got) != 1 {
		t.Fatalf("24 h: step %s, %d series; want 5m, 1", step, len(got))
	}
	pts := got[0].Points
	if len(pts) != 24 {
		t.Errorf("24 h at 5 min over 2 h of data: %d points, want 24", len(pts))
	}
	for _, p := range pts {
		if math.Abs(p.UtilPct-2.5) > 1e-4 || p.MemUsedMiB != 100 || p.At.Second() != 0 || p.At.Minute()%5 != 0 {
			t.Fatalf("5 minute point %+v; want the mean 2.5 of 0..5 at a whole 5 minutes", p)
		}
	}

	latest := ms.latest(m, nil)
	if len(latest) != 2 || latest[0].Index != 0 || latest[1].Index != 1 || !latest[0].At.Equal(now.Add(-10*time.Second)) {
		t.Errorf("latest %+v", latest)
	}
	if n := ms.machines[m].gpus[0].tiers[0].len(); n != metricTiers[0].points {
		t.Errorf("the 10 s ring holds %d buckets, want its bound %d", n, metricTiers[0].points)
	}

	// A day after its last sample, a machine's series are dropped.
	ms.record("m-2", []market.GPUSample{{Index: 0}}, now.Add(25*time.Hour))
	if _, ok := ms.machines[m]; ok {
		t.Error("series of a machine silent for 25 h were kept")
	}
	if got := ms.latest("m-unknown", nil); got != nil {
		t.Errorf("latest of an unknown machine = %v", got)
	}
}

func TestParseMetricsWindow(t *testing.T) {
	for in, want := range map[string]time.Duration{"": time.Hour, "15m": 15 * time.Minute, "24h": 24 * time.Hour} {
		if got, err := ParseMetricsWindow(in); err != nil || got != want {
			t.Errorf("%q: %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"0s", "-1h", "25h", "soon"} {
		if _, err := ParseMetricsWindow(in); !market.IsKind(err, market.Invalid) {
			t.Errorf("%q: err %v, want Invalid", in, err)
		}
	}
}

// BenchmarkMetricRecord is the cost a report with 8 GPU readings adds to
// the heartbeat path, over 10,000 machines.
//
//	go test -run XXX -bench MetricRecord ./internal/coord/
func BenchmarkMetricRecord(b *testing.B) {
	ms := newMetricStore()
	ids := make([]market.MachineID, 10_000)
	for i := range ids {
		ids[i] = market.MachineID(fmt.Sprintf("m-%05d", i))
	}
	samples := make([]market.GPUSample, 8)
	for i := range samples {
		samples[i] = market.GPUSample{Index: i, UtilPct: 90, MemUsedMiB: 20000, PowerW: 400, TempC: 70}
	}
	at := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	i := 0
	for b.Loop() {
		ms.record(ids[i%len(ids)], samples, at.Add(time.Duration(i)*time.Millisecond))
		i++
	}
}
