package fake

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gpumarket/gpumarket/internal/market"
)

func TestParse(t *testing.T) {
	type short struct {
		Index int
		Model string
		VRAM  int64
		MinW  int
		DefW  int
		MaxW  int
	}
	h100 := func(i int) short { return short{i, "NVIDIA H100 80GB HBM3", 81559, 200, 700, 700} }
	r4090 := func(i int) short { return short{i, "NVIDIA GeForce RTX 4090", 24564, 150, 450, 450} }
	r3090 := func(i int) short { return short{i, "NVIDIA GeForce RTX 3090", 24576, 100, 350, 350} }
	tests := []struct {
		spec string
		want []short
	}{
		{"4xRTX 4090", []short{r4090(0), r4090(1), r4090(2), r4090(3)}},
		{"RTX 4090", []short{r4090(0)}},
		{"2xH100 80GB,1xRTX 3090", []short{h100(0), h100(1), r3090(2)}},
		{" 1X rtx_4090 , 1xNVIDIA GeForce RTX 3090 ", []short{r4090(0), r3090(1)}},
		{"2xH100 SXM", []short{h100(0), h100(1)}},
		{"4090", []short{r4090(0)}},
		{"1xA100-SXM4-80GB", []short{{0, "NVIDIA A100-SXM4-80GB", 81920, 100, 400, 400}}},
		{"l40s", []short{{0, "NVIDIA L40S", 46068, 100, 350, 350}}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			gpus, err := Parse(tt.spec, "seed")
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.spec, err)
			}
			var got []short
			seen := map[string]bool{}
			for _, g := range gpus {
				got = append(got, short{g.Index, g.Model, g.VRAMMiB, g.MinPowerW, g.DefaultPowerW, g.MaxPowerW})
				if !strings.HasPrefix(g.UUID, "GPU-fake-") || seen[g.UUID] {
					t.Errorf("UUID %q: want a unique GPU-fake- prefixed UUID", g.UUID)
				}
				seen[g.UUID] = true
				if g.PCIeGen == 0 || g.PCIeWidth != 16 {
					t.Errorf("GPU %d PCIe = gen %d x%d, want set", g.Index, g.PCIeGen, g.PCIeWidth)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.spec, diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		spec string
		want string // substring of the message
	}{
		{"", "empty GPU spec"},
		{"0xRTX 4090", "GPU count must be at least 1, got 0"},
		{"x", "missing count and model"},
		{"4x", "missing model"},
		{"4", "without a model"},
		{"4xNoSuchGPU", `unknown GPU model "NoSuchGPU"; known models: RTX 4090, RTX 3090, A100 80GB, H100 80GB, L40S`},
		{"RTX 4090,,RTX 3090", "empty item"},
		{"65xRTX 4090", "more than 64 GPUs"},
		{"99999999999999999999xRTX 4090", "GPU count must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := Parse(tt.spec, "seed")
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want one containing %q", tt.spec, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.spec, err, tt.want)
			}
			if !market.IsKind(err, market.Invalid) {
				t.Errorf("Parse(%q) error kind = %v, want invalid", tt.spec, market.KindOf(err))
			}
		})
	}
}

func TestUUIDsStable(t *testing.T) {
	a, err := Parse("2xRTX 4090", "host-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse("2x rtx 4090", "host-1")
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed and spec gave different GPUs (-first +second):\n%s", diff)
	}
	c, _ := Parse("2xRTX 4090", "host-2")
	if a[0].UUID == c[0].UUID {
		t.Errorf("different seeds gave the same UUID %q", a[0].UUID)
	}
}
