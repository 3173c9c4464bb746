package cuda

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// A PTX interpreter for the instructions kernels.ptx uses, so that the
// kernels and the host loop that launches them are tested on machines
// without a GPU: it runs every thread of a launch, warps in lockstep at
// shfl.sync, and checks what the driver's compiler and the hardware would
// refuse or leave undefined: unknown instructions, undeclared registers,
// operands of the wrong width, launch arguments that do not match the
// kernel's parameters, memory accesses outside an allocation, a shuffle
// that not every lane of the warp reaches. It does not check that the
// driver accepts the PTX's syntax; only a real GPU does (cuda_gpu_test.go).

type opnd struct {
	kind  byte // 'r' register, 'i' immediate, 's' special, 'p' param, 'm' memory [reg+off], 'l' label
	reg   int
	width int // register width: 1 (predicate), 32, 64
	imm   uint64
	name  string // special register, param or label
}

type instr struct {
	op     string
	guard  int // predicate register, -1: none
	negate bool
	args   []opnd
	target int // branch target pc
	text   string
}

type kernel struct {
	name   string
	params []string // names
	widths []int    // 32 or 64
	nregs  int
	code   []instr
}

var (
	entryRE = regexp.MustCompile(`(?s)\.visible\s+\.entry\s+(\w+)\s*\((.*?)\)\s*\{(.*?)\n\}`)
	paramRE = regexp.MustCompile(`\.param\s+\.(u32|u64)\s+(\w+)`)
	regRE   = regexp.MustCompile(`^\.reg\s+\.(pred|b32|b64)\s+(%\w+?)<(\d+)>$`)
)

// widths of each instruction's operands (0: not a register, any kind).
var opWidths = map[string][]int{
	"mov.u32": {32, 0}, "mad.lo.u32": {32, 32, 32, 32}, "ld.param.u32": {32, 0}, "ld.param.u64": {64, 0},
	"setp.ge.u32": {1, 32, 32}, "setp.lt.u32": {1, 32, 32}, "setp.ne.u32": {1, 32, 32}, "bra": {0},
	"div.u32": {32, 32, 32}, "rem.u32": {32, 32, 32}, "add.u32": {32, 32, 32}, "add.s64": {64, 64, 64},
	"xor.b32": {32, 32, 32}, "and.b32": {32, 32, 32}, "mul.lo.u32": {32, 32, 32}, "mul.wide.u32": {64, 32, 32},
	"shr.u32": {32, 32, 32}, "shl.b64": {64, 64, 32}, "cvta.to.global.u64": {64, 64}, "cvt.u64.u32": {64, 32},
	"st.global.u32": {0, 32}, "ld.global.u32": {32, 0}, "shfl.sync.bfly.b32": {32, 32, 32, 32, 32},
	"red.global.add.u32": {0, 32}, "ret": {},
}

func parsePTX(src string) (map[string]*kernel, error) {
	var lines []string
	for l := range strings.Lines(src) {
		if i := strings.Index(l, "//"); i >= 0 {
			l = l[:i]
		}
		lines = append(lines, l)
	}
	src = strings.Join(lines, "\n")
	out := map[string]*kernel{}
	for _, m := range entryRE.FindAllStringSubmatch(src, -1) {
		k := &kernel{name: m[1]}
		for _, p := range paramRE.FindAllStringSubmatch(m[2], -1) {
			k.params = append(k.params, p[2])
			k.widths = append(k.widths, map[string]int{"u32": 32, "u64": 64}[p[1]])
		}
		if err := k.compile(m[3]); err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		out[k.name] = k
	}
	return out, nil
}

