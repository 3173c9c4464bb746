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
	"sync/atomic"

	"github.com/gpumarket/gpumarket/internal/market"
)

// The compute challenge (protocol 2). A task is Tiles independent
// products of two TileSize x TileSize matrices of uint32, taken mod 2^32.
// Every matrix entry is a keyed hash of its position (Keys.Element), with
// the key drawn from SHA-256 of the challenge nonce and the GPU's UUID, so
// nothing can be computed before the nonce is known, one GPU's answer is
// worthless for another, and a GPU makes its own inputs: no host work per
// entry. Each tile's product is reduced to a 64-bit digest (Keys.Digest), a
// sum of a nonlinear hash of every entry with its position, which needs
// every entry of the product. Digests are committed in groups of GroupSize
// tiles, one Merkle leaf per group, so the host hashes 8 bytes per tile.
// Only after the commitment are the tiles to prove drawn (from a secret the
// agent never sees, mixed with the root); the verifier recomputes just
// those tiles. A solver that skipped a fraction f of the tiles passes with
// probability (1-f)^Samples.
//
// Protocol 1 drew the matrices from a ChaCha8 stream per tile and hashed
// each tile's whole result with SHA-256 on the host: 178 us of host CPU
// per 128 x 128 tile, three minutes for a real GPU's 2^20 tiles, which
// that GPU multiplies in a fraction of a second.

// Protocol is the challenge protocol this package implements. Challenges
// carry it, so that an agent built for another one says so.
const Protocol = 2

// GroupSize is how many tiles' digests one Merkle leaf commits to (fewer
// when the task has fewer tiles).
const GroupSize = 256

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

// Group is the number of tiles per Merkle leaf of the task.
func (t Task) Group() int { return min(GroupSize, t.Tiles) }

// Keys are the task's eight key words: 0 and 1 key the tiles of A and B,
// 2 and 3 their entries, 4 and 5 the two halves of the digest.
type Keys [8]uint32

// Keys derives the task's key from SHA-256("gpumarket-challenge-v2\0" ||
// nonce || "\0" || uuid), as little-endian words.
func (t Task) Keys() Keys {
	h := sha256.Sum256([]byte("gpumarket-challenge-v2\x00" + t.Nonce + "\x00" + t.UUID))
	var k Keys
	for i := range k {
		k[i] = binary.LittleEndian.Uint32(h[4*i:])
	}
	return k
}

// Mix32 is the 32-bit integer hash every part of the task is made of
// (Chris Wellons' lowbias32): two multiplications and three xor-shifts,
// cheap on a GPU and a bijection, so no two entries collide by it.
func Mix32(x uint32) uint32 {
	x ^= x >> 16
	x *= 0x7feb352d
	x ^= x >> 15
	x *= 0x846ca68b
	x ^= x >> 16
	return x
}

// Odd constants that spread positions over 32 bits.
const (
	golden = 0x9e3779b9
	spread = 0x85ebca77
)

// Element is entry e (row-major) of matrix m (0: A, 1: B) of a tile:
// Mix32(Mix32(h + e*golden) ^ key[2+m]), with h = Mix32(key[m] ^ tile).
func (k Keys) Element(m, tile, e int) uint32 {
	h := Mix32(k[m] ^ uint32(tile))
	return Mix32(Mix32(h+uint32(e)*golden) ^ k[2+m])
}

// Inputs fills a and b (each TileSize^2 long, row-major) with one tile's
// matrices.
func (t Task) Inputs(tile int, a, b []uint32) {
	t.Keys().inputs(tile, a, b)
}

func (k Keys) inputs(tile int, a, b []uint32) {
	for m, out := range [][]uint32{a, b} {
		h := Mix32(k[m] ^ uint32(tile))
		for e := range out {
			out[e] = Mix32(Mix32(h+uint32(e)*golden) ^ k[2+m])
		}
	}
}

// Digest is a tile's 64-bit digest.
type Digest [2]uint32

// Digest reduces a tile's product c (row-major) to its digest: the sums,
// mod 2^32, over every entry e of Mix32(c[e] + key[4] + e*golden) and
// Mix32((c[e] ^ key[5]) + e*spread). A GPU adds the terms in any order.
func (k Keys) Digest(c []uint32) Digest {
	var d Digest
	for e, v := range c {
		d[0] += Mix32(v + k[4] + uint32(e)*golden)
		d[1] += Mix32((v ^ k[5]) + uint32(e)*spread)
	}
	return d
}

// tileBuf holds one tile's inputs and result, reused across tiles.
type tileBuf struct{ a, b, c []uint32 }

func newTileBuf(n int) *tileBuf {
	return &tileBuf{a: make([]uint32, n*n), b: make([]uint32, n*n), c: make([]uint32, n*n)}
}

