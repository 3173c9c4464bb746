package cuda

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// A PTX interpreter for the instructions kernels.ptx and gm_tile128 use,
// so that the kernels and the host loop that launches them are tested on
// machines without a GPU. It runs every thread of a block, warps meeting
// at shfl.sync and the block at bar.sync, and refuses what the driver's
// compiler or the hardware would refuse or leave undefined: unknown
// instructions, undeclared registers, operands of the wrong width, launch
// arguments that do not match the kernel's parameters, global or shared
// accesses outside an allocation, a shuffle not every lane of the warp
// reaches, a barrier not every thread of the block reaches. It does not
// check that the driver accepts the PTX's syntax; only a real GPU does
// (cuda_gpu_test.go, scripts/gpu-check).

// Operand kinds.
const (
	kReg = iota
	kImm
	kSpecial // %tid.x and the like: imm is which, see special
	kParam   // [name]: imm is the parameter's index
	kGlobal  // [reg+off]: a global address in a 64-bit register
	kShared  // [reg+off]: a shared address in a 32-bit register
	kSymbol  // a .shared array's name: imm is its shared address
	kLabel
)

// Specials.
const (
	sTidX = iota
	sNtidX
	sCtaidX
	sCtaidY
)

type opnd struct {
	kind  int
	reg   int
	width int // register width: 1 (predicate), 32, 64
	imm   uint64
	name  string
}

type instr struct {
	op     int
	guard  int // predicate register, -1: none
	negate bool
	args   []opnd
	target int // branch target
	text   string
}

type kernel struct {
	name   string
	params []string
	widths []int // 32 or 64
	nregs  int
	code   []instr
}

type opInfo struct {
	code   int
	widths []int // per operand: register width wanted, 0: any operand
}

const (
	opMov = iota
	opMad
	opLdParam32
	opLdParam64
	opSetpGE
	opSetpLT
	opSetpNE
	opBra
	opDiv
	opRem
	opAdd32
	opAdd64
	opXor
	opAnd
	opMul32
	opMulWide
	opShr32
	opShl32
	opShl64
	opCvta
	opCvt
	opStGlobal
	opLdGlobal
	opStShared
	opLdShared
	opShfl
	opRed
	opBar
	opRet
)

var ops = map[string]opInfo{
	"mov.u32": {opMov, []int{32, 0}}, "mad.lo.u32": {opMad, []int{32, 32, 32, 32}},
	"ld.param.u32": {opLdParam32, []int{32, 0}}, "ld.param.u64": {opLdParam64, []int{64, 0}},
	"setp.ge.u32": {opSetpGE, []int{1, 32, 32}}, "setp.lt.u32": {opSetpLT, []int{1, 32, 32}}, "setp.ne.u32": {opSetpNE, []int{1, 32, 32}},
	"bra": {opBra, []int{0}}, "div.u32": {opDiv, []int{32, 32, 32}}, "rem.u32": {opRem, []int{32, 32, 32}},
	"add.u32": {opAdd32, []int{32, 32, 32}}, "add.s64": {opAdd64, []int{64, 64, 64}},
	"xor.b32": {opXor, []int{32, 32, 32}}, "and.b32": {opAnd, []int{32, 32, 32}},
	"mul.lo.u32": {opMul32, []int{32, 32, 32}}, "mul.wide.u32": {opMulWide, []int{64, 32, 32}},
	"shr.u32": {opShr32, []int{32, 32, 32}}, "shl.b32": {opShl32, []int{32, 32, 32}}, "shl.b64": {opShl64, []int{64, 64, 32}},
	"cvta.to.global.u64": {opCvta, []int{64, 64}}, "cvt.u64.u32": {opCvt, []int{64, 32}},
	"st.global.u32": {opStGlobal, []int{0, 32}}, "ld.global.u32": {opLdGlobal, []int{32, 0}},
	"st.shared.u32": {opStShared, []int{0, 32}}, "ld.shared.u32": {opLdShared, []int{32, 0}},
	"shfl.sync.bfly.b32": {opShfl, []int{32, 32, 32, 32, 32}}, "red.global.add.u32": {opRed, []int{0, 32}},
	"bar.sync": {opBar, []int{0}}, "ret": {opRet, []int{}},
}

