package httpapi

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/gpumarket/gpumarket/internal/market"
)

// BenchmarkWriteJSON writes an agent's desired state with 8 assignments,
// indented (people's calls) and compact (agents' calls).
func BenchmarkWriteJSON(b *testing.B) {
	ds := market.DesiredState{Machine: "m-0123456789abcdef", Version: 42, LostAfterSeconds: 60}
	for i := range 8 {
		ds.Assignments = append(ds.Assignments, market.Assignment{
			Instance: market.InstanceID(fmt.Sprintf("i-%016x", i)), Generation: 1, Desired: market.DesiredRun,
			GPUs: []int{i, i + 8}, GPUUUIDs: []string{fmt.Sprintf("GPU-%08x-aaaa", i), fmt.Sprintf("GPU-%08x-bbbb", i+8)},
			Image: "gpumarket-test:latest", Command: []string{"/worker", "--steps", "1000"},
			Env: map[string]string{"MODEL": "llama", "BATCH": "32"}, GraceSeconds: 30,
		})
	}
	for _, indent := range []bool{true, false} {
		b.Run(map[bool]string{true: "indented", false: "compact"}[indent], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				writeJSON(httptest.NewRecorder(), 200, ds, indent)
			}
		})
	}
}
