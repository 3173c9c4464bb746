package cuda

import (
	"fmt"
	"strings"
)

// gm_tile128 is the kernel for the tile size of every real model
// (128 x 128): one block of 256 threads per tile, which makes the tile's
// inputs itself, 16 columns of A and rows of B at a time, into shared
// memory (no global memory but the digest), and accumulates an 8 x 8 block
// of the product per thread in registers: 64 multiply-adds for every 16
// shared-memory loads, where the generic gm_tiles does two global loads
// per multiply-add. Then each thread adds its 64 entries' digest terms,
// each warp adds its threads', and one atomic add per warp and word goes
// to global memory. The code is unrolled, so it is generated here rather
// than written by hand; PTX expands its MIX32 lines like the rest.
//
// It needs blocks of exactly 256 threads (Block): thread t has ty = t / 16
// and tx = t % 16, and computes the entries
// (ty*8 + r, tx + 16c) for r, c in 0..7: within a warp, the A values it
// reads are broadcast (one ty per half-warp) and the B values are 16
// consecutive words.

const (
	t128       = 128
	t128Chunk  = 16  // columns of A (rows of B) per round in shared memory
	t128Stride = 512 // bytes per row of a chunk in shared memory (128 words)
)

func tile128PTX() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, "\t"+format+"\n", args...) }
	const golden, spread = 0x9e3779b9, 0x85ebca77
	b.WriteString(`
// gm_sA holds a chunk of A transposed (sA[kk*128 + i] = A[i][k0+kk]),
// gm_sB a chunk of B (sB[kk*128 + j] = B[k0+kk][j]).
.shared .align 16 .b32 gm_sA[2048];
.shared .align 16 .b32 gm_sB[2048];

// gm_tile128: grid x over the tiles of a batch (tile tile0 + ctaid.x),
// 256 threads a block; d gets the batch's digests, two words a tile.
.visible .entry gm_tile128(
	.param .u64 p_d,
	.param .u32 p_tile0,
	.param .u32 p_k0,
	.param .u32 p_k1,
	.param .u32 p_k2,
	.param .u32 p_k3,
	.param .u32 p_k4,
	.param .u32 p_k5
)
{
	.reg .pred %p<4>;
	.reg .b32 %r<40>;
	.reg .b32 %acc<64>;
	.reg .b32 %va<8>;
	.reg .b32 %vb<8>;
	.reg .b64 %rd<8>;

`)
	w("mov.u32 %%r1, %%tid.x;")
	w("mov.u32 %%r2, %%ctaid.x;")
	w("ld.param.u32 %%r3, [p_tile0];")
	w("add.u32 %%r3, %%r3, %%r2;") // tile
	w("shr.u32 %%r4, %%r1, 4;")    // ty
	w("and.b32 %%r5, %%r1, 15;")   // tx
	w("ld.param.u32 %%r6, [p_k0];")
	w("xor.b32 %%r6, %%r6, %%r3;")
	w("MIX32 %%r6, %%r39") // hA
	w("ld.param.u32 %%r7, [p_k1];")
	w("xor.b32 %%r7, %%r7, %%r3;")
	w("MIX32 %%r7, %%r39") // hB
	w("ld.param.u32 %%r8, [p_k2];")
	w("ld.param.u32 %%r9, [p_k3];")
	w("mov.u32 %%r11, gm_sA;")
	w("mov.u32 %%r12, gm_sB;")
	w("shl.b32 %%r13, %%r4, 5;") // ty*8 words
	w("add.u32 %%r13, %%r13, %%r11;")
	w("shl.b32 %%r14, %%r5, 2;") // tx words
	w("add.u32 %%r14, %%r14, %%r12;")
	w("shl.b32 %%r18, %%r1, 2;") // this thread's first slot in a chunk (tid words)
	for i := range 64 {
		w("mov.u32 %%acc%d, 0;", i)
	}
	w("mov.u32 %%r10, 0;") // k0
	b.WriteString("T128_CHUNK:\n")
	// Make the chunk: entry q = tid + 256s of each matrix.
	w("shl.b32 %%r19, %%r10, 7;") // k0*128
	for s := range 8 {
		q := 256 * s
		// B: e = k0*128 + q.
		w("add.u32 %%r20, %%r1, %d;", q)
		w("add.u32 %%r21, %%r20, %%r19;")
		w("mul.lo.u32 %%r21, %%r21, 0x%xU;", golden)
		w("add.u32 %%r21, %%r21, %%r7;")
		w("MIX32 %%r21, %%r39")
		w("xor.b32 %%r21, %%r21, %%r9;")
		w("MIX32 %%r21, %%r39")
		w("add.u32 %%r22, %%r12, %%r18;")
		w("st.shared.u32 [%%r22+%d], %%r21;", 4*q)
		// A: i = q & 127, kk = q >> 7; e = i*128 + k0 + kk.
		w("and.b32 %%r23, %%r20, 127;")
		w("shl.b32 %%r23, %%r23, 7;")
		w("shr.u32 %%r24, %%r20, 7;")
		w("add.u32 %%r23, %%r23, %%r24;")
		w("add.u32 %%r23, %%r23, %%r10;")
		w("mul.lo.u32 %%r23, %%r23, 0x%xU;", golden)
		w("add.u32 %%r23, %%r23, %%r6;")
		w("MIX32 %%r23, %%r39")
		w("xor.b32 %%r23, %%r23, %%r8;")
		w("MIX32 %%r23, %%r39")
		w("add.u32 %%r22, %%r11, %%r18;")
		w("st.shared.u32 [%%r22+%d], %%r23;", 4*q)
	}
	w("bar.sync 0;")
	for kk := range t128Chunk {
		for r := range 8 {
			w("ld.shared.u32 %%va%d, [%%r13+%d];", r, kk*t128Stride+4*r)
		}
		for c := range 8 {
			w("ld.shared.u32 %%vb%d, [%%r14+%d];", c, kk*t128Stride+64*c)
		}
		for r := range 8 {
			for c := range 8 {
				w("mad.lo.u32 %%acc%d, %%va%d, %%vb%d, %%acc%d;", 8*r+c, r, c, 8*r+c)
			}
		}
	}
	w("bar.sync 0;")
	w("add.u32 %%r10, %%r10, %d;", t128Chunk)
	w("setp.lt.u32 %%p1, %%r10, %d;", t128)
	w("@%%p1 bra T128_CHUNK;")
	// Digest terms of entry e = ty*1024 + tx + r*128 + c*16.
	w("shl.b32 %%r15, %%r4, 10;")
	w("add.u32 %%r15, %%r15, %%r5;")
	w("ld.param.u32 %%r25, [p_k4];")
	w("ld.param.u32 %%r26, [p_k5];")
	w("mul.lo.u32 %%r16, %%r15, 0x%xU;", golden)
	w("add.u32 %%r16, %%r16, %%r25;")
	w("mul.lo.u32 %%r17, %%r15, 0x%xU;", spread)
	w("mov.u32 %%r30, 0;")
	w("mov.u32 %%r31, 0;")
	for r := range 8 {
		for c := range 8 {
			off := uint32(r*128 + c*16)
			w("add.u32 %%r27, %%r16, 0x%xU;", off*golden)
			w("add.u32 %%r27, %%r27, %%acc%d;", 8*r+c)
			w("MIX32 %%r27, %%r39")
			w("add.u32 %%r30, %%r30, %%r27;")
			w("xor.b32 %%r28, %%acc%d, %%r26;", 8*r+c)
			w("add.u32 %%r28, %%r28, %%r17;")
			w("add.u32 %%r28, %%r28, 0x%xU;", off*spread)
			w("MIX32 %%r28, %%r39")
			w("add.u32 %%r31, %%r31, %%r28;")
		}
	}
	for _, lane := range []int{16, 8, 4, 2, 1} {
		for _, reg := range []int{30, 31} {
			w("shfl.sync.bfly.b32 %%r32, %%r%d, %d, 0x1f, 0xffffffff;", reg, lane)
			w("add.u32 %%r%d, %%r%d, %%r32;", reg, reg)
		}
	}
	w("and.b32 %%r33, %%r1, 31;")
	w("setp.ne.u32 %%p2, %%r33, 0;")
	w("@%%p2 bra T128_DONE;")
	w("ld.param.u64 %%rd1, [p_d];")
	w("cvta.to.global.u64 %%rd1, %%rd1;")
	w("mul.wide.u32 %%rd2, %%r2, 8;")
	w("add.s64 %%rd3, %%rd1, %%rd2;")
	w("red.global.add.u32 [%%rd3], %%r30;")
	w("red.global.add.u32 [%%rd3+4], %%r31;")
	b.WriteString("T128_DONE:\n\tret;\n}\n")
	return b.String()
}
