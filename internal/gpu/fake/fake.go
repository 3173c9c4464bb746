// Package fake makes up GPUs from a short spec such as "2xRTX 4090" for
// development machines and tests that have no NVIDIA GPU.
//
// It imports only internal/market.
package fake

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// Model is a GPU model the fake knows, with the figures nvidia-smi reports
// for the reference card.
type Model struct {
	Name          string // as nvidia-smi names it
	Short         string // as a user types it in a spec
	VRAMMiB       int64
	MinPowerW     int
	DefaultPowerW int
	MaxPowerW     int
	PCIeGen       int
	PCIeWidth     int
	aliases       []string // normalized, besides Short and Name
}

var models = []Model{
	{Name: "NVIDIA GeForce RTX 4090", Short: "RTX 4090", VRAMMiB: 24564, MinPowerW: 150, DefaultPowerW: 450, MaxPowerW: 450, PCIeGen: 4, PCIeWidth: 16,
		aliases: []string{"4090"}},
	{Name: "NVIDIA GeForce RTX 3090", Short: "RTX 3090", VRAMMiB: 24576, MinPowerW: 100, DefaultPowerW: 350, MaxPowerW: 350, PCIeGen: 4, PCIeWidth: 16,
		aliases: []string{"3090"}},
	{Name: "NVIDIA A100-SXM4-80GB", Short: "A100 80GB", VRAMMiB: 81920, MinPowerW: 100, DefaultPowerW: 400, MaxPowerW: 400, PCIeGen: 4, PCIeWidth: 16,
		aliases: []string{"a100", "a100 sxm4 80gb", "a100 sxm4"}},
	{Name: "NVIDIA H100 80GB HBM3", Short: "H100 80GB", VRAMMiB: 81559, MinPowerW: 200, DefaultPowerW: 700, MaxPowerW: 700, PCIeGen: 5, PCIeWidth: 16,
		aliases: []string{"h100", "h100 sxm", "h100 sxm5", "h100 sxm5 80gb", "h100 80gb sxm"}},
	{Name: "NVIDIA L40S", Short: "L40S", VRAMMiB: 46068, MinPowerW: 100, DefaultPowerW: 350, MaxPowerW: 350, PCIeGen: 4, PCIeWidth: 16},
}

// Models returns the models Parse accepts.
func Models() []Model { return append([]Model(nil), models...) }

// maxGPUs bounds one spec; no real machine has more.
const maxGPUs = 64

// Parse turns a spec into GPUs numbered from 0. A spec is a comma-separated
// list of "NxMODEL" or "MODEL" (N = 1), for example "2xH100 80GB,1xRTX 3090".
// Model names are case-insensitive; "_" and "-" count as spaces and the
// "NVIDIA" and "GeForce" prefixes are optional. UUIDs are derived from seed,
// the index and the model, so the same seed and spec give the same UUIDs
// across restarts.
func Parse(spec, seed string) ([]market.GPU, error) {
	const op = "parse fake gpus"
	if strings.TrimSpace(spec) == "" {
		return nil, market.Errorf(op, market.Invalid, `empty GPU spec; use for example "2xRTX 4090"`)
	}
	var gpus []market.GPU
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		n, name, err := 1, item, error(nil)
		if _, known := lookup(item); !known { // "4090" is a model, not a count
			n, name, err = splitCount(item)
		}
		if err != nil {
			return nil, market.Errorf(op, market.Invalid, "%q: %v", item, err)
		}
		m, ok := lookup(name)
		if !ok {
			return nil, market.Errorf(op, market.Invalid, "%q: unknown GPU model %q; known models: %s", item, name, knownList())
		}
		if len(gpus)+n > maxGPUs {
			return nil, market.Errorf(op, market.Invalid, "%q: more than %d GPUs in one machine", spec, maxGPUs)
		}
		for range n {
			i := len(gpus)
			gpus = append(gpus, market.GPU{
				Index:         i,
				UUID:          uuid(seed, i, m.Name),
				Model:         m.Name,
				VRAMMiB:       m.VRAMMiB,
				MinPowerW:     m.MinPowerW,
				DefaultPowerW: m.DefaultPowerW,
				MaxPowerW:     m.MaxPowerW,
				PCIeGen:       m.PCIeGen,
				PCIeWidth:     m.PCIeWidth,
			})
		}
	}
	return gpus, nil
}

// splitCount splits "4xRTX 4090" into 4 and "RTX 4090". An item without a
// leading count is one GPU.
func splitCount(item string) (int, string, error) {
	if item == "" {
		return 0, "", fmt.Errorf(`empty item; use "NxMODEL" such as "2xRTX 4090"`)
	}
	digits := 0
	for digits < len(item) && item[digits] >= '0' && item[digits] <= '9' {
		digits++
	}
	rest := item[digits:]
	if digits == 0 || len(rest) == 0 || (rest[0] != 'x' && rest[0] != 'X') {
		if digits > 0 && len(rest) == 0 {
			return 0, "", fmt.Errorf(`count %s without a model; use "NxMODEL" such as "2xRTX 4090"`, item)
		}
		if item == "x" || item == "X" {
			return 0, "", fmt.Errorf(`missing count and model; use "NxMODEL" such as "2xRTX 4090"`)
		}
		return 1, item, nil // a bare model, possibly one that starts with digits ("4090")
	}
	n, err := strconv.Atoi(item[:digits])
	if err != nil || n < 1 {
		return 0, "", fmt.Errorf("GPU count must be at least 1, got %s", item[:digits])
	}
	name := strings.TrimSpace(rest[1:])
	if name == "" {
		return 0, "", fmt.Errorf(`missing model after %q; use "NxMODEL" such as "2xRTX 4090"`, item)
	}
	return n, name, nil
}

func lookup(name string) (Model, bool) {
	n := verify.NormName(name)
	for _, m := range models {
		if n == verify.NormName(m.Short) || n == verify.NormName(m.Name) {
			return m, true
		}
		for _, a := range m.aliases {
			if n == a {
				return m, true
			}
		}
	}
	return Model{}, false
}

func knownList() string {
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = m.Short
	}
	return strings.Join(names, ", ")
}

// uuid looks like nvidia-smi's "GPU-xxxxxxxx-..." but says it is fake, so
// verification and operators can tell.
func uuid(seed string, index int, model string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%s", seed, index, model))
	h := hex.EncodeToString(sum[:16])
	return "GPU-fake-" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
