package verify_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// smallTask has four Merkle leaves of 256 tiles each.
func smallTask(nonce string) verify.Task {
	return verify.Task{Nonce: nonce, UUID: "GPU-fake-aaaa", TileSize: 16, Tiles: 4 * verify.GroupSize}
}

func solve(t testing.TB, task verify.Task) *verify.Solution {
	t.Helper()
	sol, err := verify.CPUSolver{Workers: 2}.Solve(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	return sol
}

func prove(t testing.TB, sol *verify.Solution, tiles []int) []market.TileProof {
	t.Helper()
	var ps []market.TileProof
	for _, i := range tiles {
		p, err := sol.Prove(i)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

// The tile product is the textbook one: check one entry by hand.
func TestComputeTileIsTheProduct(t *testing.T) {
	task := smallTask("n1")
	n := task.TileSize
	a, b := make([]uint32, n*n), make([]uint32, n*n)
	task.Inputs(3, a, b)
	c := task.ComputeTile(3)
	for _, ij := range [][2]int{{0, 0}, {5, 7}, {n - 1, n - 1}} {
		var want uint32
		for k := range n {
			want += a[ij[0]*n+k] * b[k*n+ij[1]]
		}
		if got := c[ij[0]*n+ij[1]]; got != want {
			t.Errorf("C[%d][%d] = %d, want %d", ij[0], ij[1], got, want)
		}
	}
	// Inputs depend on the nonce, the UUID and the tile.
	a2, b2 := make([]uint32, n*n), make([]uint32, n*n)
	for _, other := range []verify.Task{smallTask("n2"), {Nonce: "n1", UUID: "GPU-fake-bbbb", TileSize: 16, Tiles: 1024}} {
		other.Inputs(3, a2, b2)
		if a2[0] == a[0] && a2[1] == a[1] && b2[0] == b[0] {
			t.Errorf("task %+v has the same inputs as %+v", other, task)
		}
	}
}

func TestHonestProofsPassAndTamperingFails(t *testing.T) {
	task := smallTask("nonce-1")
	sol := solve(t, task)
	tiles := verify.SampleTiles("secret", task.UUID, sol.Root(), task.Tiles, 3)
	proofs := prove(t, sol, tiles)
	if err := verify.CheckProofs(task, sol.Root(), tiles, proofs); err != nil {
		t.Fatalf("honest proofs rejected: %v", err)
	}

	old := solve(t, smallTask("nonce-0")) // an answer to an earlier challenge
	g := task.Group()
	tests := []struct {
		name   string
		root   string
		proofs func() []market.TileProof
		want   string
	}{
		{"wrong digest", sol.Root(), func() []market.TileProof {
			ps := prove(t, sol, tiles)
			ps[1].Group[8*(tiles[1]%g)+5] ^= 1
			return ps
		}, "not that of the product"},
		{"another tile's digest changed", sol.Root(), func() []market.TileProof {
			ps := prove(t, sol, tiles)
			ps[1].Group[8*((tiles[1]+1)%g)] ^= 1
			return ps
		}, "does not match the committed root"},
		{"short group", sol.Root(), func() []market.TileProof {
			ps := prove(t, sol, tiles)
			ps[0].Group = ps[0].Group[:8*g-8]
			return ps
		}, "the proof's group has"},
		{"missing proof", sol.Root(), func() []market.TileProof { return prove(t, sol, tiles)[1:] }, "no proof for tile"},
		{"proof of a tile of another group", sol.Root(), func() []market.TileProof {
			ps := prove(t, sol, tiles)
			other, _ := sol.Prove((tiles[0] + g) % task.Tiles)
			other.Tile = tiles[0]
			ps[0] = other
			return ps
		}, "not that of the product"},
		{"tampered path", sol.Root(), func() []market.TileProof {
			ps := prove(t, sol, tiles)
			ps[0].Path[0] = strings.Repeat("00", 32)
			return ps
		}, "does not match the committed root"},
		{"short path", sol.Root(), func() []market.TileProof {
			ps := prove(t, sol, tiles)
			ps[0].Path = ps[0].Path[1:]
			return ps
		}, "Merkle path has"},
		{"replayed old answer", old.Root(), func() []market.TileProof { return prove(t, old, tiles) }, "not that of the product"},
		{"root of another answer", old.Root(), func() []market.TileProof { return prove(t, sol, tiles) }, "does not match the committed root"},
		{"garbage root", "xyz", func() []market.TileProof { return prove(t, sol, tiles) }, "not a 32-byte hex hash"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verify.CheckProofs(task, tc.root, tiles, tc.proofs())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A solver that computes only some tiles and commits garbage for the rest
// is caught with probability 1-(1-f)^samples; with all samples on garbage
// tiles it always fails.
func TestSkippedTilesAreCaught(t *testing.T) {
	task := smallTask("nonce-skip")
	digests := make([]verify.Digest, task.Tiles)
	for i := range digests {
		if i%2 == 0 {
			digests[i] = task.TileDigest(i)
		}
	}
	sol, err := verify.NewSolution(task, digests)
	if err != nil {
		t.Fatal(err)
	}
	caught := 0
	for k := range 50 {
		tiles := verify.SampleTiles(fmt.Sprint("s", k), task.UUID, sol.Root(), task.Tiles, 4)
		if verify.CheckProofs(task, sol.Root(), tiles, prove(t, sol, tiles)) != nil {
			caught++
		}
	}
	// (1/2)^4 = 1/16 chance to slip through per check.
	if caught < 35 {
		t.Errorf("a solver skipping half the tiles was caught %d times out of 50", caught)
	}
}

func TestSampleTiles(t *testing.T) {
	a := verify.SampleTiles("s", "u", "r", 16, 4)
	if b := verify.SampleTiles("s", "u", "r", 16, 4); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("not deterministic: %v vs %v", a, b)
	}
	seen := map[int]bool{}
	for _, i := range a {
		if i < 0 || i >= 16 || seen[i] {
			t.Errorf("bad sample %d in %v", i, a)
		}
		seen[i] = true
	}
	if c := verify.SampleTiles("s", "u", "r2", 16, 4); fmt.Sprint(a) == fmt.Sprint(c) {
		t.Errorf("a new root should give new tiles (%v both)", a)
	}
	if got := verify.SampleTiles("s", "u", "r", 4, 10); len(got) != 4 {
		t.Errorf("asking more samples than tiles gives every tile, got %v", got)
	}
}

func TestSolverRefusesBadTasks(t *testing.T) {
	tests := []struct {
		name string
		task verify.Task
		want string
	}{
		{"no nonce", verify.Task{UUID: "u", TileSize: 8, Tiles: 4}, "nonce"},
		{"tiles not power of two", verify.Task{Nonce: "n", UUID: "u", TileSize: 8, Tiles: 6}, "power of two"},
		{"huge tile", verify.Task{Nonce: "n", UUID: "u", TileSize: 1 << 20, Tiles: 4}, "tile size"},
		{"sized for a GPU", verify.Task{Nonce: "n", UUID: "u", TileSize: 128, Tiles: 1 << 20}, "GPU solver"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify.CPUSolver{}.Solve(context.Background(), tc.task)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	_, err := verify.CPUSolver{}.Solve(context.Background(), verify.Task{Nonce: "n", UUID: "u", TileSize: 256, Tiles: 1 << 18})
	if !errors.Is(err, verify.ErrTooBig) {
		t.Errorf("want ErrTooBig, got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (verify.CPUSolver{}).Solve(ctx, smallTask("n")); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled solve returned %v", err)
	}
}

// honestChallenge runs the whole protocol for one fake GPU as the
// coordinator and an honest agent would, timing the solve as the
// coordinator does, and returns the judge's verdict.
func honestChallenge(tab *verify.Table, g market.GPU) (float64, error) {
	plan, err := tab.Plan(g, true)
	if err != nil {
		return 0, err
	}
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	task := verify.Task{Nonce: hex.EncodeToString(nb[:]), UUID: g.UUID, TileSize: plan.TileSize, Tiles: plan.Tiles}
	start := time.Now()
	sol, err := verify.CPUSolver{}.Solve(context.Background(), task)
	if err != nil {
		return 0, err
	}
	rate, err := tab.Judge(plan, time.Since(start))
	if err != nil {
		return rate, err
	}
	tiles := verify.SampleTiles(hex.EncodeToString(nb[:8]), g.UUID, sol.Root(), task.Tiles, plan.Samples)
	var proofs []market.TileProof
	for _, i := range tiles {
		p, err := sol.Prove(i)
		if err != nil {
			return rate, err
		}
		proofs = append(proofs, p)
	}
	return rate, verify.CheckProofs(task, sol.Root(), tiles, proofs)
}

// Honest agents are never rejected: 1,000 challenges (fewer under the race
// detector, which slows the CPU path about tenfold) on every fake model in
// turn, with zero false rejections.
func TestHonestChallengesNeverRejected(t *testing.T) {
	n := 1000
	if raceEnabled || testing.Short() {
		n = 40
	}
	tab := table(t)
	var gpus []market.GPU
	for _, m := range fake.Models() {
		gs, err := fake.Parse(m.Short, "honest")
		if err != nil {
			t.Fatal(err)
		}
		gpus = append(gpus, gs...)
	}
	rejected := 0
	for i := range n {
		if _, err := honestChallenge(tab, gpus[i%len(gpus)]); err != nil {
			rejected++
			t.Errorf("challenge %d rejected: %v", i, err)
		}
	}
	t.Logf("%d honest challenges, %d false rejections", n, rejected)
}

// BenchmarkChallenge times one whole challenge (derive, solve, commit,
// prove, verify) on the CPU path for each fake GPU model. Run with
// -bench Challenge -benchtime 1000x for the 1,000-challenge figure.
func BenchmarkChallenge(b *testing.B) {
	tab := table(b)
	for _, m := range fake.Models() {
		gs, err := fake.Parse(m.Short, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(strings.ReplaceAll(m.Short, " ", "_"), func(b *testing.B) {
			rejected := 0
			for b.Loop() {
				if _, err := honestChallenge(tab, gs[0]); err != nil {
					rejected++
				}
			}
			b.ReportMetric(float64(rejected), "rejections")
		})
	}
}

// Element, Inputs and the digest agree, and the protocol's values are
// pinned: a GPU solver computes them on its own, so a change here is a
// change of protocol (bump verify.Protocol) and not a refactoring.
func TestProtocolVectors(t *testing.T) {
	task := verify.Task{Nonce: "0123456789abcdef0123", UUID: "GPU-5d2b0b5e-8c53-7e1c-2d41-8a8a7f0e1d3c", TileSize: 8, Tiles: 2}
	k := task.Keys()
	n := task.TileSize
	a, b := make([]uint32, n*n), make([]uint32, n*n)
	task.Inputs(1, a, b)
	for e := range n * n {
		if a[e] != k.Element(0, 1, e) || b[e] != k.Element(1, 1, e) {
			t.Fatalf("entry %d: Inputs gives %d, %d; Element gives %d, %d", e, a[e], b[e], k.Element(0, 1, e), k.Element(1, 1, e))
		}
	}
	c := task.ComputeTile(1)
	if d := task.TileDigest(1); d != k.Digest(c) {
		t.Fatalf("TileDigest %v, Digest of the product %v", d, k.Digest(c))
	}
	got := fmt.Sprintf("mix %08x; A[1][5] %08x; B[1][63] %08x; C[1][9] %08x; digest %08x",
		verify.Mix32(0x12345678), a[5], b[63], c[9], task.TileDigest(1))
	// Computed by an independent implementation (Python) of the rules above.
	const want = "mix f5e71c96; A[1][5] 094c8743; B[1][63] 742a5818; C[1][9] 23d0cc40; digest [e0976820 bec053f5]"
	if got != want {
		t.Errorf("protocol %d values changed:\n got %s\nwant %s", verify.Protocol, got, want)
	}
	c[9]++
	if k.Digest(c) == task.TileDigest(1) {
		t.Error("the digest did not change with an entry of the product")
	}
}

// BenchmarkCommitRealSize is the host's share of a real GPU's challenge
// (2^20 tiles): hashing the digests into the Merkle tree. Protocol 1 made
// the host derive every input and hash every result instead: 178 us a
// 128 x 128 tile, three minutes for 2^20 tiles.
func BenchmarkCommitRealSize(b *testing.B) {
	task := verify.Task{Nonce: "n", UUID: "GPU-x", TileSize: 128, Tiles: 1 << 20}
	digests := make([]verify.Digest, task.Tiles)
	for i := range digests {
		digests[i] = verify.Digest{uint32(i), uint32(i * 7)}
	}
	for b.Loop() {
		if _, err := verify.NewSolution(task, digests); err != nil {
			b.Fatal(err)
		}
	}
}
