//go:build linux && cgo

package nvml

import (
	"context"
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Control through NVML sets what nvidia-smi sets (power limit, locked core
// and memory clocks) plus the clock offsets, which nvidia-smi cannot.
//
// Unverified on hardware: this was written against go-nvml's API and
// tested with its mocks only; no GPU was available. In particular, the
// unit of the memory offset (NVML's MemClkVfOffset, which some tools show
// doubled as a data rate) and whether the offset range queries answer on
// every card that accepts offsets have not been checked on a real card.

// Apply sets the power limit (watts; 0 leaves it) and clocks (0 leaves
// each) on each GPU. Every value is checked against every GPU's range
// before any GPU is changed.
func (l *Lib) Apply(_ context.Context, uuids []string, powerW int, clocks market.Clocks) error {
	devs := make([]nvml.Device, len(uuids))
	for i, u := range uuids {
		d, err := l.device(u)
		if err != nil {
			return err
		}
		if err := checkRanges(d, u, powerW, clocks); err != nil {
			return err
		}
		devs[i] = d
	}
	for i, d := range devs {
		u := uuids[i]
		if powerW > 0 {
			if r := d.SetPowerManagementLimit(uint32(powerW) * 1000); r != nvml.SUCCESS {
				return refused(u, "power limit", "--power-limit", r)
			}
		}
		if v := clocks.CoreLockMHz; v > 0 {
			if r := d.SetGpuLockedClocks(uint32(v), uint32(v)); r != nvml.SUCCESS {
				return refused(u, "core clock lock", "--core-lock", r)
			}
		}
		if v := clocks.MemLockMHz; v > 0 {
			if r := d.SetMemoryLockedClocks(uint32(v), uint32(v)); r != nvml.SUCCESS {
				return refused(u, "memory clock lock", "--mem-lock", r)
			}
		}
		if v := clocks.CoreOffsetMHz; v != 0 {
			if r := d.SetGpcClkVfOffset(v); r != nvml.SUCCESS {
				return refused(u, "core clock offset", "--core-offset", r)
			}
		}
		if v := clocks.MemOffsetMHz; v != 0 {
			if r := d.SetMemClkVfOffset(v); r != nvml.SUCCESS {
				return refused(u, "memory clock offset", "--mem-offset", r)
			}
		}
	}
	return nil
}

// checkRanges refuses values outside the ranges the card reports. A range
// the card does not report is left to the card to enforce when set.
func checkRanges(d nvml.Device, uuid string, powerW int, c market.Clocks) error {
	if powerW > 0 {
		if lo, hi, r := d.GetPowerManagementLimitConstraints(); r == nvml.SUCCESS && hi > 0 {
			if mw := uint32(powerW) * 1000; mw < lo || mw > hi {
				return fmt.Errorf("power limit %d W is outside GPU %s's range of %d-%d W", powerW, uuid, watts(lo), watts(hi))
			}
		}
	}
	for _, lock := range []struct {
		name string
		mhz  int
		typ  nvml.ClockType
	}{{"core clock lock", c.CoreLockMHz, nvml.CLOCK_GRAPHICS}, {"memory clock lock", c.MemLockMHz, nvml.CLOCK_MEM}} {
		if lock.mhz <= 0 {
			continue
		}
		if hi, r := d.GetMaxClockInfo(lock.typ); r == nvml.SUCCESS && hi > 0 && uint32(lock.mhz) > hi {
			return fmt.Errorf("%s %d MHz is above GPU %s's maximum of %d MHz", lock.name, lock.mhz, uuid, hi)
		}
	}
	for _, off := range []struct {
		name  string
		mhz   int
		limit func() (int, int, nvml.Return)
	}{{"core clock offset", c.CoreOffsetMHz, d.GetGpcClkMinMaxVfOffset}, {"memory clock offset", c.MemOffsetMHz, d.GetMemClkMinMaxVfOffset}} {
		if off.mhz == 0 {
			continue
		}
		if lo, hi, r := off.limit(); r == nvml.SUCCESS && lo < hi && (off.mhz < lo || off.mhz > hi) {
			return fmt.Errorf("%s %d MHz is outside GPU %s's range of %d..%d MHz", off.name, off.mhz, uuid, lo, hi)
		}
	}
	return nil
}

// Reset unlocks the clocks, sets the offsets to 0 and restores the default
// power limit of each GPU. A setting the card does not support was never
// applied, so NOT_SUPPORTED is not an error here. It resets every GPU it
// can and returns what failed on each.
func (l *Lib) Reset(_ context.Context, uuids []string) error {
	var errs []error
	for _, u := range uuids {
		d, err := l.device(u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := reset(d, u); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func reset(d nvml.Device, uuid string) error {
	steps := []struct {
		what string
		do   func() nvml.Return
	}{
		{"core clock lock", d.ResetGpuLockedClocks},
		{"memory clock lock", d.ResetMemoryLockedClocks},
		{"core clock offset", func() nvml.Return { return d.SetGpcClkVfOffset(0) }},
		{"memory clock offset", func() nvml.Return { return d.SetMemClkVfOffset(0) }},
		{"power limit", func() nvml.Return {
			def, r := d.GetPowerManagementDefaultLimit()
			if r != nvml.SUCCESS {
				return r
			}
			return d.SetPowerManagementLimit(def)
		}},
	}
	var errs []error
	for _, s := range steps {
		switch r := s.do(); r {
		case nvml.SUCCESS, nvml.ERROR_NOT_SUPPORTED:
		case nvml.ERROR_NO_PERMISSION:
			// Every other step would say the same.
			return fmt.Errorf("reset GPU %s: resetting its clocks and power limit needs root; run the agent as root: %w", uuid, r)
		default:
			errs = append(errs, fmt.Errorf("reset %s of GPU %s: %w", s.what, uuid, r))
		}
	}
	return errors.Join(errs...)
}

// device finds a GPU by UUID.
func (l *Lib) device(uuid string) (nvml.Device, error) {
	d, r := l.lib.DeviceGetHandleByUUID(uuid)
	if r != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML cannot find GPU %s: %w", uuid, r)
	}
	return d, nil
}

// refused says why a GPU refused a setting and what to do about it.
func refused(uuid, what, flag string, r nvml.Return) error {
	switch r {
	case nvml.ERROR_NO_PERMISSION:
		return fmt.Errorf("setting the %s of GPU %s needs root; run the agent as root: %w", what, uuid, r)
	case nvml.ERROR_NOT_SUPPORTED:
		return fmt.Errorf("GPU %s does not support setting its %s (card or driver too old, or a virtual GPU); ask without %s: %w", uuid, what, flag, r)
	case nvml.ERROR_INVALID_ARGUMENT:
		return fmt.Errorf("GPU %s refused this %s as out of its range; ask for another %s: %w", uuid, what, flag, r)
	}
	return fmt.Errorf("set %s of GPU %s: %w", what, uuid, r)
}
