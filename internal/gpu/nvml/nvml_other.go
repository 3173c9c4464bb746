//go:build !(linux && cgo)

package nvml

import (
	"context"
	"fmt"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Lib is NVML; in this build (no cgo, or not Linux) it cannot be opened.
type Lib struct{ now clock }

// Open reports that this binary was built without NVML.
func Open() (*Lib, error) {
	return nil, fmt.Errorf("%w: this binary was built without cgo", ErrUnavailable)
}

// Close does nothing.
func (l *Lib) Close() error { return nil }

// Discover is never reached: Open fails.
func (l *Lib) Discover(context.Context) (Info, error) { return Info{}, ErrUnavailable }

// Sample is never reached: Open fails.
func (l *Lib) Sample(context.Context) ([]market.GPUSample, error) { return nil, ErrUnavailable }

// Apply is never reached: Open fails.
func (l *Lib) Apply(context.Context, []string, int, market.Clocks) error { return ErrUnavailable }

// Reset is never reached: Open fails.
func (l *Lib) Reset(context.Context, []string) error { return ErrUnavailable }