var (
	entryRE  = regexp.MustCompile(`(?s)\.visible\s+\.entry\s+(\w+)\s*\((.*?)\)\s*\{(.*?)\n\}`)
	paramRE  = regexp.MustCompile(`\.param\s+\.(u32|u64)\s+(\w+)`)
	regRE    = regexp.MustCompile(`^\.reg\s+\.(pred|b32|b64)\s+(%\w+?)<(\d+)>$`)
	sharedRE = regexp.MustCompile(`(?m)^\.shared\s+\.align\s+\d+\s+\.b32\s+(\w+)\[(\d+)\];`)
)

// module is a parsed PTX module.
type module struct {
	kernels map[string]*kernel
	shared  map[string]int // .shared arrays: byte offset in a block's shared memory
	sbytes  int
}

func parsePTX(src string) (*module, error) {
	var lines []string
	for l := range strings.Lines(src) {
		if i := strings.Index(l, "//"); i >= 0 {
			l = l[:i]
		}
		lines = append(lines, strings.TrimRight(l, " \t\r\n"))
	}
	src = strings.Join(lines, "\n")
	mod := &module{kernels: map[string]*kernel{}, shared: map[string]int{}}
	for _, m := range sharedRE.FindAllStringSubmatch(src, -1) {
		n, _ := strconv.Atoi(m[2])
		mod.shared[m[1]] = mod.sbytes
		mod.sbytes += 4 * n
	}
	for _, m := range entryRE.FindAllStringSubmatch(src, -1) {
		k := &kernel{name: m[1]}
		for _, p := range paramRE.FindAllStringSubmatch(m[2], -1) {
			k.params = append(k.params, p[2])
			k.widths = append(k.widths, map[string]int{"u32": 32, "u64": 64}[p[1]])
		}
		if err := k.compile(m[3], mod); err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		mod.kernels[k.name] = k
	}
	return mod, nil
}

func (k *kernel) compile(body string, mod *module) error {
	regs := map[string]opnd{}
	labels := map[string]int{}
	var stmts []string
	for _, s := range strings.Split(body, ";") {
		s = strings.TrimSpace(s)
		for {
			i := strings.Index(s, ":")
			if i < 0 || strings.ContainsAny(s[:i], " \t[") {
				break
			}
			labels[s[:i]] = len(stmts)
			s = strings.TrimSpace(s[i+1:])
		}
		if s == "" {
			continue
		}
		if m := regRE.FindStringSubmatch(s); m != nil {
			n, _ := strconv.Atoi(m[3])
			w := map[string]int{"pred": 1, "b32": 32, "b64": 64}[m[1]]
			for i := range n {
				regs[fmt.Sprintf("%s%d", m[2], i)] = opnd{kind: kReg, reg: k.nregs, width: w}
				k.nregs++
			}
			continue
		}
		if strings.HasPrefix(s, ".") {
			return fmt.Errorf("unknown directive %q", s)
		}
		stmts = append(stmts, s)
	}
	for _, s := range stmts {
		in := instr{guard: -1, text: s}
		if strings.HasPrefix(s, "@") {
			f := strings.Fields(s)
			g := strings.TrimPrefix(f[0], "@")
			if in.negate = strings.HasPrefix(g, "!"); in.negate {
				g = g[1:]
			}
			r, ok := regs[g]
			if !ok || r.width != 1 {
				return fmt.Errorf("%q: guard %s is not a declared predicate", s, g)
			}
			in.guard = r.reg
			s = strings.TrimSpace(strings.TrimPrefix(s, f[0]))
		}
		name, rest, _ := strings.Cut(s, " ")
		info, ok := ops[name]
		if !ok {
			return fmt.Errorf("%q: instruction %s is not emulated (teach emu_test.go its meaning)", s, name)
		}
		in.op = info.code
		var args []string
		if rest = strings.TrimSpace(rest); rest != "" {
			args = strings.Split(rest, ",")
		}
		if len(args) != len(info.widths) {
			return fmt.Errorf("%q: %d operands, want %d", s, len(args), len(info.widths))
		}
		for i, a := range args {
			o, err := k.operand(strings.TrimSpace(a), regs, mod)
			if err != nil {
				return fmt.Errorf("%q: %w", s, err)
			}
			if o.kind == kReg && info.widths[i] != 0 && o.width != info.widths[i] {
				return fmt.Errorf("%q: operand %d is a %d-bit register, want %d-bit", s, i+1, o.width, info.widths[i])
			}
			if o.kind == kGlobal {
				switch {
				case in.op == opStShared || in.op == opLdShared:
					if o.width != 32 {
						return fmt.Errorf("%q: shared address register is not 32-bit", s)
					}
					o.kind = kShared
				case o.width != 64:
					return fmt.Errorf("%q: global address register is not 64-bit", s)
				}
			}
			if o.kind == kLabel {
				if in.op != opBra {
					return fmt.Errorf("%q: unknown operand %s", s, o.name)
				}
				t, ok := labels[o.name]
				if !ok {
					return fmt.Errorf("%q: no label %s", s, o.name)
				}
				in.target = t
			}
			in.args = append(in.args, o)
		}
		k.code = append(k.code, in)
	}
	return nil
}

