package nvidiasmi

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Control sets power limits and clock locks with nvidia-smi (which needs
// root). Clock offsets need NVML and are refused with a message saying so.
type Control struct {
	Exec ExecFunc
	// DefaultPowerW maps a GPU UUID to the power limit Reset restores.
	DefaultPowerW map[string]int
	// Now stamps metric readings; nil is time.Now.
	Now func() time.Time
}

// Apply sets the power limit and locks the clocks of each GPU.
func (c Control) Apply(ctx context.Context, uuids []string, powerW int, clocks market.Clocks) error {
	if clocks.CoreOffsetMHz != 0 || clocks.MemOffsetMHz != 0 {
		return fmt.Errorf("clock offsets need NVML, which this agent could not load (built without cgo, or no libnvidia-ml); bid without --core-offset/--mem-offset")
	}
	for _, u := range uuids {
		if powerW > 0 {
			if err := c.run(ctx, "-i", u, "-pl", strconv.Itoa(powerW)); err != nil {
				return err
			}
		}
		if v := clocks.CoreLockMHz; v > 0 {
			if err := c.run(ctx, "-i", u, "-lgc", fmt.Sprintf("%d,%d", v, v)); err != nil {
				return err
			}
		}
		if v := clocks.MemLockMHz; v > 0 {
			if err := c.run(ctx, "-i", u, "-lmc", fmt.Sprintf("%d,%d", v, v)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reset unlocks the clocks and restores the default power limit.
func (c Control) Reset(ctx context.Context, uuids []string) error {
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	for _, u := range uuids {
		keep(c.run(ctx, "-i", u, "-rgc"))
		keep(c.run(ctx, "-i", u, "-rmc"))
		if w, ok := c.DefaultPowerW[u]; ok && w > 0 {
			keep(c.run(ctx, "-i", u, "-pl", strconv.Itoa(w)))
		}
	}
	return first
}

func (c Control) run(ctx context.Context, args ...string) error {
	if _, err := c.Exec(ctx, Binary, args...); err != nil {
		return fmt.Errorf("nvidia-smi %v: %w", args, err)
	}
	return nil
}
