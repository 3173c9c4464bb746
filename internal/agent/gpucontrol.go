package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// GPUControl sets power limits and clocks of GPUs, by UUID.
type GPUControl interface {
	// Apply sets the power limit (watts; 0 leaves it) and clocks on each
	// GPU, or returns an error that says which value the card refused.
	Apply(ctx context.Context, uuids []string, powerW int, clocks market.Clocks) error
	// Reset returns the GPUs to their defaults.
	Reset(ctx context.Context, uuids []string) error
}

// WithGPUControl wraps a runner so that an assignment's power limit and
// clocks are applied to its GPUs before the workload starts and reset
// after it ends. When the settings cannot be applied, the workload does not
// start and is listed as failed with the reason.
//
// When ctl also implements SetBusy(uuids, busy) (simulated GPUs, whose
// metrics follow load), it is told which GPUs run a workload.
func WithGPUControl(r Runner, ctl GPUControl) Runner {
	c := &controlled{Runner: r, ctl: ctl, applied: map[market.InstanceID][]string{}, failed: map[market.InstanceID]market.InstanceReport{},
		busy: map[market.InstanceID][]string{}}
	c.marker, _ = ctl.(busyMarker)
	return c
}

// busyMarker is a GPU adapter that wants to know which GPUs are in use.
type busyMarker interface {
	SetBusy(uuids []string, busy bool)
}

type controlled struct {
	Runner
	ctl     GPUControl
	mu      sync.Mutex
	applied map[market.InstanceID][]string // GPUs whose settings must be reset
	failed  map[market.InstanceID]market.InstanceReport
	marker  busyMarker                     // nil when ctl does not want it
	busy    map[market.InstanceID][]string // GPUs marked busy, per instance
}

// setBusy marks or unmarks an instance's GPUs as running a workload.
func (c *controlled) setBusy(id market.InstanceID, uuids []string, busy bool) {
	if c.marker == nil {
		return
	}
	c.mu.Lock()
	if busy {
		c.busy[id] = uuids
	} else {
		uuids = c.busy[id]
		delete(c.busy, id)
	}
	c.mu.Unlock()
	if len(uuids) > 0 {
		c.marker.SetBusy(uuids, busy)
	}
}

func hasSettings(a market.Assignment) bool {
	return a.PowerLimitW > 0 || a.Clocks != (market.Clocks{}) || len(a.GPUClocks) > 0
}

func (c *controlled) Start(ctx context.Context, a market.Assignment) error {
	if hasSettings(a) {
		c.mu.Lock()
		_, done := c.applied[a.Instance]
		c.mu.Unlock()
		if !done {
			if err := c.apply(ctx, a); err != nil {
				// Leave no half-applied settings behind.
				_ = c.ctl.Reset(context.WithoutCancel(ctx), a.GPUUUIDs)
				c.mu.Lock()
				c.failed[a.Instance] = market.InstanceReport{Instance: a.Instance, Generation: a.Generation, State: market.ObservedFailed,
					Message: fmt.Sprintf("could not apply the power limit and clocks: %v", err)}
				c.mu.Unlock()
				return nil
			}
			c.mu.Lock()
			c.applied[a.Instance] = a.GPUUUIDs
			c.mu.Unlock()
		}
	}
	if err := c.Runner.Start(ctx, a); err != nil {
		return err
	}
	c.setBusy(a.Instance, a.GPUUUIDs, true)
	return nil
}

// apply sets the assignment's power limit and clocks: one value for all
// its GPUs, or each GPU its own.
func (c *controlled) apply(ctx context.Context, a market.Assignment) error {
	if len(a.GPUClocks) != len(a.GPUUUIDs) || len(a.GPUClocks) == 0 {
		return c.ctl.Apply(ctx, a.GPUUUIDs, a.PowerLimitW, a.Clocks)
	}
	for i, u := range a.GPUUUIDs {
		if err := c.ctl.Apply(ctx, []string{u}, a.PowerLimitW, a.GPUClocks[i]); err != nil {
			return fmt.Errorf("GPU %s: %w", u, err)
		}
	}
	return nil
}

// reset resets the settings of an instance once, if any were applied.
func (c *controlled) reset(ctx context.Context, id market.InstanceID) error {
	c.mu.Lock()
	uuids, ok := c.applied[id]
	delete(c.applied, id)
	c.mu.Unlock()
	if !ok {
		return nil
	}
	if err := c.ctl.Reset(ctx, uuids); err != nil {
		return fmt.Errorf("reset power limit and clocks of %s: %w", id, err)
	}
	return nil
}

// Adopted records the settings of a workload that an earlier agent started
// (they are still applied to its GPUs), so that they are reset when it
// ends, and marks its GPUs busy.
func (c *controlled) Adopted(a market.Assignment) {
	c.mu.Lock()
	_, applied := c.applied[a.Instance]
	_, busy := c.busy[a.Instance]
	if hasSettings(a) && !applied {
		c.applied[a.Instance] = a.GPUUUIDs
	}
	c.mu.Unlock()
	if !busy {
		c.setBusy(a.Instance, a.GPUUUIDs, true)
	}
}

// ResetGPUs resets the given GPUs, except those a workload it knows of
// holds settings on or runs on.
func (c *controlled) ResetGPUs(ctx context.Context, uuids []string) error {
	c.mu.Lock()
	held := map[string]bool{}
	for _, m := range []map[market.InstanceID][]string{c.applied, c.busy} {
		for _, us := range m {
			for _, u := range us {
				held[u] = true
			}
		}
	}
	c.mu.Unlock()
	var free []string
	for _, u := range uuids {
		if !held[u] {
			free = append(free, u)
		}
	}
	if len(free) == 0 {
		return nil
	}
	return c.ctl.Reset(ctx, free)
}

// Exec runs a command inside an instance (health checks) when the runner
// it wraps can: embedding hides the wrapped runner's optional methods.
func (c *controlled) Exec(ctx context.Context, a market.Assignment, cmd []string) (int, error) {
	e, ok := c.Runner.(execer)
	if !ok {
		return 0, market.Errorf("exec in instance", market.Invalid, "this runner cannot run commands inside instances")
	}
	return e.Exec(ctx, a, cmd)
}

func (c *controlled) List(ctx context.Context) ([]market.InstanceReport, error) {
	list, err := c.Runner.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range list {
		if r.State != market.ObservedStarting && r.State != market.ObservedRunning {
			c.setBusy(r.Instance, nil, false)
			if err := c.reset(ctx, r.Instance); err != nil {
				return nil, err
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.failed {
		list = append(list, f)
	}
	return list, nil
}

func (c *controlled) Stop(ctx context.Context, id market.InstanceID, grace time.Duration) error {
	if err := c.Runner.Stop(ctx, id, grace); err != nil {
		return err
	}
	c.setBusy(id, nil, false)
	return c.reset(ctx, id)
}

func (c *controlled) Forget(ctx context.Context, id market.InstanceID) error {
	c.mu.Lock()
	_, failed := c.failed[id]
	delete(c.failed, id)
	c.mu.Unlock()
	if failed {
		return nil // the runner never saw it
	}
	c.setBusy(id, nil, false)
	if err := c.reset(ctx, id); err != nil {
		return err
	}
	return c.Runner.Forget(ctx, id)
}