func (k *kernel) operand(a string, regs map[string]opnd, mod *module) (opnd, error) {
	switch {
	case strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]"):
		in := a[1 : len(a)-1]
		for i, p := range k.params {
			if in == p {
				return opnd{kind: kParam, imm: uint64(i), name: p}, nil
			}
		}
		base, off, _ := strings.Cut(in, "+")
		r, ok := regs[base]
		if !ok {
			return opnd{}, fmt.Errorf("address %s: no register or parameter %s", a, base)
		}
		o := opnd{kind: kGlobal, reg: r.reg, width: r.width}
		if off != "" {
			v, err := strconv.ParseUint(off, 0, 64)
			if err != nil {
				return opnd{}, fmt.Errorf("address %s: bad offset", a)
			}
			o.imm = v
		}
		return o, nil
	case strings.HasPrefix(a, "%tid.") || strings.HasPrefix(a, "%ntid.") || strings.HasPrefix(a, "%ctaid."):
		s, ok := map[string]uint64{"%tid.x": sTidX, "%ntid.x": sNtidX, "%ctaid.x": sCtaidX, "%ctaid.y": sCtaidY}[a]
		if !ok {
			return opnd{}, fmt.Errorf("special register %s is not emulated", a)
		}
		return opnd{kind: kSpecial, imm: s}, nil
	case strings.HasPrefix(a, "%"):
		r, ok := regs[a]
		if !ok {
			return opnd{}, fmt.Errorf("register %s is not declared", a)
		}
		return r, nil
	case a != "" && (a[0] >= '0' && a[0] <= '9' || a[0] == '-'):
		v, err := strconv.ParseInt(strings.TrimSuffix(a, "U"), 0, 64)
		if err != nil {
			u, uerr := strconv.ParseUint(strings.TrimSuffix(a, "U"), 0, 64)
			if uerr != nil {
				return opnd{}, fmt.Errorf("bad immediate %s", a)
			}
			v = int64(u)
		}
		return opnd{kind: kImm, imm: uint64(v)}, nil
	}
	if off, ok := mod.shared[a]; ok {
		return opnd{kind: kSymbol, imm: uint64(off), name: a}, nil
	}
	return opnd{kind: kLabel, name: a}, nil
}

// emuDriver is a driver whose GPU is the interpreter.
type emuDriver struct {
	mod      *module
	kernels  map[string]*kernel
	mem      map[uint64][]uint32 // allocations by base address
	next     uint64
	launches int
}

func newEmu(src string) (*emuDriver, error) {
	mod, err := parsePTX(src)
	if err != nil {
		return nil, err
	}
	return &emuDriver{mod: mod, kernels: mod.kernels, mem: map[uint64][]uint32{}, next: 1 << 20}, nil
}

func (e *emuDriver) alloc(bytes int) (uint64, error) {
	p := e.next
	e.mem[p] = make([]uint32, (bytes+3)/4)
	e.next += uint64(bytes+4095) &^ 4095
	e.next += 4096 // a gap, so that running off one allocation does not land in the next
	return p, nil
}

func (e *emuDriver) free(p uint64) { delete(e.mem, p) }

// word returns the global word at address a.
func (e *emuDriver) word(a uint64) (*uint32, error) {
	if a%4 != 0 {
		return nil, fmt.Errorf("unaligned address %#x", a)
	}
	for base, m := range e.mem {
		if a >= base && a < base+4*uint64(len(m)) {
			return &m[(a-base)/4], nil
		}
	}
	return nil, fmt.Errorf("address %#x is outside every allocation", a)
}

func (e *emuDriver) memsetD32(p uint64, v uint32, n int) error {
	for i := range n {
		w, err := e.word(p + 4*uint64(i))
		if err != nil {
			return err
		}
		*w = v
	}
	return nil
}

func (e *emuDriver) sync() error { return nil }

func (e *emuDriver) copyOut(dst []uint32, src uint64) error {
	for i := range dst {
		w, err := e.word(src + 4*uint64(i))
		if err != nil {
			return err
		}
		dst[i] = *w
	}
	return nil
}

