package fake

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Settings are what a simulated GPU is set to.
type Settings struct {
	PowerLimitW int
	Clocks      market.Clocks
}

// Control simulates power and clock control of fake GPUs: it checks values
// against each card's range as a driver would and remembers them.
type Control struct {
	mu       sync.Mutex
	gpus     map[string]market.GPU
	settings map[string]Settings
	log      []string // "apply UUID 300W", "reset UUID", in order
	busy     map[string]bool
	now      func() time.Time // nil: time.Now
}

// NewControl returns a controller of gpus, all at their default settings.
func NewControl(gpus []market.GPU) *Control {
	c := &Control{gpus: map[string]market.GPU{}, settings: map[string]Settings{}}
	for _, g := range gpus {
		c.gpus[g.UUID] = g
		c.settings[g.UUID] = Settings{PowerLimitW: g.DefaultPowerW}
	}
	return c
}

// Apply sets the power limit and clocks of each GPU, all or none.
func (c *Control) Apply(_ context.Context, uuids []string, powerW int, clocks market.Clocks) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range uuids {
		g, ok := c.gpus[u]
		switch {
		case !ok:
			return fmt.Errorf("no GPU %s on this machine", u)
		case powerW != 0 && (powerW < g.MinPowerW || powerW > g.MaxPowerW):
			return fmt.Errorf("power limit %d W is outside %s's range %d-%d W", powerW, u, g.MinPowerW, g.MaxPowerW)
		}
	}
	for _, u := range uuids {
		s := c.settings[u]
		if powerW != 0 {
			s.PowerLimitW = powerW
		}
		s.Clocks = clocks
		c.settings[u] = s
		c.log = append(c.log, fmt.Sprintf("apply %s %dW", u, powerW))
	}
	return nil
}

// Reset returns the GPUs to their default power limit and clocks.
func (c *Control) Reset(_ context.Context, uuids []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range uuids {
		if g, ok := c.gpus[u]; ok {
			c.settings[u] = Settings{PowerLimitW: g.DefaultPowerW}
			c.log = append(c.log, "reset "+u)
		}
	}
	return nil
}

// Get returns a GPU's current settings.
func (c *Control) Get(uuid string) Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settings[uuid]
}

// Log returns what was applied and reset, in order.
func (c *Control) Log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}
