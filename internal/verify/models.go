package verify

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

//go:embed models.json
var modelsJSON []byte

// Model is one known GPU model: the facts a report must agree with and the
// compute challenge it gets.
type Model struct {
	Name             string   `json:"name"` // as nvidia-smi names it
	Aliases          []string `json:"aliases"`
	VRAMMiB          int64    `json:"vram_mib"`
	PowerW           [2]int   `json:"power_w"` // reported power limits must lie in this range
	PCIeGenMax       int      `json:"pcie_gen_max"`
	MemBandwidthGBps int      `json:"mem_bandwidth_gbps"`
	FP32TFLOPS       float64  `json:"fp32_tflops"`
	Envelope
}

// Envelope is a challenge's size and the throughput accepted for it, in
// 32-bit multiply-adds per second.
type Envelope struct {
	TileSize int     `json:"tile_size"`
	Tiles    int     `json:"tiles"`
	Samples  int     `json:"samples"`
	MinRate  float64 `json:"min_rate"`
	MaxRate  float64 `json:"max_rate"`
}

// Work is the number of multiply-adds of a task of this size.
func (e Envelope) Work() int64 {
	return int64(e.Tiles) * int64(e.TileSize) * int64(e.TileSize) * int64(e.TileSize)
}

// Table is the model table: the known models, the envelope of fake GPUs
// and the network allowance added to every challenge deadline.
type Table struct {
	GraceMS int      `json:"grace_ms"`
	Fake    Envelope `json:"fake"`
	Models  []Model  `json:"models"`

	byName map[string]int // normalised name or alias to its model's place in Models (ParseTable)
}

// Grace is the time allowed on top of the compute time for the challenge
// to travel to the agent and the commitment back.
func (t *Table) Grace() time.Duration { return time.Duration(t.GraceMS) * time.Millisecond }

var defaultTable = sync.OnceValues(func() (*Table, error) { return ParseTable(modelsJSON) })

// DefaultTable returns the table embedded from models.json.
func DefaultTable() (*Table, error) { return defaultTable() }

// ParseTable reads a model table and checks that it makes sense.
func ParseTable(data []byte) (*Table, error) {
	var t Table
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("parse model table: %w", err)
	}
	if t.GraceMS < 0 {
		return nil, fmt.Errorf("model table: grace_ms %d is negative", t.GraceMS)
	}
	if err := t.Fake.validate(); err != nil {
		return nil, fmt.Errorf("model table: fake: %w", err)
	}
	t.byName = map[string]int{}
	for i, m := range t.Models {
		if m.Name == "" || m.VRAMMiB <= 0 || m.PowerW[0] <= 0 || m.PowerW[0] > m.PowerW[1] || m.PCIeGenMax <= 0 {
			return nil, fmt.Errorf("model table: %q needs a name, vram_mib, power_w [low, high] and pcie_gen_max", m.Name)
		}
		if err := m.Envelope.validate(); err != nil {
			return nil, fmt.Errorf("model table: %s: %w", m.Name, err)
		}
		for _, n := range append([]string{m.Name}, m.Aliases...) {
			k := NormName(n)
			if other, ok := t.byName[k]; ok && other != i {
				return nil, fmt.Errorf("model table: name %q is used by both %s and %s", n, t.Models[other].Name, m.Name)
			}
			t.byName[k] = i
		}
	}
	return &t, nil
}

func (e Envelope) validate() error {
	switch {
	case e.TileSize < 8 || e.TileSize > 1024:
		return fmt.Errorf("tile_size %d must be between 8 and 1024", e.TileSize)
	case e.Tiles < 2 || e.Tiles > 1<<24 || bits.OnesCount(uint(e.Tiles)) != 1:
		return fmt.Errorf("tiles %d must be a power of two between 2 and 2^24", e.Tiles)
	case e.Samples < 1 || e.Samples > e.Tiles:
		return fmt.Errorf("samples %d must be between 1 and tiles", e.Samples)
	case e.MinRate <= 0 || e.MaxRate <= e.MinRate:
		return fmt.Errorf("min_rate %g and max_rate %g must be positive, min below max", e.MinRate, e.MaxRate)
	}
	return nil
}

// NormName normalises a model name for lookups: lower case, "-" and "_"
// as spaces, without the NVIDIA and GeForce prefixes.
func NormName(s string) string {
	s = strings.ToLower(s)
	s = nameSeparators.Replace(s)
	s = strings.Join(strings.Fields(s), " ")
	s = strings.TrimPrefix(s, "nvidia ")
	s = strings.TrimPrefix(s, "geforce ")
	return s
}

// Lookup finds a model by its name or an alias.
func (t *Table) Lookup(name string) (Model, bool) {
	n := NormName(name)
	if t.byName != nil {
		if i, ok := t.byName[n]; ok {
			return t.Models[i], true
		}
		return Model{}, false
	}
	for _, m := range t.Models { // a Table not made by ParseTable
		if NormName(m.Name) == n {
			return m, true
		}
		for _, a := range m.Aliases {
			if NormName(a) == n {
				return m, true
			}
		}
	}
	return Model{}, false
}

