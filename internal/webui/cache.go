package webui

import (
	"context"
	"sync"
	"time"
)

// DefaultCacheTTL is how old the network-wide figures of the admin
// overview and the market page may be. Both read every machine, which
// takes hundreds of milliseconds at 10,000 machines; a page that is a few
// seconds behind is fine for an overview, and a slow page is not.
const DefaultCacheTTL = 5 * time.Second

// minCostlyLoad is the load time from which a value is worth keeping.
const minCostlyLoad = 20 * time.Millisecond

// cached holds one value computed at most every ttl. Concurrent callers of
// a stale value wait for one computation instead of each starting one.
type cached[T any] struct {
	ttl time.Duration    // <= 0: never cache
	now func() time.Time // nil: time.Now

	mu  sync.Mutex
	at  time.Time
	val T
}

func (c *cached[T]) get(ctx context.Context, load func(context.Context) (T, error)) (T, error) {
	if c.ttl <= 0 {
		return load(ctx)
	}
	now := c.now
	if now == nil {
		now = time.Now
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && now().Sub(c.at) < c.ttl {
		return c.val, nil
	}
	start := now()
	v, err := load(ctx)
	if err != nil {
		return v, err // errors are not cached
	}
	// A cheap load (a small network) is not kept: its page stays exact.
	if end := now(); end.Sub(start) >= minCostlyLoad {
		c.val, c.at = v, end
	}
	return v, nil
}
