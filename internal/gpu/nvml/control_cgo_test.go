//go:build linux && cgo

package nvml

import (
	"errors"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

// settings is what a card is set to.
type settings struct {
	PowerMW, CoreLock, MemLock uint32
	CoreOff, MemOff            int
}

// card is an RTX 4090-like GPU behind go-nvml's mock.Device that keeps its
// settings, answers NO_PERMISSION when not root and NOT_SUPPORTED for
// offsets when it has none, as a real card would.
type card struct {
	set        settings
	notRoot    bool
	noOffsets  bool
	noPowerCap bool   // power limit constraints not reported
	maxCore    uint32 // 0: 3120 MHz
}

var defaults = settings{PowerMW: 450000}

func (c *card) device() *mock.Device {
	c.set = defaults
	guard := func(apply func()) nvml.Return {
		if c.notRoot {
			return nvml.ERROR_NO_PERMISSION
		}
		apply()
		return nvml.SUCCESS
	}
	offset := func(v *int) func(int) nvml.Return {
		return func(mhz int) nvml.Return {
			if c.noOffsets {
				return nvml.ERROR_NOT_SUPPORTED
			}
			return guard(func() { *v = mhz })
		}
	}
	offsetRange := func(lo, hi int) func() (int, int, nvml.Return) {
		return func() (int, int, nvml.Return) {
			if c.noOffsets {
				return 0, 0, nvml.ERROR_NOT_SUPPORTED
			}
			return lo, hi, nvml.SUCCESS
		}
	}
	return &mock.Device{
		GetPowerManagementLimitConstraintsFunc: func() (uint32, uint32, nvml.Return) {
			if c.noPowerCap {
				return 0, 0, nvml.ERROR_NOT_SUPPORTED
			}
			return 150000, 600000, nvml.SUCCESS
		},
		GetPowerManagementDefaultLimitFunc: func() (uint32, nvml.Return) { return defaults.PowerMW, nvml.SUCCESS },
		SetPowerManagementLimitFunc: func(mw uint32) nvml.Return {
			if mw < 150000 || mw > 600000 {
				return nvml.ERROR_INVALID_ARGUMENT
			}
			return guard(func() { c.set.PowerMW = mw })
		},
		GetMaxClockInfoFunc: func(t nvml.ClockType) (uint32, nvml.Return) {
			if t == nvml.CLOCK_MEM {
				return 10501, nvml.SUCCESS
			}
			if c.maxCore > 0 {
				return c.maxCore, nvml.SUCCESS
			}
			return 3120, nvml.SUCCESS
		},
		SetGpuLockedClocksFunc:      func(lo, _ uint32) nvml.Return { return guard(func() { c.set.CoreLock = lo }) },
		ResetGpuLockedClocksFunc:    func() nvml.Return { return guard(func() { c.set.CoreLock = 0 }) },
		SetMemoryLockedClocksFunc:   func(lo, _ uint32) nvml.Return { return guard(func() { c.set.MemLock = lo }) },
		ResetMemoryLockedClocksFunc: func() nvml.Return { return guard(func() { c.set.MemLock = 0 }) },
		GetGpcClkMinMaxVfOffsetFunc: offsetRange(-1000, 1000),
		GetMemClkMinMaxVfOffsetFunc: offsetRange(-2000, 3000),
		SetGpcClkVfOffsetFunc:       offset(&c.set.CoreOff),
		SetMemClkVfOffsetFunc:       offset(&c.set.MemOff),
	}
}

// rig is an NVML with two cards, GPU-a and GPU-b.
func rig(a, b *card) *Lib {
	devs := map[string]nvml.Device{"GPU-a": a.device(), "GPU-b": b.device()}
	lib := &mock.Interface{DeviceGetHandleByUUIDFunc: func(u string) (nvml.Device, nvml.Return) {
		if d, ok := devs[u]; ok {
			return d, nvml.SUCCESS
		}
		return nil, nvml.ERROR_NOT_FOUND
	}}
	return &Lib{lib: lib}
}

func TestControlApply(t *testing.T) {
	both := []string{"GPU-a", "GPU-b"}
	all := market.Clocks{CoreLockMHz: 2520, MemLockMHz: 10501, CoreOffsetMHz: -150, MemOffsetMHz: 1000}
	for _, tc := range []struct {
		name    string
		a, b    card
		uuids   []string
		powerW  int
		clocks  market.Clocks
		want    settings // of GPU-a; GPU-b must match when it is in uuids
		wantErr []string // in the message; nil: no error
		wantIs  error
	}{
		{name: "everything", uuids: both, powerW: 300, clocks: all,
			want: settings{PowerMW: 300000, CoreLock: 2520, MemLock: 10501, CoreOff: -150, MemOff: 1000}},
		{name: "zero leaves", uuids: both, clocks: market.Clocks{MemOffsetMHz: 500},
			want: settings{PowerMW: 450000, MemOff: 500}},
		{name: "power above range", uuids: both, powerW: 700, clocks: all, want: defaults,
			wantErr: []string{"power limit 700 W is outside GPU GPU-a's range of 150-600 W"}},
		{name: "core lock above max", uuids: both, clocks: market.Clocks{CoreLockMHz: 3500}, want: defaults,
			wantErr: []string{"core clock lock 3500 MHz is above GPU GPU-a's maximum of 3120 MHz"}},
		{name: "mem offset out of range", uuids: both, powerW: 300, clocks: market.Clocks{MemOffsetMHz: -2500}, want: defaults,
			wantErr: []string{"memory clock offset -2500 MHz is outside GPU GPU-a's range of -2000..3000 MHz"}},
		{name: "second GPU out of range changes neither", uuids: both, powerW: 300, b: card{maxCore: 2520},
			clocks: market.Clocks{CoreLockMHz: 2800}, want: defaults,
			wantErr: []string{"core clock lock 2800 MHz is above GPU GPU-b's maximum of 2520 MHz"}},
		{name: "offset out of range", uuids: both, clocks: market.Clocks{CoreOffsetMHz: 1200}, want: defaults,
			wantErr: []string{"core clock offset 1200 MHz is outside GPU GPU-a's range of -1000..1000 MHz"}},
		{name: "card checks what it does not report", uuids: []string{"GPU-a"}, a: card{noPowerCap: true}, powerW: 100, want: defaults,
			wantErr: []string{"GPU GPU-a refused this power limit", "--power-limit"}, wantIs: nvml.ERROR_INVALID_ARGUMENT},
		{name: "not root", uuids: both, a: card{notRoot: true}, powerW: 300, want: defaults,
			wantErr: []string{"power limit of GPU GPU-a needs root; run the agent as root"}, wantIs: nvml.ERROR_NO_PERMISSION},
		{name: "no offsets", uuids: []string{"GPU-a"}, a: card{noOffsets: true}, clocks: market.Clocks{CoreLockMHz: 2000, CoreOffsetMHz: 100},
			want:    settings{PowerMW: 450000, CoreLock: 2000}, // the agent resets after a failed Apply
			wantErr: []string{"GPU GPU-a does not support setting its core clock offset", "ask without --core-offset"}, wantIs: nvml.ERROR_NOT_SUPPORTED},
		{name: "unknown GPU", uuids: []string{"GPU-a", "GPU-x"}, powerW: 300, want: defaults,
			wantErr: []string{"NVML cannot find GPU GPU-x"}, wantIs: nvml.ERROR_NOT_FOUND},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := rig(&tc.a, &tc.b)
			err := l.Apply(t.Context(), tc.uuids, tc.powerW, tc.clocks)
			checkErr(t, err, tc.wantErr, tc.wantIs)
			if diff := cmp.Diff(tc.want, tc.a.set); diff != "" {
				t.Errorf("GPU-a settings (-want +got):\n%s", diff)
			}
			wantB := defaults
			if len(tc.uuids) == 2 && tc.uuids[1] == "GPU-b" {
				wantB = tc.want
			}
			if diff := cmp.Diff(wantB, tc.b.set); diff != "" {
				t.Errorf("GPU-b settings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestControlReset(t *testing.T) {
	applied := settings{PowerMW: 300000, CoreLock: 2520, MemLock: 10501, CoreOff: -150, MemOff: 1000}
	for _, tc := range []struct {
		name    string
		a       card
		uuids   []string
		want    settings
		wantErr []string
		wantIs  error
	}{
		{name: "back to defaults", uuids: []string{"GPU-a", "GPU-b"}, want: defaults},
		{name: "no offsets is no error", a: card{noOffsets: true}, uuids: []string{"GPU-a"},
			want: settings{PowerMW: 450000, CoreOff: -150, MemOff: 1000}},
		{name: "not root", a: card{notRoot: true}, uuids: []string{"GPU-a", "GPU-b"}, want: applied,
			wantErr: []string{"reset GPU GPU-a: resetting its clocks and power limit needs root; run the agent as root"}, wantIs: nvml.ERROR_NO_PERMISSION},
		{name: "unknown GPU still resets the others", uuids: []string{"GPU-x", "GPU-a"}, want: defaults,
			wantErr: []string{"NVML cannot find GPU GPU-x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := card{}
			l := rig(&tc.a, &b)
			tc.a.set, b.set = applied, applied
			err := l.Reset(t.Context(), tc.uuids)
			checkErr(t, err, tc.wantErr, tc.wantIs)
			if diff := cmp.Diff(tc.want, tc.a.set); diff != "" {
				t.Errorf("GPU-a settings (-want +got):\n%s", diff)
			}
			wantB := applied
			if len(tc.uuids) == 2 && tc.uuids[1] == "GPU-b" {
				wantB = defaults
			}
			if diff := cmp.Diff(wantB, b.set); diff != "" {
				t.Errorf("GPU-b settings (-want +got):\n%s", diff)
			}
		})
	}
}

func checkErr(t *testing.T, err error, want []string, is error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("err = nil, want one saying %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %q, want it to say %q", err, w)
		}
	}
	if is != nil && !errors.Is(err, is) {
		t.Errorf("err = %v, want errors.Is %v", err, is)
	}
}
