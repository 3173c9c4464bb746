//go:build linux && cgo

package nvml

import (
	"errors"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

// h100 is go-nvml's simulated DGX H100 (8 GPUs) with the power, PCIe and
// metric calls filled in as an H100 SXM answers them; GPU 1 is busy and
// GPU 7 does not support power readings.
func h100(t *testing.T) *server.Server {
	t.Helper()
	s := dgxh100.New()
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		dev.GetPowerManagementLimitConstraintsFunc = func() (uint32, uint32, nvml.Return) { return 200000, 700000, nvml.SUCCESS }
		dev.GetPowerManagementDefaultLimitFunc = func() (uint32, nvml.Return) { return 700000, nvml.SUCCESS }
		dev.GetMaxPcieLinkGenerationFunc = func() (int, nvml.Return) { return 5, nvml.SUCCESS }
		dev.GetMaxPcieLinkWidthFunc = func() (int, nvml.Return) { return 16, nvml.SUCCESS }
		util, power, temp, core := uint32(0), uint32(71340), uint32(33), uint32(345)
		if i == 1 {
			util, power, temp, core = 97, 688420, 71, 1980
		}
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: util}, nvml.SUCCESS }
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) {
			if i == 7 {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			return power, nvml.SUCCESS
		}
		dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 700000, nvml.SUCCESS }
		dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return temp, nvml.SUCCESS }
		dev.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
			if c == nvml.CLOCK_MEM {
				return 2619, nvml.SUCCESS
			}
			return core, nvml.SUCCESS
		}
	}
	return s
}

func TestDiscover(t *testing.T) {
	s := h100(t)
	l, err := open(s)
	if err != nil {
		t.Fatal(err)
	}
	info, err := l.Discover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.DriverVersion != "550.54.15" || info.CUDAVersion != "12.4" || len(info.GPUs) != 8 || len(info.MIG) != 0 {
		t.Fatalf("Discover = driver %q, CUDA %q, %d GPUs, MIG %v; want 550.54.15, 12.4, 8, none", info.DriverVersion, info.CUDAVersion, len(info.GPUs), info.MIG)
	}
	uuid, _ := s.Devices[3].GetUUID()
	name, _ := s.Devices[3].GetName()
	mem, _ := s.Devices[3].GetMemoryInfo()
	want := market.GPU{Index: 3, UUID: uuid, Model: name, VRAMMiB: int64(mem.Total >> 20), MinPowerW: 200, DefaultPowerW: 700, MaxPowerW: 700, PCIeGen: 5, PCIeWidth: 16}
	if diff := cmp.Diff(want, info.GPUs[3]); diff != "" {
		t.Errorf("GPU 3 (-want +got):\n%s", diff)
	}
	if info.GPUs[3].VRAMMiB < 80000 {
		t.Errorf("H100 with %d MiB, want about 80 GiB", info.GPUs[3].VRAMMiB)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSample(t *testing.T) {
	l, err := open(h100(t))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return at }
	got, err := l.Sample(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 8 {
		t.Fatalf("%d readings, want 8", len(got))
	}
	busy := got[1]
	busy.UUID = ""
	want := market.GPUSample{Index: 1, At: at, UtilPct: 97, MemUsedMiB: busy.MemUsedMiB, PowerW: 688.42, TempC: 71, CoreMHz: 1980, MemMHz: 2619, PowerLimitW: 700}
	if diff := cmp.Diff(want, busy); diff != "" {
		t.Errorf("busy GPU 1 (-want +got):\n%s", diff)
	}
	if got[0].UtilPct != 0 || got[0].PowerW != 71.34 || got[0].UUID == "" {
		t.Errorf("idle GPU 0 = %+v, want 0%% at 71.34 W with its UUID", got[0])
	}
	if got[7].PowerW != 0 || got[7].TempC != 33 {
		t.Errorf("GPU 7 without power readings = %+v, want 0 W and the other readings", got[7])
	}
}

func TestOpenFails(t *testing.T) {
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	if _, err := open(lib); !errors.Is(err, ErrUnavailable) {
		t.Errorf("open without the library = %v, want ErrUnavailable", err)
	}
	panics := &mock.Interface{InitFunc: func() nvml.Return { panic("libnvidia-ml.so.1: cannot open shared object file") }}
	if _, err := open(panics); !errors.Is(err, ErrUnavailable) {
		t.Errorf("open that panics = %v, want ErrUnavailable", err)
	}
}

func TestOpenReal(t *testing.T) {
	l, err := Open()
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("no NVIDIA driver on this machine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Discover(t.Context())
	t.Logf("real NVML: %+v, %v", info, err)
}

func TestDiscoverMIG(t *testing.T) {
	s := h100(t)
	if r, _ := s.Devices[2].(*server.Device).SetMigMode(nvml.DEVICE_MIG_ENABLE); r != nvml.SUCCESS {
		t.Fatalf("SetMigMode: %v", r)
	}
	l, err := open(s)
	if err != nil {
		t.Fatal(err)
	}
	info, err := l.Discover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(info.MIG, []int{2}) || !info.GPUs[2].MIG || info.GPUs[1].MIG {
		t.Errorf("MIG = %v, GPU 2 MIG %v, GPU 1 MIG %v; want only GPU 2 in MIG mode", info.MIG, info.GPUs[2].MIG, info.GPUs[1].MIG)
	}
}
