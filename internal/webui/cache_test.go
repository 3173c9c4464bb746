package webui

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCached(t *testing.T) {
	clock := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	loads := 0
	load := func(cost time.Duration, err error) func(context.Context) (int, error) {
		return func(context.Context) (int, error) {
			loads++
			clock = clock.Add(cost)
			return loads, err
		}
	}
	for _, tc := range []struct {
		name      string
		ttl       time.Duration
		steps     []time.Duration // load costs; a negative one fails
		gap       time.Duration   // clock moves between gets
		wantLoads int
	}{
		{"costly loads are kept for the ttl", 5 * time.Second, []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}, time.Second, 1},
		{"kept until the ttl passes", 5 * time.Second, []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}, 6 * time.Second, 2},
		{"cheap loads are not kept", 5 * time.Second, []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}, time.Second, 3},
		{"errors are not kept", 5 * time.Second, []time.Duration{-50 * time.Millisecond, 50 * time.Millisecond}, time.Second, 2},
		{"no ttl, no cache", -1, []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}, time.Second, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loads = 0
			c := cached[int]{ttl: tc.ttl, now: now}
			for _, cost := range tc.steps {
				var err error
				if cost < 0 {
					cost, err = -cost, errors.New("store down")
				}
				if _, gerr := c.get(t.Context(), load(cost, err)); (gerr != nil) != (err != nil) && loads > 0 {
					t.Fatalf("get: %v", gerr)
				}
				clock = clock.Add(tc.gap)
			}
			if loads != tc.wantLoads {
				t.Errorf("%d loads, want %d", loads, tc.wantLoads)
			}
		})
	}
}
