// Package nvml discovers NVIDIA GPUs, reads their metrics and sets their
// power limits and clocks (offsets included) through NVML
// (github.com/NVIDIA/go-nvml), which loads the driver's libnvidia-ml.so at
// run time. It needs cgo to build; without cgo (or off Linux) Open says so
// and the agent falls back to nvidia-smi.
//
// It imports only internal/market of gpumarket.
package nvml

import (
	"errors"
	"strconv"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// ErrUnavailable says NVML cannot be used: built without cgo, or the
// driver's library is not installed. Callers fall back to nvidia-smi.
var ErrUnavailable = errors.New("NVML is not available")

// Info is what Discover finds.
type Info struct {
	GPUs          []market.GPU
	DriverVersion string
	CUDAVersion   string // "12.4"; "" when NVML does not say
	// MIG lists the indices of GPUs with MIG mode on; a GPU in MIG mode
	// is rented whole.
	MIG []int
}

// cudaVersion turns NVML's 12040 into "12.4".
func cudaVersion(v int) string {
	if v <= 0 {
		return ""
	}
	return strconv.Itoa(v/1000) + "." + strconv.Itoa((v%1000)/10)
}

// clock is the time source of readings.
type clock func() time.Time
