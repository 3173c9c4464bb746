//go:build linux && cgo

package nvml

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Lib is an initialised NVML. Create it with Open and release it with Close.
type Lib struct {
	lib nvml.Interface
	now clock
}

// Open loads the driver's NVML library and initialises it. It returns an
// error wrapping ErrUnavailable when the library is not installed.
func Open() (*Lib, error) {
	return open(nvml.New())
}

func open(lib nvml.Interface) (l *Lib, err error) {
	defer func() {
		// go-nvml panics when the library cannot be loaded on some
		// versions; that is "not available", not a crash.
		if p := recover(); p != nil {
			l, err = nil, fmt.Errorf("%w: %v", ErrUnavailable, p)
		}
	}()
	if r := lib.Init(); r != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: init: %v", ErrUnavailable, r)
	}
	return &Lib{lib: lib, now: time.Now}, nil
}

// Close shuts NVML down.
func (l *Lib) Close() error {
	if r := l.lib.Shutdown(); r != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %v", r)
	}
	return nil
}

// Discover lists the GPUs with their model, UUID, VRAM, power limit range
// and PCIe link, plus the driver and CUDA versions. Values a card does not
// support are zero.
func (l *Lib) Discover(_ context.Context) (Info, error) {
	var info Info
	n, r := l.lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return info, fmt.Errorf("nvml: count GPUs: %v", r)
	}
	if n == 0 {
		return info, market.Errorf("discover gpus", market.NotFound, "NVML found no GPUs")
	}
	if v, r := l.lib.SystemGetDriverVersion(); r == nvml.SUCCESS {
		info.DriverVersion = v
	}
	if v, r := l.lib.SystemGetCudaDriverVersion(); r == nvml.SUCCESS {
		info.CUDAVersion = cudaVersion(v)
	}
	for i := range n {
		d, r := l.lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return info, fmt.Errorf("nvml: GPU %d: %v", i, r)
		}
		g := market.GPU{Index: i}
		if g.UUID, r = d.GetUUID(); r != nvml.SUCCESS || g.UUID == "" {
			return info, fmt.Errorf("nvml: GPU %d has no UUID: %v", i, r)
		}
		if g.Model, r = d.GetName(); r != nvml.SUCCESS {
			return info, fmt.Errorf("nvml: GPU %d has no name: %v", i, r)
		}
		mem, r := d.GetMemoryInfo()
		if r != nvml.SUCCESS {
			return info, fmt.Errorf("nvml: memory of GPU %d: %v", i, r)
		}
		g.VRAMMiB = int64(mem.Total >> 20)
		if lo, hi, r := d.GetPowerManagementLimitConstraints(); r == nvml.SUCCESS {
			g.MinPowerW, g.MaxPowerW = watts(lo), watts(hi)
		}
		if def, r := d.GetPowerManagementDefaultLimit(); r == nvml.SUCCESS {
			g.DefaultPowerW = watts(def)
		}
		if v, r := d.GetMaxPcieLinkGeneration(); r == nvml.SUCCESS {
			g.PCIeGen = v
		}
		if v, r := d.GetMaxPcieLinkWidth(); r == nvml.SUCCESS {
			g.PCIeWidth = v
		}
		if cur, _, r := d.GetMigMode(); r == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE {
			g.MIG = true
			info.MIG = append(info.MIG, i)
		}
		info.GPUs = append(info.GPUs, g)
	}
	return info, nil
}

// Sample reads every GPU's utilisation, memory in use, power draw and
// limit, temperature and clocks. A reading a card does not support is
// zero; a GPU that cannot be reached at all is an error.
func (l *Lib) Sample(_ context.Context) ([]market.GPUSample, error) {
	n, r := l.lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: count GPUs: %v", r)
	}
	at := l.now()
	out := make([]market.GPUSample, 0, n)
	for i := range n {
		d, r := l.lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml: GPU %d: %v", i, r)
		}
		s := market.GPUSample{Index: i, At: at}
		s.UUID, _ = d.GetUUID()
		if u, r := d.GetUtilizationRates(); r == nvml.SUCCESS {
			s.UtilPct = float64(u.Gpu)
		}
		if m, r := d.GetMemoryInfo(); r == nvml.SUCCESS {
			s.MemUsedMiB = int64(m.Used >> 20)
		}
		if mw, r := d.GetPowerUsage(); r == nvml.SUCCESS {
			s.PowerW = math.Round(float64(mw)/10) / 100 // milliwatts to watts, two decimals
		}
		if mw, r := d.GetEnforcedPowerLimit(); r == nvml.SUCCESS {
			s.PowerLimitW = watts(mw)
		}
		if t, r := d.GetTemperature(nvml.TEMPERATURE_GPU); r == nvml.SUCCESS {
			s.TempC = float64(t)
		}
		if c, r := d.GetClockInfo(nvml.CLOCK_SM); r == nvml.SUCCESS {
			s.CoreMHz = int(c)
		}
		if c, r := d.GetClockInfo(nvml.CLOCK_MEM); r == nvml.SUCCESS {
			s.MemMHz = int(c)
		}
		out = append(out, s)
	}
	return out, nil
}

// watts rounds NVML's milliwatts to whole watts.
func watts(mw uint32) int { return int((mw + 500) / 1000) }
