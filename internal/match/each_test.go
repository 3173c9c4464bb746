package match

import (
	"slices"
	"testing"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestEachVisitsEveryMachine(t *testing.T) {
	ix := NewIndex()
	for _, m := range []market.Machine{
		{ID: "m-1", Listed: true, Online: true, Hardware: market.Hardware{GPUs: []market.GPU{{Index: 0, Model: "RTX 4090", VRAMMiB: 24564}}}},
		{ID: "m-2", Listed: false, Online: true, Hardware: market.Hardware{GPUs: []market.GPU{{Index: 0, Model: "L40S", VRAMMiB: 46068}}}},
		{ID: "m-3", Listed: true, Online: false},
	} {
		ix.Upsert(m)
	}
	ix.Remove("m-3")
	var got []market.MachineID
	ix.Each(func(m *market.Machine) { got = append(got, m.ID) })
	slices.Sort(got)
	if want := []market.MachineID{"m-1", "m-2"}; !slices.Equal(got, want) {
		t.Errorf("Each visited %v, want %v (available or not, removed ones left out)", got, want)
	}
}
