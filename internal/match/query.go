package match

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Op is a comparison operator of the query language.
type Op uint8

// Operators.
const (
	OpEq Op = iota
	OpNe
	OpLt
	OpLe
	OpGt
	OpGe
	OpIn
	OpNotIn
)

var opNames = [...]string{"=", "!=", "<", "<=", ">", ">=", "in", "notin"}

func (o Op) String() string { return opNames[o] }

// MaxFilters bounds the filters of one query (Explain tracks them in a
// 64-bit mask).
const MaxFilters = 64

// Filter is one condition of a query. Values are already converted: Nums
// hold numbers in the field's base unit (MiB, micro-tokens, parts per
// million, encoded versions, 0/1), Strs normalised text.
type Filter struct {
	Field FieldID
	Op    Op
	Nums  []int64
	Strs  []string
	Pos   int    // 1-based column where the filter starts in the query
	Text  string // the filter as written
}

// Query is a parsed offer query: the conjunction of its filters. The zero
// Query matches every available machine.
type Query struct {
	Filters []Filter
}

// String returns the query as written, filters separated by spaces.
func (q Query) String() string {
	s := make([]string, len(q.Filters))
	for i, f := range q.Filters {
		s[i] = f.Text
	}
	return strings.Join(s, " ")
}

// ParseError is a rejected query: where (1-based column, in characters)
// and why, with an optional suggestion.
type ParseError struct {
	Pos    int
	Reason string
	Hint   string
}

