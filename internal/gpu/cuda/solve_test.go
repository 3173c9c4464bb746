package cuda

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gpumarket/gpumarket/internal/verify"
)

func emu(t *testing.T, src string) *emuDriver {
	t.Helper()
	e, err := newEmu(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.kernels) != 3 {
		t.Fatalf("parsed %d kernels, want gm_inputs, gm_tiles and gm_tile128", len(e.kernels))
	}
	return e
}

func emuDevice(e *emuDriver, uuid string) *device {
	return &device{uuid: uuid, name: "emulated", run: func(f func(driver) error) error { return f(e) }}
}

func TestPTXExpandsMix32(t *testing.T) {
	p := PTX()
	for l := range strings.Lines(p) {
		if strings.HasPrefix(strings.TrimSpace(l), "MIX32") {
			t.Fatalf("MIX32 left in the PTX: %q", l)
		}
	}
	// Eight instructions per MIX32 line.
	if got, want := strings.Count(p, "0x7feb352dU"), strings.Count(kernelSource+tile128PTX(), "MIX32 %"); got != want {
		t.Fatalf("%d expansions for %d MIX32 lines", got, want)
	}
}

// The kernels, run by the interpreter through the same host loop as on a
// GPU, give every tile the digest of the CPU reference: tiles smaller than
// a warp, than a block, over several blocks, in one batch and in many
// (the last one partial).
func TestKernelsMatchReference(t *testing.T) {
	tasks := []verify.Task{
		{Nonce: "n-1", UUID: "GPU-emu", TileSize: 8, Tiles: 2 * verify.GroupSize},
		{Nonce: "n-2", UUID: "GPU-emu", TileSize: 5, Tiles: 16},
		{Nonce: "n-3", UUID: "GPU-emu", TileSize: 1, Tiles: 4},
		{Nonce: "n-4", UUID: "GPU-emu", TileSize: 24, Tiles: 8},
		{Nonce: "n-5", UUID: "GPU-emu", TileSize: 17, Tiles: 4},
		{Nonce: "n-6", UUID: "GPU-emu", TileSize: 128, Tiles: 4}, // gm_tile128
	}
	for _, task := range tasks {
		n2 := task.TileSize * task.TileSize
		for _, batch := range []int{batchEntries, 3 * n2} {
			e := emu(t, PTX())
			got, err := solveOn(context.Background(), e, task, batch)
			if err != nil {
				t.Fatalf("%+v, batch %d: %v", task, batch, err)
			}
			for i, d := range got {
				if want := task.TileDigest(i); d != want {
					t.Fatalf("%+v, batch %d: tile %d digest %08x, want %08x", task, batch, i, d, want)
				}
			}
			perBatch := 3 // gm_inputs twice, gm_tiles
			if task.TileSize == 128 {
				perBatch = 1 // gm_tile128
			}
			wantLaunches := perBatch * ((task.Tiles + batch/n2 - 1) / (batch / n2))
			if batch == batchEntries {
				wantLaunches = perBatch
			}
			if e.launches != wantLaunches {
				t.Errorf("%+v, batch %d: %d launches, want %d", task, batch, e.launches, wantLaunches)
			}
			if len(e.mem) != 0 {
				t.Errorf("%+v: %d device buffers not freed", task, len(e.mem))
			}
		}
	}
}

type countingSolver struct{ calls atomic.Int64 }

func (c *countingSolver) Solve(ctx context.Context, t verify.Task) (*verify.Solution, error) {
	c.calls.Add(1)
	return verify.CPUSolver{Workers: 1}.Solve(ctx, t)
}

// A GPU whose kernels answer wrong fails the self-test and its tasks go
// to the fallback; a good one computes its own; a fake GPU's go to the
// fallback.
func TestSelfTestLeavesABrokenGPUToTheFallback(t *testing.T) {
	broken := strings.Replace(PTX(), "0x85ebca77U", "0x85ebca79U", 1)
	if broken == PTX() {
		t.Fatal("the mutation did not apply")
	}
	fb := &countingSolver{}
	s := newSolver(context.Background(), []*device{emuDevice(emu(t, PTX()), "GPU-Good"), emuDevice(emu(t, broken), "GPU-bad")}, fb, batchEntries)
	if got := s.GPUs(); len(got) != 1 || got[0] != "GPU-Good" {
		t.Fatalf("GPUs %v, want [GPU-Good]", got)
	}
	if err := s.Failed()["GPU-bad"]; err == nil || !strings.Contains(err.Error(), "differs from the CPU reference") {
		t.Fatalf("the broken GPU's failure: %v", err)
	}
	for _, uuid := range []string{"gpu-good", "GPU-bad", "GPU-fake-x"} {
		task := verify.Task{Nonce: "n", UUID: uuid, TileSize: 8, Tiles: 16}
		before := fb.calls.Load()
		sol, err := s.Solve(context.Background(), task)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := verify.CPUSolver{}.Solve(context.Background(), task)
		if sol.Root() != want.Root() {
			t.Errorf("%s: root differs from the reference", uuid)
		}
		if fell := fb.calls.Load() > before; fell != (uuid != "gpu-good") {
			t.Errorf("%s: fallback used %v", uuid, fell)
		}
	}
}

func TestSolveStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	task := verify.Task{Nonce: "n", UUID: "GPU-emu", TileSize: 1, Tiles: 64}
	_, err := solveOn(ctx, emu(t, PTX()), task, 1) // one tile a batch: a check every syncEvery
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

// The interpreter refuses what the driver would, so the tests above can
// fail for those reasons too.
func TestEmulatorRefusesBadKernels(t *testing.T) {
	part := verify.Task{Nonce: "n", UUID: "GPU-emu", TileSize: 5, Tiles: 4} // 25 entries: a warp in part
	big := verify.Task{Nonce: "n", UUID: "GPU-emu", TileSize: 128, Tiles: 1}
	tests := []struct {
		name, from, to, want string
		run                  *verify.Task // nil: refused when parsed
	}{
		{"undeclared register", "mov.u32 %r1, %ctaid.x;", "mov.u32 %r99, %ctaid.x;", "not declared", nil},
		{"wrong width", "cvt.u64.u32 %rd2, %r10;", "cvt.u64.u32 %r2, %r10;", "32-bit register, want 64-bit", nil},
		{"unknown instruction", "rem.u32 %r8, %r4, %r6;", "rem.s32 %r8, %r4, %r6;", "not emulated", nil},
		{"missing label", "@%p2 bra T_LOOP;", "@%p2 bra T_LOOOP;", "no label", nil},
		// B read past its row: out of the allocation.
		{"out of bounds", "mul.wide.u32 %rd10, %r5, 4;", "mul.wide.u32 %rd10, %r5, 8;", "outside every allocation", &part},
		// Lanes past the tile exit before the shuffle.
		{"exit before shuffle", "@%p1 bra T_REDUCE;", "@%p1 bra T_DONE;", "lanes have exited", &part},
		{"shared out of bounds", "st.shared.u32 [%r22+7168], %r21;", "st.shared.u32 [%r22+8192], %r21;", "outside the 16384 bytes of shared memory", &big},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(PTX(), tc.from, tc.to, 1)
			if src == PTX() {
				t.Fatal("the mutation did not apply")
			}
			var err error
			if tc.run == nil {
				_, err = newEmu(src)
			} else {
				_, err = solveOn(context.Background(), emu(t, src), *tc.run, batchEntries)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	e := emu(t, PTX())
	if err := e.launch("gm_tiles", [2]uint32{1, 1}, uint64(0), uint32(1)); err == nil || !strings.Contains(err.Error(), "2 arguments for 6 parameters") {
		t.Fatalf("launch with too few arguments: %v", err)
	}
	if err := e.launch("gm_inputs", [2]uint32{1, 1}, uint32(0), uint32(1), uint32(1), uint32(0), uint32(1), uint32(1)); err == nil || !strings.Contains(err.Error(), "parameter p_out is 64-bit") {
		t.Fatalf("launch with a 32-bit pointer: %v", err)
	}
}

// Without the driver (this machine, CI), Open says why and the agent keeps
// the CPU solver.
func TestOpenWithoutDriverSaysWhy(t *testing.T) {
	s, err := Open(context.Background(), verify.CPUSolver{})
	if err == nil {
		t.Skipf("a CUDA driver is present (GPUs %v, failed %v): cuda_gpu_test.go covers it", s.GPUs(), s.Failed())
	}
	if !errors.Is(err, ErrUnavailable) && !errors.Is(err, errNoGPU) {
		t.Fatalf("Open: %v, want ErrUnavailable or no GPU", err)
	}
	t.Logf("Open: %v", err)
}

// Without the barrier between making a chunk in shared memory and using
// it, threads read entries not yet written: the interpreter, which runs
// each thread as far as it can, shows the wrong digest a GPU might give.
func TestMissingBarrierIsCaught(t *testing.T) {
	src := PTX()
	i := strings.Index(src, ".entry gm_tile128")
	j := strings.Index(src[i:], "bar.sync 0;")
	broken := src[:i+j] + src[i+j+len("bar.sync 0;"):]
	task := verify.Task{Nonce: "n", UUID: "GPU-emu", TileSize: 128, Tiles: 1}
	got, err := solveOn(context.Background(), emu(t, broken), task, batchEntries)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] == task.TileDigest(0) {
		t.Fatal("a kernel without its barrier gave the right digest")
	}
}
