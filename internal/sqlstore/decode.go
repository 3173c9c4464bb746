package sqlstore

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gpumarket/gpumarket/internal/market"
)

// decodeJSON decodes the stored JSON column s into v as json.Unmarshal
// does, with fast paths for what most rows hold: null, empty lists and
// maps, lists of GPU indices and machines' GPUs. Reading 50,000 instances
// spent more time in encoding/json than in SQLite.
func decodeJSON(s string, v any) error {
	if s == "null" {
		return nil // json.Unmarshal leaves v as it is
	}
	switch p := v.(type) {
	case *[]int:
		if ints, ok := parseInts(s); ok {
			*p = ints
			return nil
		}
	case *[]string:
		if s == "[]" {
			*p = []string{}
			return nil
		}
	case *map[string]string:
		if s == "{}" {
			*p = map[string]string{}
			return nil
		}
	case *clockRanges:
		if s == noClockRanges {
			*p = clockRanges{}
			return nil
		}
	case *[]market.GPU:
		if gpus, ok := parseGPUs(s); ok {
			*p = gpus
			return nil
		}
	}
	return json.Unmarshal([]byte(s), v)
}

// parseInts parses a JSON list of non-negative integers of up to 9 digits
// without spaces, as encoding/json writes GPU indices; ok is false for
// anything else (which decodeJSON leaves to encoding/json).
func parseInts(s string) (out []int, ok bool) {
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return nil, false
	}
	out = []int{}
	body := s[1 : len(s)-1]
	if body == "" {
		return out, true
	}
	start := 0
	for i := 0; i <= len(body); i++ {
		if i < len(body) && body[i] != ',' {
			if body[i] < '0' || body[i] > '9' {
				return nil, false
			}
			continue
		}
		if i == start || i-start > 9 || (body[start] == '0' && i-start > 1) {
			return nil, false
		}
		n, err := strconv.Atoi(body[start:i])
		if err != nil {
			return nil, false
		}
		out = append(out, n)
		start = i + 1
	}
	return out, true
}

// noClockRanges is the JSON of a machine's spot clock ranges when it sets
// none, as most do.
var noClockRanges = func() string {
	b, _ := json.Marshal(clockRanges{})
	return string(b)
}()

// parseGPUs parses a machine's list of GPUs as encoding/json writes
// []market.GPU: the fields in their order, no spaces, strings without
// escapes. ok is false for anything else, which decodeJSON leaves to
// encoding/json. Refreshing the offer index after a batch of creates spent
// most of its time decoding the machines' GPU lists.
func parseGPUs(s string) (out []market.GPU, ok bool) {
	p := gpuParser{s: s}
	if !p.lit("[") {
		return nil, false
	}
	out = []market.GPU{}
	if p.lit("]") {
		return out, p.s == ""
	}
	for {
		var g market.GPU
		var vram int64
		ok := p.lit(`{"index":`) && p.int(&g.Index) &&
			p.lit(`,"uuid":`) && p.str(&g.UUID) &&
			p.lit(`,"model":`) && p.str(&g.Model) &&
			p.lit(`,"vram_mib":`) && p.int64(&vram) &&
			p.lit(`,"min_power_w":`) && p.int(&g.MinPowerW) &&
			p.lit(`,"default_power_w":`) && p.int(&g.DefaultPowerW) &&
			p.lit(`,"max_power_w":`) && p.int(&g.MaxPowerW)
		if !ok {
			return nil, false
		}
		g.VRAMMiB = vram
		if p.lit(`,"pcie_gen":`) && !p.int(&g.PCIeGen) {
			return nil, false
		}
		if p.lit(`,"pcie_width":`) && !p.int(&g.PCIeWidth) {
			return nil, false
		}
		if p.lit(`,"mig":`) {
			if !p.lit("true") {
				return nil, false
			}
			g.MIG = true
		}
		if !p.lit("}") {
			return nil, false
		}
		out = append(out, g)
		if p.lit("]") {
			return out, p.s == ""
		}
		if !p.lit(",") {
			return nil, false
		}
	}
}

// gpuParser consumes s from the front.
type gpuParser struct{ s string }

func (p *gpuParser) lit(l string) bool {
	if !strings.HasPrefix(p.s, l) {
		return false
	}
	p.s = p.s[len(l):]
	return true
}

// str reads a string without escapes.
func (p *gpuParser) str(v *string) bool {
	if !p.lit(`"`) {
		return false
	}
	end := strings.IndexAny(p.s, `"\`)
	if end < 0 || p.s[end] != '"' || !utf8.ValidString(p.s[:end]) {
		return false
	}
	*v, p.s = p.s[:end], p.s[end+1:]
	return true
}

func (p *gpuParser) int64(v *int64) bool {
	end := 0
	for end < len(p.s) && (p.s[end] == '-' || (p.s[end] >= '0' && p.s[end] <= '9')) {
		end++
	}
	n, err := strconv.ParseInt(p.s[:end], 10, 64)
	if err != nil || (end > 1 && (p.s[0] == '0' || p.s[:2] == "-0")) {
		return false
	}
	*v, p.s = n, p.s[end:]
	return true
}

func (p *gpuParser) int(v *int) bool {
	var n int64
	if !p.int64(&n) || int64(int(n)) != n {
		return false
	}
	*v = int(n)
	return true
}
