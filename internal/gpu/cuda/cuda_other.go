//go:build !(linux && cgo)

package cuda

import (
	"context"
	"fmt"

	"github.com/gpumarket/gpumarket/internal/verify"
)

// Open reports that this binary was built without the CUDA driver
// bindings.
func Open(context.Context, verify.Solver) (*Solver, error) {
	return nil, fmt.Errorf("%w: this binary was built without cgo", ErrUnavailable)
}

// DriverVersion reports the same.
func DriverVersion() (string, error) {
	return "unknown", fmt.Errorf("%w: this binary was built without cgo", ErrUnavailable)
}
