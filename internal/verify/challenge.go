package verify

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"

	"github.com/gpumarket/gpumarket/internal/market"
)

// The compute challenge. A task is Tiles independent products of two
// TileSize x TileSize matrices of uint32, taken mod 2^32. Every matrix is
// drawn from a ChaCha8 stream seeded with SHA-256 of the challenge nonce,
// the GPU's UUID and the tile number, so nothing can be computed before the
// nonce is known and one GPU's answer is worthless for another. The solver
// hashes each tile's result into a leaf of a Merkle tree and commits to the
// root; only then are the tiles to prove drawn (from a secret the agent
// never sees, mixed with the root), and the verifier recomputes just those
// tiles. A solver that skipped a fraction f of the tiles passes with
// probability (1-f)^Samples.

// Task is one GPU's challenge.
type Task struct {
	Nonce    string
	UUID     string
	TileSize int
	Tiles    int
}

// TaskOf returns the task of one GPU of a challenge.
func TaskOf(nonce string, t market.ChallengeTask) Task {
	return Task{Nonce: nonce, UUID: t.UUID, TileSize: t.TileSize, Tiles: t.Tiles}
}

// Work is the task's number of multiply-adds.
func (t Task) Work() int64 {
	return int64(t.Tiles) * int64(t.TileSize) * int64(t.TileSize) * int64(t.TileSize)
}

// Validate checks the task's shape, so that a solver never allocates or
// loops on nonsense from the wire.
func (t Task) Validate() error {
	switch {
	case t.Nonce == "" || t.UUID == "":
		return errors.New("challenge task lacks its nonce or GPU UUID")
	case t.TileSize < 1 || t.TileSize > 1024:
		return fmt.Errorf("challenge tile size %d is outside 1..1024", t.TileSize)
	case t.Tiles < 1 || t.Tiles > 1<<24 || bits.OnesCount(uint(t.Tiles)) != 1:
		return fmt.Errorf("challenge tile count %d is not a power of two up to 2^24", t.Tiles)
	}
	return nil
}

// seed is the ChaCha8 seed of one tile's inputs.
func (t Task) seed(tile int) [32]byte {
	h := sha256.New()
	h.Write([]byte("gpumarket-challenge-v1\x00"))
	h.Write([]byte(t.Nonce))
	h.Write([]byte{0})
	h.Write([]byte(t.UUID))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(tile))
	h.Write(b[:])
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// Inputs fills a and b (each TileSize^2 long, row-major) with one tile's
// matrices.
func (t Task) Inputs(tile int, a, b []uint32) {
	r := rand.NewChaCha8(t.seed(tile))
	fill := func(m []uint32) {
		for i := 0; i+1 < len(m); i += 2 {
			v := r.Uint64()
			m[i], m[i+1] = uint32(v), uint32(v>>32)
		}
		if len(m)%2 == 1 {
			m[len(m)-1] = uint32(r.Uint64())
		}
	}
	fill(a)
	fill(b)
}

// tileBuf holds one tile's inputs and result, reused across tiles.
type tileBuf struct{ a, b, c []uint32 }

func newTileBuf(n int) *tileBuf {
	return &tileBuf{a: make([]uint32, n*n), b: make([]uint32, n*n), c: make([]uint32, n*n)}
}

// ComputeTile returns one tile's product A x B mod 2^32, row-major. This is
// the reference the verifier trusts; the CPU solver uses it too.
func (t Task) ComputeTile(tile int) []uint32 {
	buf := newTileBuf(t.TileSize)
	t.computeInto(tile, buf)
	return buf.c
}

func (t Task) computeInto(tile int, buf *tileBuf) {
	n := t.TileSize
	t.Inputs(tile, buf.a, buf.b)
	clear(buf.c)
	for i := range n {
		crow := buf.c[i*n : (i+1)*n]
		arow := buf.a[i*n : (i+1)*n]
		for k, av := range arow {
			brow := buf.b[k*n : (k+1)*n]
			for j, bv := range brow {
				crow[j] += av * bv
			}
		}
	}
}