func (e *ParseError) Error() string {
	s := fmt.Sprintf("%s at %d", e.Reason, e.Pos)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Parse parses an offer query such as
//
//	gpu_name=RTX_4090 num_gpus>=2 gpu_ram>=24GB price_per_gpu_hour<0.8 region in [eu,us] verified=true
//
// Filters are separated by spaces and all must hold. Errors are
// *market.Error of kind Invalid wrapping a *ParseError.
func Parse(s string) (Query, error) {
	p := parser{src: s}
	q, perr := p.parse()
	if perr != nil {
		perr.Pos = utf8.RuneCountInString(s[:min(perr.Pos, len(s))]) + 1
		return Query{}, &market.Error{Op: "parse query", Kind: market.Invalid, Err: perr}
	}
	for i := range q.Filters {
		q.Filters[i].Pos = utf8.RuneCountInString(s[:q.Filters[i].Pos]) + 1
	}
	return q, nil
}

type parser struct {
	src string
	i   int
}

// errAt builds an error at byte offset off; Parse turns it into a column.
func errAt(off int, hint, format string, args ...any) *ParseError {
	return &ParseError{Pos: off, Reason: fmt.Sprintf(format, args...), Hint: hint}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (p *parser) skipSpace() {
	for p.i < len(p.src) && isSpace(p.src[p.i]) {
		p.i++
	}
}

func (p *parser) parse() (Query, *ParseError) {
	var q Query
	for {
		p.skipSpace()
		if p.i >= len(p.src) {
			return q, nil
		}
		if len(q.Filters) == MaxFilters {
			return Query{}, errAt(p.i, "", "more than %d filters", MaxFilters)
		}
		f, err := p.filter()
		if err != nil {
			return Query{}, err
		}
		q.Filters = append(q.Filters, f)
	}
}

// unmeasured names fields of other marketplaces' query languages that
// gpumarket has no data for, and why: a filter on them would quietly
// match nothing (or everything), so a query that names one is refused.
var unmeasured = map[string]string{
	"inet_down": "gpumarket does not measure hosts' internet bandwidth",
	"inet_up":   "gpumarket does not measure hosts' internet bandwidth",
}

const nameStop = " \t\r\n=!<>[]\"',"

func (p *parser) filter() (Filter, *ParseError) {
	start := p.i
	for p.i < len(p.src) && !strings.ContainsRune(nameStop, rune(p.src[p.i])) {
		p.i++
	}
	name := p.src[start:p.i]
	if name == "" {
		return Filter{}, errAt(start, "filters look like num_gpus>=2", "expected a field name, found '%c'", p.src[start])
	}
	id, ok := lookupField(name)
	if why, gone := unmeasured[strings.ToLower(name)]; !ok && gone {
		return Filter{}, errAt(start, "leave it out of the query", "unknown field '%s' (%s)", name, why)
	}
	if !ok {
		hint := "quote values that contain spaces, like gpu_name=\"RTX 4090\"; see the field list in --help"
		if s := suggest(name); s != "" {
			hint = "did you mean '" + s + "'?"
		}
		return Filter{}, errAt(start, hint, "unknown field '%s'", name)
	}
	fld := fieldTable[id]
	p.skipSpace()
	opAt := p.i
	op, ok := p.op()
	if !ok {
		return Filter{}, errAt(opAt, "operators are = != < <= > >= in notin", "expected an operator after '%s'", name)
	}
	switch {
	case fld.Type == TypeText && op >= OpLt && op <= OpGe:
		return Filter{}, errAt(opAt, "use =, !=, in or notin", "'%s' does not apply to text field '%s'", op, fld.Name)
	case fld.Type == TypeBool && op >= OpLt && op <= OpGe:
		return Filter{}, errAt(opAt, "use = or !=", "'%s' does not apply to true/false field '%s'", op, fld.Name)
	}
	p.skipSpace()
	f := Filter{Field: id, Op: op, Pos: start}
	if p.i < len(p.src) && strings.IndexByte("=!<>", p.src[p.i]) >= 0 {
		return Filter{}, errAt(p.i, "operators are = != < <= > >= in notin", "unexpected '%c' after '%s'", p.src[p.i], op)
	}
	if op == OpIn || op == OpNotIn {
		if p.i >= len(p.src) || p.src[p.i] != '[' {
			return Filter{}, errAt(p.i, "", "'%s' needs a list like [eu,us]", op)
		}
		open := p.i
		p.i++
		for {
			p.skipSpace()
			if p.i >= len(p.src) {
				return Filter{}, errAt(open, "close it with ]", "unterminated list")
			}
			if p.src[p.i] == ']' {
				if len(f.Nums)+len(f.Strs) == 0 {
					return Filter{}, errAt(p.i, "", "'%s' needs at least one value", op)
				}
				p.i++
				break
			}
			if err := p.value(&f, fld); err != nil {
				return Filter{}, err
			}
			p.skipSpace()
			if p.i < len(p.src) && p.src[p.i] == ',' {
				p.i++
			} else if p.i < len(p.src) && p.src[p.i] != ']' {
				return Filter{}, errAt(p.i, "separate values with commas: [eu,us]", "unexpected '%c' in list", p.src[p.i])
			}
		}
	} else {
		if p.i < len(p.src) && p.src[p.i] == '[' {
			return Filter{}, errAt(p.i, "use in or notin for a list", "'%s' takes one value, not a list", op)
		}
		if err := p.value(&f, fld); err != nil {
			return Filter{}, err
		}
	}
	if p.i < len(p.src) && !isSpace(p.src[p.i]) {
		hint := ""
		if p.src[p.i] == ',' {
			hint = "for several values write " + fld.Name + " in [a,b]"
		}
		return Filter{}, errAt(p.i, hint, "unexpected '%c'", p.src[p.i])
	}
	f.Text = p.src[start:p.i]
	return f, nil
}

func (p *parser) op() (Op, bool) {
	rest := p.src[p.i:]
	for _, o := range []struct {
		s  string
		op Op
	}{{"!=", OpNe}, {"<=", OpLe}, {">=", OpGe}, {"==", OpEq}, {"=", OpEq}, {"<", OpLt}, {">", OpGt}} {
		if strings.HasPrefix(rest, o.s) {
			p.i += len(o.s)
			return o.op, true
		}
	}
	word := func(w string) bool {
		if len(rest) >= len(w) && strings.EqualFold(rest[:len(w)], w) && (len(rest) == len(w) || isSpace(rest[len(w)]) || rest[len(w)] == '[') {
			p.i += len(w)
			return true
		}
		return false
	}
	switch {
	case word("in"):
		return OpIn, true
	case word("notin"):
		return OpNotIn, true
	case word("not"):
		p.skipSpace()
		rest = p.src[p.i:]
		if word("in") {
			return OpNotIn, true
		}
	}
	return 0, false
}

// value reads one (possibly quoted) value at p.i and appends it to f.
func (p *parser) value(f *Filter, fld Field) *ParseError {
	at := p.i
	var tok string
	if p.i < len(p.src) && (p.src[p.i] == '"' || p.src[p.i] == '\'') {
		q := p.src[p.i]
		var b strings.Builder
		p.i++
		for {
			if p.i >= len(p.src) {
				return errAt(at, "close it with "+string(q), "unterminated string")
			}
			c := p.src[p.i]
			if c == '\\' && p.i+1 < len(p.src) {
				b.WriteByte(p.src[p.i+1])
				p.i += 2
				continue
			}
			p.i++
			if c == q {
				break
			}
			b.WriteByte(c)
		}
		tok = b.String()
	} else {
		for p.i < len(p.src) && !strings.ContainsRune(" \t\r\n[],\"'", rune(p.src[p.i])) {
			p.i++
		}
		tok = p.src[at:p.i]
		if tok == "" {
			what := "a value"
			switch fld.Type {
			case TypeNumber, TypeMoney:
				what = "a number"
			case TypeBool:
				what = "true or false"
			case TypeVersion:
				what = "a version like 12.4"
			}
			return errAt(at, "", "'%s' needs %s", f.Op, what)
		}
	}
	switch fld.Type {
	case TypeText:
		if fld.ID == FGPUName {
			tok = NormModel(tok)
		} else {
			tok = normText(tok)
		}
		f.Strs = append(f.Strs, tok)
		return nil
	case TypeBool:
		switch strings.ToLower(tok) {
		case "true", "yes", "1":
			f.Nums = append(f.Nums, 1)
			return nil
		case "false", "no", "0":
			f.Nums = append(f.Nums, 0)
			return nil
		}
		return errAt(at, "", "'%s' needs true or false", f.Op)
	case TypeVersion:
		v, ok := parseVersion(tok)
		if !ok {
			return errAt(at, "", "'%s' needs a version like 12.4", f.Op)
		}
		f.Nums = append(f.Nums, v)
		return nil
	}
	v, reason, hint := parseNumber(tok, fld)
	if reason != "" {
		if reason == "needs a number" {
			reason = fmt.Sprintf("'%s' needs a number", f.Op)
		}
		return errAt(at, hint, "%s", reason)
	}
	f.Nums = append(f.Nums, v)
	return nil
}

// parseNumber converts a decimal with an optional unit into the field's
// base unit, exactly: a value finer than the base unit is an error, never
// rounded.
func parseNumber(tok string, fld Field) (v int64, reason, hint string) {
	i := 0
	neg := false
	if i < len(tok) && (tok[i] == '-' || tok[i] == '+') {
		neg = tok[i] == '-'
		i++
	}
	ws := i
	for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
		i++
	}
	whole := tok[ws:i]
	frac := ""
	if i < len(tok) && tok[i] == '.' {
		i++
		fs := i
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
		}
		frac = tok[fs:i]
	}
	if whole == "" && frac == "" {
		return 0, "needs a number", ""
	}
	unit := strings.ToLower(tok[i:])
	mult, ok := fld.units[unit]
	if !ok {
		hint := fld.Name + " takes plain numbers (" + fld.Unit + ")"
		if fld.unitHelp != "" {
			hint = "use " + fld.unitHelp + " or a plain number (" + fld.Unit + ")"
		}
		return 0, fmt.Sprintf("unknown unit '%s' for %s", tok[i:], fld.Name), hint
	}
	frac = strings.TrimRight(frac, "0")
	digits := strings.TrimLeft(whole+frac, "0")
	if len(digits) > 18 {
		return 0, fmt.Sprintf("'%s' is too large", tok), ""
	}
	var mant uint64
	if digits != "" {
		mant, _ = strconv.ParseUint(digits, 10, 64)
	}
	hi, lo := bits.Mul64(mant, uint64(mult))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Sprintf("'%s' is too large", tok), ""
	}
	div := uint64(1)
	for range len(frac) {
		div *= 10
	}
	if lo%div != 0 {
		return 0, fmt.Sprintf("'%s' is more precise than %s allows", tok, fld.Name), "the smallest step is 1 " + fld.base
	}
	v = int64(lo / div)
	if neg {
		v = -v
	}
	return v, "", ""
}

