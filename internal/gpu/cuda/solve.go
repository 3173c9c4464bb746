package cuda

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/gpumarket/gpumarket/internal/verify"
)

// driver is what a solve needs of one GPU's CUDA context: the real one
// (cuda_cgo.go) calls the driver API; the tests' runs the same PTX in an
// interpreter. Addresses are device pointers.
type driver interface {
	alloc(bytes int) (uint64, error)
	free(ptr uint64)
	memsetD32(ptr uint64, v uint32, n int) error
	// launch runs a kernel of kernels.ptx on a grid of grid[0] x grid[1]
	// blocks of Block threads; args are uint64 (pointers) or uint32.
	launch(kernel string, grid [2]uint32, args ...any) error
	sync() error
	copyOut(dst []uint32, src uint64) error
}

// device is one GPU the solver may use.
type device struct {
	uuid, name string
	mu         sync.Mutex // one solve at a time on a GPU
	// run calls f with the GPU's driver, on a thread with its context.
	run func(f func(driver) error) error
}

// Sizing of the host loop.
const (
	batchEntries = 1 << 25 // matrix entries generated per launch (128 MiB a matrix)
	maxGridY     = 65535   // CUDA's limit on a grid's y dimension (tiles per launch)
	syncEvery    = 8       // batches queued between checks of ctx
)