// EncodeResult writes a tile's result as little-endian uint32s.
func EncodeResult(c []uint32) []byte {
	out := make([]byte, 4*len(c))
	for i, v := range c {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
	return out
}

// Leaf is the Merkle leaf of one tile's encoded result.
func Leaf(tile int, result []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(tile))
	h.Write(b[:])
	h.Write(result)
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func node(l, r [32]byte) [32]byte {
	var buf [65]byte
	buf[0] = 1
	copy(buf[1:], l[:])
	copy(buf[33:], r[:])
	return sha256.Sum256(buf[:])
}

// Tree is a Merkle tree over a power-of-two number of leaves.
type Tree struct {
	levels [][][32]byte // levels[0] are the leaves; the last level is the root
}

// NewTree builds the tree over leaves, whose number must be a power of two.
func NewTree(leaves [][32]byte) (Tree, error) {
	if len(leaves) == 0 || bits.OnesCount(uint(len(leaves))) != 1 {
		return Tree{}, fmt.Errorf("a Merkle tree needs a power-of-two number of leaves, got %d", len(leaves))
	}
	levels := [][][32]byte{slices.Clone(leaves)}
	for cur := levels[0]; len(cur) > 1; {
		next := make([][32]byte, len(cur)/2)
		for i := range next {
			next[i] = node(cur[2*i], cur[2*i+1])
		}
		levels = append(levels, next)
		cur = next
	}
	return Tree{levels: levels}, nil
}

// Root returns the root hash.
func (t Tree) Root() [32]byte { return t.levels[len(t.levels)-1][0] }

// Path returns the sibling hashes from leaf i up to the root.
func (t Tree) Path(i int) [][32]byte {
	var p [][32]byte
	for _, lv := range t.levels[:len(t.levels)-1] {
		p = append(p, lv[i^1])
		i /= 2
	}
	return p
}

// VerifyPath reports whether leaf i with path leads to root.
func VerifyPath(leaf [32]byte, i int, path [][32]byte, root [32]byte) bool {
	h := leaf
	for _, s := range path {
		if i%2 == 0 {
			h = node(h, s)
		} else {
			h = node(s, h)
		}
		i /= 2
	}
	return i == 0 && h == root
}

// Solution is a solved task: the Merkle tree over its tiles. Proofs
// recompute the asked tiles instead of keeping every result, so memory
// stays at one hash per tile.
type Solution struct {
	Task Task
	tree Tree
}

// Root is the commitment, in hex.
func (s *Solution) Root() string {
	r := s.tree.Root()
	return hex.EncodeToString(r[:])
}

// Prove returns the proof of one tile.
func (s *Solution) Prove(tile int) (market.TileProof, error) {
	if tile < 0 || tile >= s.Task.Tiles {
		return market.TileProof{}, fmt.Errorf("tile %d is not in 0..%d", tile, s.Task.Tiles-1)
	}
	p := market.TileProof{Tile: tile, Result: EncodeResult(s.Task.ComputeTile(tile))}
	for _, h := range s.tree.Path(tile) {
		p.Path = append(p.Path, hex.EncodeToString(h[:]))
	}
	return p, nil
}

// NewSolution builds a solution from the leaves of every tile, for solvers
// (a GPU one) that compute the results elsewhere.
func NewSolution(t Task, leaves [][32]byte) (*Solution, error) {
	if len(leaves) != t.Tiles {
		return nil, fmt.Errorf("%d leaves for a task of %d tiles", len(leaves), t.Tiles)
	}
	tree, err := NewTree(leaves)
	if err != nil {
		return nil, err
	}
	return &Solution{Task: t, tree: tree}, nil
}

// Solver computes a task. The CPU solver is the reference; a GPU solver
// must produce the same leaves.
type Solver interface {
	Solve(ctx context.Context, t Task) (*Solution, error)
}

// CPUSolver solves tasks on the CPU, spreading tiles over Workers
// goroutines (0: one per CPU). Tasks above MaxWork multiply-adds (0: 2^32)
// are refused: they are sized for a real GPU and would take hours here.
type CPUSolver struct {
	Workers int
	MaxWork int64
}

// ErrTooBig is returned for a task sized beyond what the CPU path does.
var ErrTooBig = errors.New("task too big for the CPU solver")

// Solve computes every tile and returns the solution.
func (c CPUSolver) Solve(ctx context.Context, t Task) (*Solution, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	maxWork := c.MaxWork
	if maxWork <= 0 {
		maxWork = 1 << 32
	}
	if t.Work() > maxWork {
		return nil, fmt.Errorf("%w: %d multiply-adds is above %d; this GPU needs a GPU solver", ErrTooBig, t.Work(), maxWork)
	}
	workers := c.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, t.Tiles)
	leaves := make([][32]byte, t.Tiles)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var next int
	for range workers {
		wg.Go(func() {
			buf := newTileBuf(t.TileSize)
			enc := make([]byte, 4*t.TileSize*t.TileSize)
			for ctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= t.Tiles {
					return
				}
				t.computeInto(i, buf)
				for k, v := range buf.c {
					binary.LittleEndian.PutUint32(enc[4*k:], v)
				}
				leaves[i] = Leaf(i, enc)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return NewSolution(t, leaves)
}

// SampleTiles picks n distinct tiles of a task to prove, from the
// coordinator's secret mixed with the GPU and its committed root: the agent
// cannot know them before it commits, and a new root gives new tiles.
func SampleTiles(secret, uuid, root string, tiles, n int) []int {
	n = min(n, tiles)
	seed := sha256.Sum256([]byte("gpumarket-samples-v1\x00" + secret + "\x00" + uuid + "\x00" + root))
	r := rand.New(rand.NewChaCha8(seed))
	picked := map[int]bool{}
	out := make([]int, 0, n)
	for len(out) < n {
		i := r.IntN(tiles)
		if !picked[i] {
			picked[i] = true
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// CheckProofs verifies the proofs of the sampled tiles against the
// committed root by recomputing those tiles. It says which tile failed and
// how.
func CheckProofs(t Task, root string, samples []int, proofs []market.TileProof) error {
	if err := t.Validate(); err != nil {
		return err
	}
	rb, err := hex.DecodeString(root)
	if err != nil || len(rb) != 32 {
		return fmt.Errorf("commitment %q is not a 32-byte hex hash", root)
	}
	r := [32]byte(rb)
	byTile := map[int]market.TileProof{}
	for _, p := range proofs {
		byTile[p.Tile] = p
	}
	depth := bits.Len(uint(t.Tiles)) - 1
	for _, i := range samples {
		p, ok := byTile[i]
		if !ok {
			return fmt.Errorf("no proof for tile %d", i)
		}
		want := EncodeResult(t.ComputeTile(i))
		if string(p.Result) != string(want) {
			return fmt.Errorf("tile %d: the result given is not the product of the challenge's matrices", i)
		}
		if len(p.Path) != depth {
			return fmt.Errorf("tile %d: Merkle path has %d hashes, want %d", i, len(p.Path), depth)
		}
		path := make([][32]byte, depth)
		for k, h := range p.Path {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != 32 {
				return fmt.Errorf("tile %d: Merkle path hash %d is not a 32-byte hex hash", i, k)
			}
			path[k] = [32]byte(b)
		}
		if !VerifyPath(Leaf(i, want), i, path, r) {
			return fmt.Errorf("tile %d: the result does not match the committed root", i)
		}
	}
	return nil
}
