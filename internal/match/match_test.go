package match

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gpumarket/gpumarket/internal/market"
)

func machine(id string, n int, model string, price market.Money, used ...int) market.Machine {
	m := market.Machine{ID: market.MachineID(id), Online: true, Listed: true, PricePerGPUHour: price, UsedGPUs: used, Hardware: market.Hardware{Runner: "process"}}
	for i := range n {
		m.GPUs = append(m.GPUs, market.GPU{Index: i, Model: model, VRAMMiB: 24564})
	}
	return m
}

func TestFit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		m        market.Machine
		n        int
		want     []int
		wantKind market.Kind
	}{
		{"all free", machine("m", 4, "RTX 4090", 1), 2, []int{0, 1}, 0},
		{"skips used", machine("m", 4, "RTX 4090", 1, 0, 2), 2, []int{1, 3}, 0},
		{"exactly the rest", machine("m", 4, "RTX 4090", 1, 1, 2, 3), 1, []int{0}, 0},
		{"too many free asked", machine("m", 4, "RTX 4090", 1, 0), 4, nil, market.Conflict},
		{"more than machine", machine("m", 4, "RTX 4090", 1), 5, nil, market.Invalid},
		{"zero", machine("m", 4, "RTX 4090", 1), 0, nil, market.Invalid},
		{"negative", machine("m", 4, "RTX 4090", 1), -1, nil, market.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Fit(tc.m, tc.n)
			if tc.wantKind != 0 {
				if !market.IsKind(err, tc.wantKind) {
					t.Fatalf("Fit err = %v, want kind %v", err, tc.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fit: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Fit (-want +got):\n%s", diff)
			}
		})
	}
}
