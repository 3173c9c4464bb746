package nvidiasmi

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestControlCommands(t *testing.T) {
	var got []string
	exec := func(_ context.Context, name string, args ...string) ([]byte, error) {
		got = append(got, name+" "+strings.Join(args, " "))
		return nil, nil
	}
	c := Control{Exec: exec, DefaultPowerW: map[string]int{"GPU-a": 450}}
	if err := c.Apply(t.Context(), []string{"GPU-a"}, 300, market.Clocks{CoreLockMHz: 1800, MemLockMHz: 10000}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(t.Context(), []string{"GPU-a"}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"nvidia-smi -i GPU-a -pl 300",
		"nvidia-smi -i GPU-a -lgc 1800,1800",
		"nvidia-smi -i GPU-a -lmc 10000,10000",
		"nvidia-smi -i GPU-a -rgc",
		"nvidia-smi -i GPU-a -rmc",
		"nvidia-smi -i GPU-a -pl 450",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if err := c.Apply(t.Context(), []string{"GPU-a"}, 0, market.Clocks{CoreOffsetMHz: 100}); err == nil || !strings.Contains(err.Error(), "offsets need NVML") {
		t.Errorf("offset: err = %v", err)
	}
	failing := Control{Exec: func(context.Context, string, ...string) ([]byte, error) {
		return nil, errors.New("Insufficient Permissions")
	}}
	if err := failing.Apply(t.Context(), []string{"GPU-a"}, 300, market.Clocks{}); err == nil || !strings.Contains(err.Error(), "Insufficient Permissions") {
		t.Errorf("failing nvidia-smi: err = %v", err)
	}
}