// ComputeTile returns one tile's product A x B mod 2^32, row-major.
func (t Task) ComputeTile(tile int) []uint32 {
	buf := newTileBuf(t.TileSize)
	t.computeInto(t.Keys(), tile, buf)
	return buf.c
}

// TileDigest returns one tile's digest. This is the reference the verifier
// trusts; the CPU solver uses it too.
func (t Task) TileDigest(tile int) Digest {
	k := t.Keys()
	buf := newTileBuf(t.TileSize)
	t.computeInto(k, tile, buf)
	return k.Digest(buf.c)
}

func (t Task) computeInto(k Keys, tile int, buf *tileBuf) {
	n := t.TileSize
	k.inputs(tile, buf.a, buf.b)
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

// EncodeDigests writes digests as little-endian uint32 pairs.
func EncodeDigests(ds []Digest) []byte {
	out := make([]byte, 8*len(ds))
	for i, d := range ds {
		binary.LittleEndian.PutUint32(out[8*i:], d[0])
		binary.LittleEndian.PutUint32(out[8*i+4:], d[1])
	}
	return out
}

// DecodeDigests reads what EncodeDigests wrote.
func DecodeDigests(b []byte) ([]Digest, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("%d bytes of digests is not a whole number of 8-byte digests", len(b))
	}
	ds := make([]Digest, len(b)/8)
	for i := range ds {
		ds[i] = Digest{binary.LittleEndian.Uint32(b[8*i:]), binary.LittleEndian.Uint32(b[8*i+4:])}
	}
	return ds, nil
}

// Leaf is the Merkle leaf of one group of tiles: SHA-256(0x00 ||
// uint64_be(group) || the group's digests encoded).
func Leaf(group int, digests []Digest) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(group))
	h.Write(b[:])
	h.Write(EncodeDigests(digests))
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

// Solution is a solved task: every tile's digest and the Merkle tree over
// their groups (8 bytes per tile, 8 MiB for 2^20 tiles).
type Solution struct {
	Task    Task
	digests []Digest
	tree    Tree
}

// Root is the commitment, in hex.
func (s *Solution) Root() string {
	r := s.tree.Root()
	return hex.EncodeToString(r[:])
}

// Prove returns the proof of one tile: its group's digests and the
// group's Merkle path.
func (s *Solution) Prove(tile int) (market.TileProof, error) {
	if tile < 0 || tile >= s.Task.Tiles {
		return market.TileProof{}, fmt.Errorf("tile %d is not in 0..%d", tile, s.Task.Tiles-1)
	}
	g := s.Task.Group()
	p := market.TileProof{Tile: tile, Group: EncodeDigests(s.digests[tile/g*g : (tile/g+1)*g])}
	for _, h := range s.tree.Path(tile / g) {
		p.Path = append(p.Path, hex.EncodeToString(h[:]))
	}
	return p, nil
}

// NewSolution builds a solution from the digest of every tile, for solvers
// (a GPU one) that compute them elsewhere.
func NewSolution(t Task, digests []Digest) (*Solution, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if len(digests) != t.Tiles {
		return nil, fmt.Errorf("%d digests for a task of %d tiles", len(digests), t.Tiles)
	}
	g := t.Group()
	leaves := make([][32]byte, t.Tiles/g)
	for i := range leaves {
		leaves[i] = Leaf(i, digests[i*g:(i+1)*g])
	}
	tree, err := NewTree(leaves)
	if err != nil {
		return nil, err
	}
	return &Solution{Task: t, digests: slices.Clone(digests), tree: tree}, nil
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
	k := t.Keys()
	digests := make([]Digest, t.Tiles)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Go(func() {
			buf := newTileBuf(t.TileSize)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= t.Tiles {
					return
				}
				t.computeInto(k, i, buf)
				digests[i] = k.Digest(buf.c)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return NewSolution(t, digests)
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
	g := t.Group()
	depth := bits.Len(uint(t.Tiles/g)) - 1
	for _, i := range samples {
		p, ok := byTile[i]
		if !ok {
			return fmt.Errorf("no proof for tile %d", i)
		}
		group, err := DecodeDigests(p.Group)
		if err != nil || len(group) != g {
			return fmt.Errorf("tile %d: the proof's group has %d bytes, want %d (%d tiles' digests)", i, len(p.Group), 8*g, g)
		}
		if group[i%g] != t.TileDigest(i) {
			return fmt.Errorf("tile %d: the digest given is not that of the product of the challenge's matrices", i)
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
		if !VerifyPath(Leaf(i/g, group), i/g, path, r) {
			return fmt.Errorf("tile %d: its group does not match the committed root", i)
		}
	}
	return nil
}