// Thread states between steps.
const (
	running = iota
	atShfl
	atBar
	exited
)

type thread struct {
	pc    int
	regs  []uint64
	tid   uint64
	state int
}

// block is one block's run: its threads and shared memory.
type block struct {
	k      *kernel
	params []uint64
	ctaid  [2]uint64
	shared []uint32
	ts     []thread
}

func (e *emuDriver) launch(name string, grid [2]uint32, args ...any) error {
	k, ok := e.kernels[name]
	if !ok {
		return fmt.Errorf("no kernel %s", name)
	}
	if len(args) != len(k.params) {
		return fmt.Errorf("%s: %d arguments for %d parameters", name, len(args), len(k.params))
	}
	params := make([]uint64, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case uint32:
			if k.widths[i] != 32 {
				return fmt.Errorf("%s: argument %d is 32-bit, parameter %s is %d-bit", name, i, k.params[i], k.widths[i])
			}
			params[i] = uint64(v)
		case uint64:
			if k.widths[i] != 64 {
				return fmt.Errorf("%s: argument %d is 64-bit, parameter %s is %d-bit", name, i, k.params[i], k.widths[i])
			}
			params[i] = v
		default:
			return fmt.Errorf("%s: argument %d is a %T", name, i, a)
		}
	}
	e.launches++
	b := &block{k: k, params: params, shared: make([]uint32, e.mod.sbytes/4), ts: make([]thread, Block)}
	for i := range b.ts {
		b.ts[i].regs = make([]uint64, k.nregs)
	}
	for by := range grid[1] {
		for bx := range grid[0] {
			b.ctaid = [2]uint64{uint64(bx), uint64(by)}
			clear(b.shared) // shared memory starts undefined: zero it so a read before a write shows
			for i := range b.ts {
				b.ts[i] = thread{regs: b.ts[i].regs, tid: uint64(i)}
				clear(b.ts[i].regs)
			}
			if err := e.run(b); err != nil {
				return fmt.Errorf("%s block (%d,%d): %w", name, bx, by, err)
			}
		}
	}
	return nil
}

// run runs a block's threads to the end: each until it waits at a shuffle
// or a barrier or exits; then shuffles whose warp has all arrived, or the
// barrier once every thread has.
func (e *emuDriver) run(b *block) error {
	for {
		for i := range b.ts {
			for t := &b.ts[i]; t.state == running; {
				if err := e.step(b, t); err != nil {
					return fmt.Errorf("thread %d: %w", i, err)
				}
			}
		}
		progressed := false
		bar, exit := 0, 0
		for w := 0; w < len(b.ts); w += 32 {
			lanes := b.ts[w : w+32]
			shfl, done := 0, 0
			for _, t := range lanes {
				switch t.state {
				case atShfl:
					shfl++
				case exited:
					done++
				case atBar:
					bar++
				}
			}
			exit += done
			if shfl == 0 {
				continue
			}
			if shfl != 32 {
				pc := 0
				for _, t := range lanes {
					if t.state == atShfl {
						pc = t.pc
					}
				}
				if done > 0 {
					return fmt.Errorf("warp %d: %q with a full mask, but %d lanes have exited", w/32, b.k.code[pc].text, done)
				}
				return fmt.Errorf("warp %d: %d lanes at %q, the others at a barrier", w/32, shfl, b.k.code[pc].text)
			}
			if err := e.shuffle(b, lanes); err != nil {
				return fmt.Errorf("warp %d: %w", w/32, err)
			}
			progressed = true
		}
		if progressed {
			continue
		}
		if bar == 0 {
			return nil // all exited
		}
		if exit > 0 {
			return fmt.Errorf("bar.sync waits for %d threads that have exited", exit)
		}
		for i := range b.ts {
			b.ts[i].state = running
			b.ts[i].pc++
		}
	}
}

func (e *emuDriver) shuffle(b *block, lanes []thread) error {
	pc := lanes[0].pc
	for _, t := range lanes {
		if t.pc != pc {
			return fmt.Errorf("lanes wait at different shuffles (%d and %d)", pc, t.pc)
		}
	}
	in := b.k.code[pc]
	var vals [32]uint32
	for i := range lanes {
		vals[i] = uint32(e.val(b, &lanes[i], in.args[1]))
	}
	for i := range lanes {
		if uint32(e.val(b, &lanes[i], in.args[3])) != 0x1f || uint32(e.val(b, &lanes[i], in.args[4])) != 0xffffffff {
			return fmt.Errorf("%q: only whole-warp butterflies are emulated", in.text)
		}
		lane := uint32(i) ^ uint32(e.val(b, &lanes[i], in.args[2]))
		lanes[i].regs[in.args[0].reg] = uint64(vals[lane&31])
		lanes[i].state = running
		lanes[i].pc++
	}
	return nil
}

