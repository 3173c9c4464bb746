//go:build linux && cgo

package cuda

import (
	"context"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/verify"
)

// On a machine with an NVIDIA GPU and its driver (scripts/gpu-check runs
// these there): the driver compiles the PTX, every GPU passes its
// self-test, and a 128 x 128 task of 4,096 tiles gives the CPU
// reference's root. Skipped without a driver.
func TestGPUSolverMatchesReference(t *testing.T) {
	s, err := Open(context.Background(), nil)
	if err != nil {
		t.Skipf("no CUDA: %v", err)
	}
	if v, err := DriverVersion(); err == nil {
		t.Logf("CUDA driver %s", v)
	}
	for u, err := range s.Failed() {
		t.Errorf("GPU %s failed: %v", u, err)
	}
	if len(s.GPUs()) == 0 {
		t.Fatal("the driver shows no GPU")
	}
	for _, uuid := range s.GPUs() {
		task := verify.Task{Nonce: "gpu-test", UUID: uuid, TileSize: 128, Tiles: 4096}
		start := time.Now()
		got, err := s.Solve(context.Background(), task)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		want, err := verify.CPUSolver{MaxWork: 1 << 34}.Solve(context.Background(), task)
		if err != nil {
			t.Fatal(err)
		}
		if got.Root() != want.Root() {
			t.Errorf("GPU %s (%s): root %s, CPU reference %s", uuid, s.devs[lower(uuid)].name, got.Root(), want.Root())
		}
		t.Logf("GPU %s (%s): %d tiles of 128 x 128 in %s", uuid, s.devs[lower(uuid)].name, task.Tiles, took)
	}
}

// BenchmarkGPUChallenge solves each GPU's full-size challenge (from the
// model table) and reports its rate in multiply-adds per second.
func BenchmarkGPUChallenge(b *testing.B) {
	s, err := Open(context.Background(), nil)
	if err != nil {
		b.Skipf("no CUDA: %v", err)
	}
	tab, err := verify.DefaultTable()
	if err != nil {
		b.Fatal(err)
	}
	for _, uuid := range s.GPUs() {
		d := s.devs[lower(uuid)]
		m, ok := tab.Lookup(d.name)
		if !ok {
			b.Logf("%s is not in the model table; using the H100's task", d.name)
			m, _ = tab.Lookup("H100")
		}
		task := verify.Task{Nonce: "bench", UUID: uuid, TileSize: m.TileSize, Tiles: m.Tiles}
		b.Run(d.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Solve(context.Background(), task); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(task.Work())*float64(b.N)/b.Elapsed().Seconds(), "mad/s")
			b.ReportMetric(m.MinRate, "min-mad/s")
			b.ReportMetric(m.MaxRate, "max-mad/s")
		})
	}
}