// suggest returns the field name closest to a misspelt one, or "".
func suggest(name string) string {
	name = strings.ToLower(name)
	limit := 2
	switch {
	case len(name) <= 3:
		limit = 1
	case len(name) > 9:
		limit = 3
	}
	best, bestD := "", limit+1
	for _, f := range fieldTable {
		for _, n := range append([]string{f.Name}, f.Aliases...) {
			if d := editDistance(name, n); d < bestD {
				best, bestD = f.Name, d
			}
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// passNum reports whether number v satisfies f.
func (f *Filter) passNum(v int64) bool {
	switch f.Op {
	case OpEq:
		return v == f.Nums[0]
	case OpNe:
		return v != f.Nums[0]
	case OpLt:
		return v < f.Nums[0]
	case OpLe:
		return v <= f.Nums[0]
	case OpGt:
		return v > f.Nums[0]
	case OpGe:
		return v >= f.Nums[0]
	case OpIn:
		return slices.Contains(f.Nums, v)
	default:
		return !slices.Contains(f.Nums, v)
	}
}

// passText reports whether normalised text v satisfies f.
func (f *Filter) passText(v string) bool {
	any := false
	for _, p := range f.Strs {
		if textMatch(f.Field, p, v) {
			any = true
			break
		}
	}
	if f.Op == OpNe || f.Op == OpNotIn {
		return !any
	}
	return any
}

func (f *Filter) pass(r *row) bool {
	if fieldTable[f.Field].Type == TypeText {
		return f.passText(r.str[f.Field])
	}
	return f.passNum(r.num[f.Field])
}

// Match reports whether machine m with facts fs passes every filter of q.
// It does not check availability (see Available); it is the reference the
// index is tested against, and a plain scan.
func (q Query) Match(m market.Machine, fs Facts) bool {
	r := rowOf(m, fs)
	for i := range q.Filters {
		if !q.Filters[i].pass(&r) {
			return false
		}
	}
	return true
}

// Available reports whether m shows up in searches: rentable and with at
// least one free GPU.
func Available(m market.Machine) bool {
	return Rentable(m) && len(m.FreeGPUs()) > 0
}