func (k *kernel) compile(body string) error {
	regs := map[string]opnd{} // name -> register
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
				regs[fmt.Sprintf("%s%d", m[2], i)] = opnd{kind: 'r', reg: k.nregs, width: w}
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
		op, rest, _ := strings.Cut(s, " ")
		in.op = op
		widths, ok := opWidths[op]
		if !ok {
			return fmt.Errorf("%q: instruction %s is not emulated (teach emu_test.go its meaning)", s, op)
		}
		var args []string
		if rest = strings.TrimSpace(rest); rest != "" {
			args = strings.Split(rest, ",")
		}
		if len(args) != len(widths) {
			return fmt.Errorf("%q: %d operands, want %d", s, len(args), len(widths))
		}
		for i, a := range args {
			o, err := operand(strings.TrimSpace(a), regs, k)
			if err != nil {
				return fmt.Errorf("%q: %w", s, err)
			}
			if o.kind == 'r' && widths[i] != 0 && o.width != widths[i] {
				return fmt.Errorf("%q: operand %d is a %d-bit register, want %d-bit", s, i+1, o.width, widths[i])
			}
			if o.kind == 'm' && o.width != 64 {
				return fmt.Errorf("%q: address register is not 64-bit", s)
			}
			if o.kind == 'l' {
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

func operand(a string, regs map[string]opnd, k *kernel) (opnd, error) {
	switch {
	case strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]"):
		in := a[1 : len(a)-1]
		for _, p := range k.params {
			if in == p {
				return opnd{kind: 'p', name: p}, nil
			}
		}
		base, off, _ := strings.Cut(in, "+")
		r, ok := regs[base]
		if !ok {
			return opnd{}, fmt.Errorf("address %s: no register or parameter %s", a, base)
		}
		o := opnd{kind: 'm', reg: r.reg, width: r.width}
		if off != "" {
			v, err := strconv.ParseUint(off, 0, 64)
			if err != nil {
				return opnd{}, fmt.Errorf("address %s: bad offset", a)
			}
			o.imm = v
		}
		return o, nil
	case strings.HasPrefix(a, "%tid.") || strings.HasPrefix(a, "%ntid.") || strings.HasPrefix(a, "%ctaid."):
		return opnd{kind: 's', name: a}, nil
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
		return opnd{kind: 'i', imm: uint64(v)}, nil
	default:
		return opnd{kind: 'l', name: a}, nil
	}
}

// emuDriver is a driver whose GPU is the interpreter.
type emuDriver struct {
	kernels  map[string]*kernel
	mem      map[uint64][]uint32 // allocations by base address
	next     uint64
	launches int
}

func newEmu(src string) (*emuDriver, error) {
	ks, err := parsePTX(src)
	if err != nil {
		return nil, err
	}
	return &emuDriver{kernels: ks, mem: map[uint64][]uint32{}, next: 1 << 20}, nil
}

func (e *emuDriver) alloc(bytes int) (uint64, error) {
	p := e.next
	e.mem[p] = make([]uint32, (bytes+3)/4)
	e.next += uint64(bytes+4095) &^ 4095
	e.next += 4096 // a gap, so that running off one allocation does not land in the next
	return p, nil
}

func (e *emuDriver) free(p uint64) { delete(e.mem, p) }

// word returns the allocation word at address a.
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

type thread struct {
	pc   int
	regs []uint64
	tid  [3]uint64
	done bool
	shfl bool // waiting at a shuffle
}

func (e *emuDriver) launch(name string, grid [2]uint32, args ...any) error {
	k, ok := e.kernels[name]
	if !ok {
		return fmt.Errorf("no kernel %s", name)
	}
	if len(args) != len(k.params) {
		return fmt.Errorf("%s: %d arguments for %d parameters", name, len(args), len(k.params))
	}
	params := map[string]uint64{}
	for i, a := range args {
		switch v := a.(type) {
		case uint32:
			if k.widths[i] != 32 {
				return fmt.Errorf("%s: argument %d is 32-bit, parameter %s is %d-bit", name, i, k.params[i], k.widths[i])
			}
			params[k.params[i]] = uint64(v)
		case uint64:
			if k.widths[i] != 64 {
				return fmt.Errorf("%s: argument %d is 64-bit, parameter %s is %d-bit", name, i, k.params[i], k.widths[i])
			}
			params[k.params[i]] = v
		default:
			return fmt.Errorf("%s: argument %d is a %T", name, i, a)
		}
	}
	e.launches++
	for by := range grid[1] {
		for bx := range grid[0] {
			for w := 0; w < Block; w += 32 {
				ctaid := [3]uint64{uint64(bx), uint64(by), 0}
				if err := e.warp(k, params, ctaid, w); err != nil {
					return fmt.Errorf("%s block (%d,%d) warp %d: %w", name, bx, by, w/32, err)
				}
			}
		}
	}
	return nil
}

func (e *emuDriver) warp(k *kernel, params map[string]uint64, ctaid [3]uint64, first int) error {
	ts := make([]thread, 32)
	for i := range ts {
		ts[i] = thread{regs: make([]uint64, k.nregs), tid: [3]uint64{uint64(first + i), 0, 0}}
	}
	for {
		for i := range ts {
			for t := &ts[i]; !t.done && !t.shfl; {
				if err := e.step(k, params, ctaid, t); err != nil {
					return fmt.Errorf("thread %d: %w", first+i, err)
				}
			}
		}
		waiting, done, pc := 0, 0, -1
		for _, t := range ts {
			switch {
			case t.done:
				done++
			case pc == -1 || pc == t.pc:
				pc = t.pc
				waiting++
			default:
				return fmt.Errorf("lanes wait at different shuffles (%d and %d)", pc, t.pc)
			}
		}
		if waiting == 0 {
			return nil
		}
		if done > 0 {
			return fmt.Errorf("%q with a full mask, but %d lanes have exited", k.code[pc].text, done)
		}
		in := k.code[pc]
		vals := make([]uint32, 32)
		for i := range ts {
			vals[i] = uint32(e.val(in.args[1], &ts[i], params, ctaid))
		}
		for i := range ts {
			lane := uint32(i) ^ uint32(e.val(in.args[2], &ts[i], params, ctaid))
			ts[i].regs[in.args[0].reg] = uint64(vals[lane&31])
			ts[i].shfl = false
			ts[i].pc++
		}
	}
}

func (e *emuDriver) val(o opnd, t *thread, params map[string]uint64, ctaid [3]uint64) uint64 {
	switch o.kind {
	case 'r':
		return t.regs[o.reg]
	case 'i':
		return o.imm
	case 's':
		dim := map[byte]int{'x': 0, 'y': 1, 'z': 2}[o.name[len(o.name)-1]]
		switch {
		case strings.HasPrefix(o.name, "%tid."):
			return t.tid[dim]
		case strings.HasPrefix(o.name, "%ntid."):
			return map[int]uint64{0: Block, 1: 1, 2: 1}[dim]
		default:
			return ctaid[dim]
		}
	case 'p':
		return params[o.name]
	}
	panic("operand kind " + string(o.kind))
}

func (e *emuDriver) step(k *kernel, params map[string]uint64, ctaid [3]uint64, t *thread) error {
	if t.pc >= len(k.code) {
		return fmt.Errorf("ran off the end of the kernel")
	}
	in := k.code[t.pc]
	if in.guard >= 0 && (t.regs[in.guard] != 0) == in.negate {
		t.pc++
		return nil
	}
	v := func(i int) uint64 { return e.val(in.args[i], t, params, ctaid) }
	u := func(i int) uint32 { return uint32(v(i)) }
	set := func(x uint64) { t.regs[in.args[0].reg] = x }
	set32 := func(x uint32) { set(uint64(x)) }
	addr := func(i int) uint64 { return t.regs[in.args[i].reg] + in.args[i].imm }
	switch in.op {
	case "mov.u32", "ld.param.u32":
		set32(u(1))
	case "ld.param.u64", "cvta.to.global.u64":
		set(v(1))
	case "cvt.u64.u32":
		set(uint64(u(1)))
	case "mad.lo.u32":
		set32(u(1)*u(2) + u(3))
	case "setp.ge.u32", "setp.lt.u32", "setp.ne.u32":
		r := map[string]bool{"setp.ge.u32": u(1) >= u(2), "setp.lt.u32": u(1) < u(2), "setp.ne.u32": u(1) != u(2)}[in.op]
		set(map[bool]uint64{false: 0, true: 1}[r])
	case "bra":
		t.pc = in.target
		return nil
	case "div.u32", "rem.u32":
		if u(2) == 0 {
			return fmt.Errorf("%q: division by zero", in.text)
		}
		if in.op == "div.u32" {
			set32(u(1) / u(2))
		} else {
			set32(u(1) % u(2))
		}
	case "add.u32":
		set32(u(1) + u(2))
	case "add.s64":
		set(v(1) + v(2))
	case "xor.b32":
		set32(u(1) ^ u(2))
	case "and.b32":
		set32(u(1) & u(2))
	case "mul.lo.u32":
		set32(u(1) * u(2))
	case "mul.wide.u32":
		set(uint64(u(1)) * uint64(u(2)))
	case "shr.u32":
		set32(u(1) >> u(2))
	case "shl.b64":
		set(v(1) << u(2))
	case "ld.global.u32":
		w, err := e.word(addr(1))
		if err != nil {
			return fmt.Errorf("%q: %w", in.text, err)
		}
		set32(*w)
	case "st.global.u32", "red.global.add.u32":
		w, err := e.word(addr(0))
		if err != nil {
			return fmt.Errorf("%q: %w", in.text, err)
		}
		if in.op == "st.global.u32" {
			*w = u(1)
		} else {
			*w += u(1)
		}
	case "shfl.sync.bfly.b32":
		if u(3) != 0x1f || u(4) != 0xffffffff {
			return fmt.Errorf("%q: only whole-warp butterflies are emulated", in.text)
		}
		t.shfl = true
		return nil
	case "ret":
		t.done = true
		return nil
	default:
		return fmt.Errorf("%q: not emulated", in.text)
	}
	t.pc++
	return nil
}
