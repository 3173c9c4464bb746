package httpapi

import (
	"bytes"
	"encoding/json"
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

// machinesList is n machines of 8 GPUs as a host's list returns them.
func machinesList(n int) []market.Machine {
	ms := make([]market.Machine, n)
	for i := range ms {
		m := market.Machine{ID: market.MachineID(fmt.Sprintf("m-%016x", i)), Owner: "a-0123456789ab", Online: i%3 != 0, Listed: true,
			Status: market.MachineListed, PricePerGPUHour: 500_000, UsedGPUs: []int{}}
		m.Hostname, m.Runner, m.Region = fmt.Sprintf("rig-%d <&>", i), "docker", "eu-west-1"
		for g := range 8 {
			m.GPUs = append(m.GPUs, market.GPU{Index: g, UUID: fmt.Sprintf("GPU-%08x-%d", i, g), Model: "NVIDIA GeForce RTX 4090", VRAMMiB: 24564})
		}
		ms[i] = m
	}
	return ms
}

// A long list is written an element at a time, and reads exactly as
// json.Encoder writes it, indented or not.
func TestWriteJSONStreamsLongLists(t *testing.T) {
	for _, n := range []int{0, 1, streamFrom, streamFrom + 1, 1000} {
		for _, indent := range []bool{true, false} {
			ms := machinesList(n)
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			if indent {
				enc.SetIndent("", "  ")
			}
			if err := enc.Encode(ms); err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			writeJSON(rec, 200, ms, indent)
			if got := rec.Body.String(); got != want.String() {
				t.Fatalf("%d machines, indent %v: writeJSON wrote\n%.300s\nwant\n%.300s", n, indent, got, want.String())
			}
		}
	}
}

// BenchmarkWriteJSONMachines measures a host's list of 10,000 machines:
// B/op is what writing it allocates (the whole body, before streaming).
func BenchmarkWriteJSONMachines(b *testing.B) {
	ms := machinesList(10_000)
	b.ReportAllocs()
	for b.Loop() {
		writeJSON(discardWriter{httptest.NewRecorder()}, 200, ms, true)
	}
}

// discardWriter is a ResponseWriter whose body goes nowhere, so that the
// benchmark measures the encoding, not a recorder's copy of the body.
type discardWriter struct{ *httptest.ResponseRecorder }

func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