func (e *emuDriver) val(b *block, t *thread, o opnd) uint64 {
	switch o.kind {
	case kReg:
		return t.regs[o.reg]
	case kImm, kSymbol:
		return o.imm
	case kSpecial:
		switch o.imm {
		case sTidX:
			return t.tid
		case sNtidX:
			return Block
		case sCtaidX:
			return b.ctaid[0]
		default:
			return b.ctaid[1]
		}
	case kParam:
		return b.params[o.imm]
	}
	panic(fmt.Sprintf("operand kind %d", o.kind))
}

func (e *emuDriver) sharedWord(b *block, a uint64) (*uint32, error) {
	if a%4 != 0 || a/4 >= uint64(len(b.shared)) {
		return nil, fmt.Errorf("shared address %#x is outside the %d bytes of shared memory (or unaligned)", a, 4*len(b.shared))
	}
	return &b.shared[a/4], nil
}

func (e *emuDriver) step(b *block, t *thread) error {
	k := b.k
	if t.pc >= len(k.code) {
		return fmt.Errorf("ran off the end of the kernel")
	}
	in := &k.code[t.pc]
	if in.guard >= 0 && (t.regs[in.guard] != 0) == in.negate {
		t.pc++
		return nil
	}
	a := in.args
	u := func(i int) uint32 { return uint32(e.val(b, t, a[i])) }
	var d uint64
	switch in.op {
	case opMov, opLdParam32:
		d = uint64(u(1))
	case opLdParam64, opCvta:
		d = e.val(b, t, a[1])
	case opCvt:
		d = uint64(u(1))
	case opMad:
		d = uint64(u(1)*u(2) + u(3))
	case opSetpGE, opSetpLT, opSetpNE:
		x, y := u(1), u(2)
		if in.op == opSetpGE && x >= y || in.op == opSetpLT && x < y || in.op == opSetpNE && x != y {
			d = 1
		}
	case opBra:
		t.pc = in.target
		return nil
	case opDiv, opRem:
		if u(2) == 0 {
			return fmt.Errorf("%q: division by zero", in.text)
		}
		if in.op == opDiv {
			d = uint64(u(1) / u(2))
		} else {
			d = uint64(u(1) % u(2))
		}
	case opAdd32:
		d = uint64(u(1) + u(2))
	case opAdd64:
		d = e.val(b, t, a[1]) + e.val(b, t, a[2])
	case opXor:
		d = uint64(u(1) ^ u(2))
	case opAnd:
		d = uint64(u(1) & u(2))
	case opMul32:
		d = uint64(u(1) * u(2))
	case opMulWide:
		d = uint64(u(1)) * uint64(u(2))
	case opShr32:
		d = uint64(u(1) >> u(2))
	case opShl32:
		d = uint64(u(1) << u(2))
	case opShl64:
		d = e.val(b, t, a[1]) << u(2)
	case opLdGlobal, opLdShared:
		var w *uint32
		var err error
		if in.op == opLdGlobal {
			w, err = e.word(t.regs[a[1].reg] + a[1].imm)
		} else {
			w, err = e.sharedWord(b, uint64(uint32(t.regs[a[1].reg]))+a[1].imm)
		}
		if err != nil {
			return fmt.Errorf("%q: %w", in.text, err)
		}
		d = uint64(*w)
	case opStGlobal, opRed, opStShared:
		var w *uint32
		var err error
		if in.op == opStShared {
			w, err = e.sharedWord(b, uint64(uint32(t.regs[a[0].reg]))+a[0].imm)
		} else {
			w, err = e.word(t.regs[a[0].reg] + a[0].imm)
		}
		if err != nil {
			return fmt.Errorf("%q: %w", in.text, err)
		}
		if in.op == opRed {
			*w += u(1)
		} else {
			*w = u(1)
		}
		t.pc++
		return nil
	case opShfl:
		t.state = atShfl
		return nil
	case opBar:
		if u(0) != 0 {
			return fmt.Errorf("%q: only barrier 0 is emulated", in.text)
		}
		t.state = atBar
		return nil
	case opRet:
		t.state = exited
		return nil
	}
	t.regs[a[0].reg] = d
	t.pc++
	return nil
}
