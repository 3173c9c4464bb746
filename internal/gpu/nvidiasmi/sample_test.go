package nvidiasmi

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gpumarket/gpumarket/internal/market"
)

var sampleAt = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func TestParseSamplesGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/samples/*.csv")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/samples/*.csv: %v", err)
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".csv")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			samples, err := ParseSamples(raw, sampleAt)
			if err != nil {
				t.Fatalf("ParseSamples: %v", err)
			}
			got, err := json.MarshalIndent(samples, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "samples", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("ParseSamples(%s) differs from %s (-want +got):\n%s", in, path, diff)
			}
		})
	}
}

func TestParseSamplesErrors(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"empty", "", "found no GPUs"},
		{"short", "0, GPU-x, 5\n", "line 1: got 3 fields, want 9"},
		{"no uuid", "0, [N/A], 5, 1, 20, 30, 210, 405, 450\n", "GPU 0 has no UUID"},
		{"bad util", "0, GPU-x, busy, 1, 20, 30, 210, 405, 450\n", `utilization.gpu "busy" is not a number`},
		{"util above 100", "0, GPU-x, 130, 1, 20, 30, 210, 405, 450\n", "utilization.gpu 130 is above 100"},
		{"bad clock", "0, GPU-x, 5, 1, 20, 30, 2.1 GHz, 405, 450\n", `clocks.sm "2.1 GHz" is not a whole number`},
		{"driver failure", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", "got 1 fields, want 9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSamples([]byte(tt.in), sampleAt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSamples(%q) = %v, want an error containing %q", tt.in, err, tt.want)
			}
		})
	}
}

// Sample runs nvidia-smi with SampleArgs and stamps the readings.
func TestControlSample(t *testing.T) {
	raw, err := os.ReadFile("testdata/samples/rtx4090-idle.csv")
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	c := Control{Now: func() time.Time { return sampleAt }, Exec: func(_ context.Context, name string, args ...string) ([]byte, error) {
		ran = append([]string{name}, args...)
		return raw, nil
	}}
	got, err := c.Sample(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]string{Binary}, SampleArgs...); !slices.Equal(ran, want) {
		t.Errorf("ran %q, want %q", ran, want)
	}
	want := []market.GPUSample{{Index: 0, UUID: "GPU-b7e2c9a4-1d3f-5e6a-8b0c-9f2e4d6a1c3b", At: sampleAt, UtilPct: 0, MemUsedMiB: 312,
		PowerW: 18.47, TempC: 38, CoreMHz: 210, MemMHz: 405, PowerLimitW: 450}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sample (-want +got):\n%s", diff)
	}
}
