package sqlstore

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/gpumarket/gpumarket/internal/market"
)

// decodeJSON must decode exactly as encoding/json does, fast path or not.
func TestDecodeJSONMatchesEncodingJSON(t *testing.T) {
	ints := []string{"[]", "[0]", "[0,1,2,7]", "[12,3]", "null", "[ 1 ]", "[1,]", "[,1]", "[-1]", "[1.5]", "[99999999999]", "[01]", "{}", "[1,2", ""}
	for _, s := range ints {
		var got, want []int
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("[]int from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
	for _, s := range []string{"[]", "null", `["a","b"]`, "[1]"} {
		var got, want []string
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("[]string from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
	for _, s := range []string{"{}", "null", `{"a":"b"}`, "[]"} {
		var got, want map[string]string
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("map from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
}

// Machines' GPU lists and clock ranges decode as encoding/json decodes
// them, through the fast paths for what json.Marshal writes and without.
func TestDecodeGPUsMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"", "NVIDIA H100 80GB HBM3", "GPU-8f3c", "é ü", "a<b>&c", "quote\"d", "back\\slash", "tab\t", "\xff"}
	var cases []string
	for range 300 {
		gpus := make([]market.GPU, rng.IntN(5))
		for k := range gpus {
			gpus[k] = market.GPU{Index: rng.IntN(20) - 2, UUID: words[rng.IntN(len(words))], Model: words[rng.IntN(len(words))],
				VRAMMiB: rng.Int64N(1 << 40), MinPowerW: rng.IntN(3) * 100, DefaultPowerW: rng.IntN(800), MaxPowerW: rng.IntN(800) - 1,
				PCIeGen: rng.IntN(2) * 5, PCIeWidth: rng.IntN(2) * 16, MIG: rng.IntN(2) == 0}
		}
		b, err := json.Marshal(gpus)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, string(b))
		if _, ok := parseGPUs(string(b)); !ok && !strings.Contains(string(b), `\`) {
			t.Errorf("the fast path refused %s, as json.Marshal wrote it without escapes", b)
		}
	}
	one := `{"index":0,"uuid":"u","model":"m","vram_mib":1,"min_power_w":2,"default_power_w":3,"max_power_w":4}`
	cases = append(cases, "null", "[]", "[ ]", "["+one+"]", "["+one+","+one+"]", "["+one+"]x", "["+one, "["+one+",]",
		`[{"uuid":"u","index":0}]`, `[{"index":0 ,"uuid":"u"}]`, `[{"index":01,"uuid":"u","model":"m","vram_mib":1,"min_power_w":2,"default_power_w":3,"max_power_w":4}]`,
		`[{"index":-0,"uuid":"u","model":"m","vram_mib":1,"min_power_w":2,"default_power_w":3,"max_power_w":4}]`,
		`[{"index":0,"uuid":"u","model":"m","vram_mib":1,"min_power_w":2,"default_power_w":3,"max_power_w":4,"mig":false}]`,
		`[{"index":0,"uuid":"u","model":"m","vram_mib":1,"min_power_w":2,"default_power_w":3,"max_power_w":4,"extra":1}]`,
		`[{"index":99999999999999999999,"uuid":"u","model":"m","vram_mib":1,"min_power_w":2,"default_power_w":3,"max_power_w":4}]`,
		`[{"index":1.5,"uuid":"u","model":"m","vram_mib":1,"min_power_w":2,"default_power_w":3,"max_power_w":4}]`)
	for _, s := range cases {
		var got, want []market.GPU
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("GPUs from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
	for _, s := range []string{noClockRanges, "null", "{}", `{"core_lock_mhz":{"min":100,"max":200}}`} {
		got, want := clockRanges{}, clockRanges{}
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || got != want {
			t.Errorf("clock ranges from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
}
