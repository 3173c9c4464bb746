package market

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestMoneyString(t *testing.T) {
	for _, tc := range []struct {
		m    Money
		want string
	}{
		{0, "0.00"},
		{1, "0.000001"},
		{-1, "-0.000001"},
		{500_000, "0.50"},
		{Tokens(12) + 500_000, "12.50"},
		{Tokens(3) + 123_456, "3.123456"},
		{math.MaxInt64, "9223372036854.775807"},
		{math.MinInt64, "-9223372036854.775808"},
	} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("Money(%d).String() = %q, want %q", int64(tc.m), got, tc.want)
		}
	}
}

func TestParseMoney(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Money
		err  string
	}{
		{"12", Tokens(12), ""},
		{"0.5", 500_000, ""},
		{".5", 500_000, ""},
		{"5.", Tokens(5), ""},
		{" 1.000001 ", 1_000_001, ""},
		{"-2.25", -2_250_000, ""},
		{"+3", Tokens(3), ""},
		{"", 0, "is empty"},
		{".", 0, "no digits"},
		{"1.0000001", 0, "more than 6 decimals"},
		{"1e3", 0, "not a number"},
		{"abc", 0, "not a number"},
		{"1,5", 0, "not a number"},
		{"99999999999999999999", 0, "too large"},
		{"9223372036855", 0, "too large"},
		{"9223372036854.775808", 0, "too large"},
		{"-9223372036854.775808", math.MinInt64, ""},
	} {
		got, err := ParseMoney(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseMoney(%q) err = %v, want one saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMoney(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestMoneyJSONIsAString(t *testing.T) {
	b, err := json.Marshal(struct{ P Money }{1_500_000})
	if err != nil || string(b) != `{"P":"1.50"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var v struct{ P Money }
	if err := json.Unmarshal([]byte(`{"P":"0.000003"}`), &v); err != nil || v.P != 3 {
		t.Fatalf("Unmarshal = %d, %v", v.P, err)
	}
	if err := json.Unmarshal([]byte(`{"P":"1.2345678"}`), &v); err == nil {
		t.Fatal("Unmarshal accepted 7 decimals")
	}
}

func TestMulDiv(t *testing.T) {
	for _, tc := range []struct {
		m        Money
		num, den int64
		want     Money
	}{
		{1_000_000, 1, 60, 16_666},
		{-1_000_000, 1, 60, -16_666},
		{math.MaxInt64, 1000, 10_000, math.MaxInt64 / 10},
		{Tokens(1_000_000), 86_400, 86_400, Tokens(1_000_000)},
	} {
		if got := tc.m.MulDiv(tc.num, tc.den); got != tc.want {
			t.Errorf("%d.MulDiv(%d, %d) = %d, want %d", int64(tc.m), tc.num, tc.den, got, tc.want)
		}
	}
}

func FuzzParseMoney(f *testing.F) {
	for _, s := range []string{"0", "1.5", "-3.000001", "9223372036854.775807", "x", ".", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMoney(s)
		if err != nil {
			return
		}
		back, err := ParseMoney(m.String())
		if err != nil || back != m {
			t.Fatalf("ParseMoney(%q) = %d; its String %q parses to %d, %v", s, m, m.String(), back, err)
		}
	})
}
