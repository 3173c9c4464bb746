package verify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

func table(t testing.TB) *verify.Table {
	t.Helper()
	tab, err := verify.DefaultTable()
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// Every model the fake GPU package reports is in the table, its report
// is consistent, and it gets the fake (CPU) envelope.
func TestFakeModelsAreKnownAndConsistent(t *testing.T) {
	tab := table(t)
	for _, m := range fake.Models() {
		t.Run(m.Short, func(t *testing.T) {
			gpus, err := fake.Parse("2x"+m.Short, "seed")
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range gpus {
				if why := tab.CheckSpec(g); len(why) > 0 {
					t.Errorf("fake %s is inconsistent: %v", m.Name, why)
				}
				c, err := tab.Plan(g, true)
				if err != nil {
					t.Fatal(err)
				}
				if c.TileSize != tab.Fake.TileSize || c.Tiles != tab.Fake.Tiles || c.MinRate != tab.Fake.MinRate {
					t.Errorf("fake %s got envelope %+v, want the fake one %+v", m.Name, c, tab.Fake)
				}
				if _, err := tab.Plan(g, false); err == nil || !strings.Contains(err.Error(), "fake GPU") {
					t.Errorf("a coordinator without fakes must refuse %s, got %v", g.UUID, err)
				}
				real := g
				real.UUID = "GPU-1234"
				c, err = tab.Plan(real, false)
				if err != nil {
					t.Fatal(err)
				}
				if c.MinRate <= tab.Fake.MaxRate/100 {
					t.Errorf("%s real envelope min %g is within CPU speed", m.Name, c.MinRate)
				}
			}
		})
	}
}

func TestCheckSpec(t *testing.T) {
	tab := table(t)
	h100 := market.GPU{Index: 0, UUID: "GPU-1", Model: "NVIDIA H100 80GB HBM3", VRAMMiB: 81559, MinPowerW: 200, DefaultPowerW: 700, MaxPowerW: 700, PCIeGen: 5}
	tests := []struct {
		name string
		edit func(g *market.GPU)
		want []string // substrings, one per reason; nil = consistent
	}{
		{"consistent", func(g *market.GPU) {}, nil},
		{"alias name", func(g *market.GPU) { g.Model = "h100_sxm5" }, nil},
		{"slightly less memory (ECC)", func(g *market.GPU) { g.VRAMMiB = 79000 }, nil},
		{"too little memory", func(g *market.GPU) { g.VRAMMiB = 24576 }, []string{"24576 MiB of memory, but a NVIDIA H100 80GB HBM3 has 81559 MiB"}},
		{"too much memory", func(g *market.GPU) { g.VRAMMiB = 163840 }, []string{"163840 MiB"}},
		{"power above the model", func(g *market.GPU) { g.MaxPowerW = 900 }, []string{"maximum power limit of 900 W, outside the 200-700 W"}},
		{"power below the model", func(g *market.GPU) { g.MinPowerW = 50 }, []string{"minimum power limit of 50 W"}},
		{"pcie too new", func(g *market.GPU) {
			g.Model = "RTX 3090"
			g.VRAMMiB = 24576
			g.MinPowerW, g.DefaultPowerW, g.MaxPowerW = 100, 350, 350
		}, []string{"PCIe gen 5, but a NVIDIA GeForce RTX 3090 supports at most gen 4"}},
		{"several at once", func(g *market.GPU) { g.VRAMMiB = 1000; g.MaxPowerW = 5000 }, []string{"1000 MiB", "5000 W"}},
		{"unknown model is not impossible", func(g *market.GPU) { g.Model = "Voodoo 2" }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := h100
			tc.edit(&g)
			got := tab.CheckSpec(g)
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %d reasons like %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("reason %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestPlanUnknownModel(t *testing.T) {
	_, err := table(t).Plan(market.GPU{UUID: "GPU-9", Model: "Voodoo 2"}, true)
	if err == nil || !strings.Contains(err.Error(), `unknown model "Voodoo 2"`) || !strings.Contains(err.Error(), "models.json") {
		t.Fatalf("got %v", err)
	}
}

func TestParseTableRejectsNonsense(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"bad json", `{`, "parse model table"},
		{"tiles not a power of two", `{"fake":{"tile_size":64,"tiles":10,"samples":2,"min_rate":1,"max_rate":2}}`, "power of two"},
		{"rates reversed", `{"fake":{"tile_size":64,"tiles":16,"samples":2,"min_rate":5,"max_rate":2}}`, "min below max"},
		{"duplicate alias", `{"fake":{"tile_size":64,"tiles":16,"samples":2,"min_rate":1,"max_rate":2},"models":[
			{"name":"A","aliases":["x"],"vram_mib":1,"power_w":[1,2],"pcie_gen_max":4,"tile_size":64,"tiles":16,"samples":2,"min_rate":1,"max_rate":2},
			{"name":"B","aliases":["X"],"vram_mib":1,"power_w":[1,2],"pcie_gen_max":4,"tile_size":64,"tiles":16,"samples":2,"min_rate":1,"max_rate":2}]}`, "used by both A and B"},
		{"missing vram", `{"fake":{"tile_size":64,"tiles":16,"samples":2,"min_rate":1,"max_rate":2},"models":[{"name":"A","power_w":[1,2],"pcie_gen_max":4}]}`, "needs a name, vram_mib"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify.ParseTable([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	tab := table(t)
	fakeGPU := market.GPU{UUID: "GPU-fake-1", Model: "RTX 4090", VRAMMiB: 24564}
	c, err := tab.Plan(fakeGPU, true)
	if err != nil {
		t.Fatal(err)
	}
	h100, err := tab.Plan(market.GPU{UUID: "GPU-1", Model: "H100"}, false)
	if err != nil {
		t.Fatal(err)
	}
	allowed := tab.Allowed(c)
	tests := []struct {
		name    string
		c       market.CheckGPU
		elapsed time.Duration
		want    string // "" passes
	}{
		{"fake at CPU speed", c, 20 * time.Millisecond, ""},
		{"fake just in time", c, allowed, ""},
		{"fake too slow", c, allowed + time.Millisecond, "must answer within"},
		{"impossibly fast", c, time.Nanosecond, "faster than"},
		// A CPU does about 1e9 multiply-adds a second: an H100's task
		// would take it over an hour.
		{"H100 at CPU speed", h100, time.Duration(float64(h100.Work)/1e9) * time.Second, "must answer within"},
		{"H100 at GPU speed", h100, time.Duration(float64(h100.Work) / 8e12 * float64(time.Second)), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rate, err := tab.Judge(tc.c, tc.elapsed)
			if rate <= 0 {
				t.Errorf("rate %g", rate)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
