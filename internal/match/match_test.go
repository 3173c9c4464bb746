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

func TestSearch(t *testing.T) {
	offline := machine("m-off", 4, "RTX 4090", 1)
	offline.Online = false
	unlisted := machine("m-unl", 4, "RTX 4090", 1)
	unlisted.Listed = false
	machines := []market.Machine{
		machine("m-b", 4, "RTX 4090", 500_000),
		machine("m-a", 2, "RTX 4090", 500_000),
		machine("m-c", 8, "H100 80GB HBM3", 2_000_000),
		machine("m-full", 2, "RTX 4090", 100_000, 0, 1),
		offline, unlisted,
	}
	ids := func(os []market.Offer) []market.MachineID {
		var out []market.MachineID
		for _, o := range os {
			out = append(out, o.Machine)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    market.OfferFilter
		want []market.MachineID
	}{
		{"all rentable, cheapest then most free", market.OfferFilter{}, []market.MachineID{"m-b", "m-a", "m-c"}},
		{"model any spelling", market.OfferFilter{GPUName: "rtx_4090"}, []market.MachineID{"m-b", "m-a"}},
		{"gpu count", market.OfferFilter{MinGPUs: 3}, []market.MachineID{"m-b", "m-c"}},
		{"max price", market.OfferFilter{MaxPrice: 1_000_000}, []market.MachineID{"m-b", "m-a"}},
		{"24 GB matches a 4090", market.OfferFilter{MinGPURAMGB: 24}, []market.MachineID{"m-b", "m-a", "m-c"}},
		{"25 GB does not", market.OfferFilter{MinGPURAMGB: 25}, nil},
		{"nothing", market.OfferFilter{GPUName: "A100"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ids(Search(machines, tc.f))); diff != "" {
				t.Errorf("Search (-want +got):\n%s", diff)
			}
		})
	}
}
