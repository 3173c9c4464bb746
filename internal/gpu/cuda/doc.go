// Package cuda answers verification challenges (internal/verify, protocol
// 2) on NVIDIA GPUs through the CUDA driver API. It loads the driver's
// libcuda.so.1 at run time with dlopen, so the binary builds and runs
// without CUDA; its kernels are PTX (kernels.ptx, and tile128.go), which the
// driver compiles for the card when the module loads, so no CUDA toolkit
// is needed either. Without cgo, off Linux or without the driver, Open
// says why and the agent keeps the CPU solver.
//
// A Solver checks itself before use: Open solves a small task on every
// GPU and compares the root with the CPU reference, and a GPU that
// disagrees is left to the fallback solver, so an honest host never
// commits a wrong answer computed by a broken kernel or driver. A GPU's
// context exists only while a solve runs, so the agent holds none of the
// renters' GPU memory between challenges.
//
// It imports only internal/market and internal/verify of gpumarket.
package cuda

import (
	"errors"
	"strings"

	_ "embed"
)

// ErrUnavailable says the CUDA driver cannot be used: built without cgo,
// not Linux, or libcuda.so.1 is not installed.
var ErrUnavailable = errors.New("the CUDA driver is not available")

//go:embed kernels.ptx
var kernelSource string

// Block is the threads per block of every kernel (the kernels' warp
// reduction assumes whole warps).
const Block = 256

// PTX returns the kernels' PTX with the MIX32 macro expanded: "MIX32 x, t"
// becomes Mix32 of register x in place (verify.Mix32), with t as scratch.
func PTX() string {
	var b strings.Builder
	for line := range strings.Lines(kernelSource + tile128PTX()) {
		f := strings.Fields(strings.ReplaceAll(line, ",", " "))
		if len(f) != 3 || f[0] != "MIX32" {
			b.WriteString(line)
			continue
		}
		x, t := f[1], f[2]
		for _, ins := range []string{
			"shr.u32 " + t + ", " + x + ", 16;",
			"xor.b32 " + x + ", " + x + ", " + t + ";",
			"mul.lo.u32 " + x + ", " + x + ", 0x7feb352dU;",
			"shr.u32 " + t + ", " + x + ", 15;",
			"xor.b32 " + x + ", " + x + ", " + t + ";",
			"mul.lo.u32 " + x + ", " + x + ", 0x846ca68bU;",
			"shr.u32 " + t + ", " + x + ", 16;",
			"xor.b32 " + x + ", " + x + ", " + t + ";",
		} {
			b.WriteString("\t" + ins + "\n")
		}
	}
	return b.String()
}
