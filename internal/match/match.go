// Package match turns machines into offers, filters them for a renter and
// picks the exact GPUs an instance gets. It is pure: machines come in with
// their used GPUs filled in, decisions go out.
//
// It imports only internal/market.
package match

import (
	"cmp"
	"slices"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Rentable reports whether a renter may place work on m now.
func Rentable(m market.Machine) bool {
	return m.Online && m.Listed && !m.Unverified && len(m.GPUs) > 0 && m.PricePerGPUHour > 0
}

// Fit picks n free GPUs of m: the lowest free indices, so that placements
// are deterministic and leave the high end contiguous. It returns an error
// that says how many are free when n do not fit.
func Fit(m market.Machine, n int) ([]int, error) {
	const op = "place instance"
	if n < 1 {
		return nil, market.Errorf(op, market.Invalid, "GPU count must be at least 1, got %d", n)
	}
	if n > len(m.GPUs) {
		return nil, market.Errorf(op, market.Invalid, "machine %s has %d GPUs; you asked for %d", m.ID, len(m.GPUs), n)
	}
	free := m.FreeGPUs()
	if n > len(free) {
		return nil, market.Errorf(op, market.Conflict, "machine %s has %d of %d GPUs free; you asked for %d. Try fewer GPUs or another machine (gpumarket offer search)", m.ID, len(free), len(m.GPUs), n)
	}
	return free[:n], nil
}

// Offer describes a machine to renters.
func Offer(m market.Machine) market.Offer {
	o := market.Offer{
		Machine:         m.ID,
		FreeGPUs:        len(m.FreeGPUs()),
		TotalGPUs:       len(m.GPUs),
		PricePerGPUHour: m.PricePerGPUHour,
		CPUCores:        m.CPUCores,
		RAMMiB:          m.RAMMiB,
		DiskGiB:         m.DiskGiB,
		Region:          m.Region,
		Runner:          m.Runner,
	}
	if len(m.GPUs) > 0 {
		o.GPUModel = gpuModels(m.GPUs)
		o.GPURAMMiB = slices.MinFunc(m.GPUs, func(a, b market.GPU) int { return cmp.Compare(a.VRAMMiB, b.VRAMMiB) }).VRAMMiB
	}
	return o
}

func gpuModels(gpus []market.GPU) string {
	var models []string
	for _, g := range gpus {
		if !slices.Contains(models, g.Model) {
			models = append(models, g.Model)
		}
	}
	return strings.Join(models, "+")
}

// normalize lets "rtx_4090", "RTX 4090" and "rtx4090" match each other.
func normalize(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '_', '-':
			return -1
		}
		return r
	}, strings.ToLower(s))
}