// solveOn computes every tile's digest of t on d, a batch of tiles at a
// time: 128 x 128 tiles with gm_tile128, others by generating A and B
// with gm_inputs and multiplying them with gm_tiles. Only the digests (8
// bytes a tile) come back. batch is the most entries
// of one matrix a launch makes (batchEntries; smaller in tests).
func solveOn(ctx context.Context, d driver, t verify.Task, batch int) ([]verify.Digest, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	n, n2 := t.TileSize, t.TileSize*t.TileSize
	per := min(t.Tiles, max(1, batch/n2), maxGridY) // tiles per batch
	fast := n == t128                               // gm_tile128 makes its own inputs
	k := t.Keys()
	var bufs []uint64
	defer func() {
		for _, p := range bufs {
			d.free(p)
		}
	}()
	alloc := func(bytes int) (uint64, error) {
		p, err := d.alloc(bytes)
		if err == nil {
			bufs = append(bufs, p)
		}
		return p, err
	}
	var a, b uint64
	if !fast {
		var err error
		if a, err = alloc(4 * per * n2); err != nil {
			return nil, err
		}
		if b, err = alloc(4 * per * n2); err != nil {
			return nil, err
		}
	}
	dg, err := alloc(8 * t.Tiles)
	if err != nil {
		return nil, err
	}
	if err := d.memsetD32(dg, 0, 2*t.Tiles); err != nil {
		return nil, err
	}
	blocks := func(threads int) uint32 { return uint32((threads + Block - 1) / Block) }
	for i, tile0 := 0, 0; tile0 < t.Tiles; i, tile0 = i+1, tile0+per {
		cnt := min(per, t.Tiles-tile0)
		total := cnt * n2
		dbatch := dg + uint64(8*tile0)
		if fast {
			err = d.launch("gm_tile128", [2]uint32{uint32(cnt), 1}, dbatch, uint32(tile0), k[0], k[1], k[2], k[3], k[4], k[5])
		} else {
			err = d.launch("gm_inputs", [2]uint32{blocks(total), 1}, a, k[0], k[2], uint32(tile0), uint32(n2), uint32(total))
			if err == nil {
				err = d.launch("gm_inputs", [2]uint32{blocks(total), 1}, b, k[1], k[3], uint32(tile0), uint32(n2), uint32(total))
			}
			if err == nil {
				err = d.launch("gm_tiles", [2]uint32{blocks(n2), uint32(cnt)}, a, b, dbatch, uint32(n), k[4], k[5])
			}
		}
		if err != nil {
			return nil, err
		}
		if (i+1)%syncEvery == 0 {
			if err := d.sync(); err != nil {
				return nil, err
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	if err := d.sync(); err != nil {
		return nil, err
	}
	words := make([]uint32, 2*t.Tiles)
	if err := d.copyOut(words, dg); err != nil {
		return nil, err
	}
	out := make([]verify.Digest, t.Tiles)
	for i := range out {
		out[i] = verify.Digest{words[2*i], words[2*i+1]}
	}
	return out, nil
}

// Solver solves each task on the GPU its UUID names, and hands a task of
// any other GPU (a fake one, or one that failed its self-test) to the
// fallback solver.
type Solver struct {
	fallback verify.Solver
	batch    int
	devs     map[string]*device // by lower-case UUID; passed the self-test
	failed   map[string]error   // by UUID: why a GPU is left to the fallback
}

// selfTests are the tasks a GPU must answer as the CPU reference does
// before the solver uses it: several Merkle leaves, a tile smaller than a
// block (idle threads in the warp reduction), one over several blocks, and
// the 128 x 128 kernel of the real models.
var selfTests = []verify.Task{
	{Nonce: "gpumarket-cuda-self-test-1", TileSize: 8, Tiles: 2 * verify.GroupSize},
	{Nonce: "gpumarket-cuda-self-test-2", TileSize: 24, Tiles: 4},
	{Nonce: "gpumarket-cuda-self-test-3", TileSize: t128, Tiles: 2},
}

// newSolver self-tests devs and returns the solver of those that pass.
func newSolver(ctx context.Context, devs []*device, fallback verify.Solver, batch int) *Solver {
	s := &Solver{fallback: fallback, batch: batch, devs: map[string]*device{}, failed: map[string]error{}}
	for _, d := range devs {
		if err := s.selfTest(ctx, d); err != nil {
			s.failed[d.uuid] = err
			continue
		}
		s.devs[lower(d.uuid)] = d
	}
	return s
}

func (s *Solver) selfTest(ctx context.Context, d *device) error {
	for _, t := range selfTests {
		t.UUID = d.uuid
		got, err := s.solveDevice(ctx, d, t)
		if err != nil {
			return fmt.Errorf("self-test (%d tiles of %d x %d): %w", t.Tiles, t.TileSize, t.TileSize, err)
		}
		want, err := verify.CPUSolver{Workers: 1}.Solve(ctx, t)
		if err != nil {
			return err
		}
		if got.Root() != want.Root() {
			return fmt.Errorf("self-test (%d tiles of %d x %d): the GPU's answer differs from the CPU reference; its challenges are left to the CPU solver", t.Tiles, t.TileSize, t.TileSize)
		}
	}
	return nil
}

func (s *Solver) solveDevice(ctx context.Context, d *device, t verify.Task) (*verify.Solution, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var digests []verify.Digest
	err := d.run(func(drv driver) error {
		var err error
		digests, err = solveOn(ctx, drv, t, s.batch)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("GPU %s (%s): %w", d.uuid, d.name, err)
	}
	return verify.NewSolution(t, digests)
}

// Solve solves t on its GPU, or with the fallback solver when this solver
// does not drive that GPU.
func (s *Solver) Solve(ctx context.Context, t verify.Task) (*verify.Solution, error) {
	if d, ok := s.devs[lower(t.UUID)]; ok {
		return s.solveDevice(ctx, d, t)
	}
	if s.fallback == nil {
		return nil, fmt.Errorf("GPU %s is not driven by the CUDA solver and there is no fallback", t.UUID)
	}
	return s.fallback.Solve(ctx, t)
}

// GPUs lists the UUIDs of the GPUs the solver computes on.
func (s *Solver) GPUs() []string {
	var out []string
	for _, d := range s.devs {
		out = append(out, d.uuid)
	}
	slices.Sort(out)
	return out
}

// Failed says, by UUID, why a GPU the driver shows is left to the
// fallback solver.
func (s *Solver) Failed() map[string]error { return maps.Clone(s.failed) }

// errNoGPU is returned by Open when the driver loads but shows no GPU.
var errNoGPU = errors.New("the CUDA driver shows no GPU")

// lower is the key of a UUID: NVML and CUDA print hex digits in lower
// case, but a UUID typed by hand may not be.
func lower(uuid string) string { return strings.ToLower(uuid) }
