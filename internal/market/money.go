package market

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Money is an amount of tokens in micro-tokens (1 token = 1,000,000).
// It is never a float.
type Money int64

// Micro is the number of micro-tokens in one token.
const Micro Money = 1_000_000

// Tokens returns n whole tokens.
func Tokens(n int64) Money { return Money(n) * Micro }

// String formats m as a decimal number of tokens with up to six decimals,
// trailing zeros trimmed but at least two kept: "12.50", "-0.000001".
func (m Money) String() string {
	neg := m < 0
	u := uint64(m)
	if neg {
		u = uint64(-(m + 1)) + 1 // handles math.MinInt64
	}
	whole, frac := u/uint64(Micro), u%uint64(Micro)
	fs := strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	for len(fs) < 2 {
		fs += "0"
	}
	s := strconv.FormatUint(whole, 10) + "." + fs
	if neg {
		s = "-" + s
	}
	return s
}

// ParseMoney parses a decimal token amount such as "12", "0.5" or "1.000001".
// More than six decimals, exponents and overflow are errors.
func ParseMoney(s string) (Money, error) {
	orig := s
	s = strings.TrimSpace(s)
	bad := func(why string) (Money, error) {
		return 0, fmt.Errorf("amount %q %s; write it as tokens with up to 6 decimals, like 12.5", orig, why)
	}
	if s == "" {
		return bad("is empty")
	}
	neg := false
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		s = s[1:]
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" && (!hasDot || frac == "") {
		return bad("has no digits")
	}
	if len(frac) > 6 {
		return bad("has more than 6 decimals")
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return bad("is not a number")
			}
		}
	}
	var w uint64
	if whole != "" {
		var err error
		w, err = strconv.ParseUint(whole, 10, 64)
		if err != nil || w > uint64(math.MaxInt64/int64(Micro)) {
			return bad("is too large")
		}
	}
	f := uint64(0)
	if frac != "" {
		frac += strings.Repeat("0", 6-len(frac))
		f, _ = strconv.ParseUint(frac, 10, 64)
	}
	u := w*uint64(Micro) + f // w <= MaxInt64/Micro, so this fits in uint64
	limit := uint64(math.MaxInt64)
	if neg {
		limit++ // the smallest Money, which String prints too
	}
	if u > limit {
		return bad("is too large")
	}
	if neg {
		return Money(-int64(u-1) - 1), nil
	}
	return Money(u), nil
}

// MarshalText makes Money appear as a decimal string in JSON ("12.50"), so
// clients in languages with float numbers never lose a micro-token.
func (m Money) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses the form written by MarshalText.
func (m *Money) UnmarshalText(b []byte) error {
	v, err := ParseMoney(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MulDiv returns m*num/den, truncated toward zero, computed in 128 bits so
// the product cannot overflow. It panics if den is zero or the result does
// not fit in int64; callers pass validated prices and durations.
func (m Money) MulDiv(num, den int64) Money {
	if den == 0 {
		panic("market: MulDiv by zero")
	}
	neg := (m < 0) != (num < 0) != (den < 0)
	hi, lo := bits.Mul64(abs64(int64(m)), abs64(num))
	d := abs64(den)
	if hi >= d {
		panic("market: MulDiv overflow")
	}
	q, _ := bits.Div64(hi, lo, d)
	if q > math.MaxInt64 {
		panic("market: MulDiv overflow")
	}
	if neg {
		return -Money(q)
	}
	return Money(q)
}

func abs64(v int64) uint64 {
	if v < 0 {
		return uint64(-(v + 1)) + 1
	}
	return uint64(v)
}