// FakeUUIDPrefix starts the UUIDs of GPUs made up by internal/gpu/fake.
const FakeUUIDPrefix = "GPU-fake-"

// IsFake reports whether a GPU is a made-up one.
func IsFake(g market.GPU) bool { return strings.HasPrefix(g.UUID, FakeUUIDPrefix) }

// vramTolerance is how far below the model's memory size a report may be:
// drivers reserve a little, and ECC takes a few percent.
const vramTolerance = 0.07

// CheckSpec returns why a GPU's report is impossible for its model, or
// nothing. An unknown model is not impossible, only unverifiable; see
// Plan.
func (t *Table) CheckSpec(g market.GPU) []string {
	m, ok := t.Lookup(g.Model)
	if !ok {
		return nil
	}
	var why []string
	lo := int64(float64(m.VRAMMiB) * (1 - vramTolerance))
	if g.VRAMMiB < lo || g.VRAMMiB > m.VRAMMiB+m.VRAMMiB/100 {
		why = append(why, fmt.Sprintf("GPU %d reports %d MiB of memory, but a %s has %d MiB", g.Index, g.VRAMMiB, m.Name, m.VRAMMiB))
	}
	for _, p := range []struct {
		what string
		w    int
	}{{"minimum", g.MinPowerW}, {"default", g.DefaultPowerW}, {"maximum", g.MaxPowerW}} {
		if p.w != 0 && (p.w < m.PowerW[0] || p.w > m.PowerW[1]) {
			why = append(why, fmt.Sprintf("GPU %d reports a %s power limit of %d W, outside the %d-%d W a %s allows", g.Index, p.what, p.w, m.PowerW[0], m.PowerW[1], m.Name))
		}
	}
	if g.PCIeGen > m.PCIeGenMax {
		why = append(why, fmt.Sprintf("GPU %d reports PCIe gen %d, but a %s supports at most gen %d", g.Index, g.PCIeGen, m.Name, m.PCIeGenMax))
	}
	return why
}

// Plan returns the challenge for one GPU: its size and accepted envelope.
// Fake GPUs get the CPU path's envelope when allowFake is set and are
// refused otherwise; an unknown model is refused with how to add it.
func (t *Table) Plan(g market.GPU, allowFake bool) (market.CheckGPU, error) {
	c := market.CheckGPU{Index: g.Index, UUID: g.UUID, Model: g.Model}
	var e Envelope
	switch m, ok := t.Lookup(g.Model); {
	case IsFake(g) && !allowFake:
		return c, fmt.Errorf("GPU %d (%s) is a fake GPU; this coordinator accepts only real GPUs", g.Index, g.UUID)
	case !ok:
		return c, fmt.Errorf("GPU %d: unknown model %q; it cannot be verified until it is added to the model table (internal/verify/models.json)", g.Index, g.Model)
	case IsFake(g):
		e = t.Fake
	default:
		e = m.Envelope
	}
	c.TileSize, c.Tiles, c.Samples, c.MinRate, c.MaxRate = e.TileSize, e.Tiles, e.Samples, e.MinRate, e.MaxRate
	c.Work = e.Work()
	return c, nil
}

// Allowed is how long a GPU's challenge may take from issue to commitment:
// its work at the envelope's lowest rate plus the table's grace.
func (t *Table) Allowed(c market.CheckGPU) time.Duration {
	return time.Duration(float64(c.Work)/c.MinRate*float64(time.Second)) + t.Grace()
}

// Judge turns the time from issue to commitment into a measured rate and
// says whether it lies in the GPU's envelope.
func (t *Table) Judge(c market.CheckGPU, elapsed time.Duration) (float64, error) {
	secs := max(elapsed.Seconds(), 1e-6)
	rate := float64(c.Work) / secs
	if allowed := t.Allowed(c); elapsed > allowed {
		return rate, fmt.Errorf("GPU %d answered in %s, but a %s must answer within %s (%.3g multiply-adds/s measured, at least %.3g expected): this is not the GPU it claims to be, or it was busy",
			c.Index, elapsed.Round(time.Millisecond), c.Model, allowed.Round(time.Millisecond), rate, c.MinRate)
	}
	if rate > c.MaxRate {
		return rate, fmt.Errorf("GPU %d answered at %.3g multiply-adds/s, faster than a %s can (at most %.3g): it is not the GPU it claims to be",
			c.Index, rate, c.Model, c.MaxRate)
	}
	return rate, nil
}

// nameSeparators turns "-" and "_" into spaces (a Replacer is built once:
// building one costs more than using it).
var nameSeparators = strings.NewReplacer("_", " ", "-", " ")
