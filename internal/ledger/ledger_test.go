package ledger

import (
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestMinuteChargeSumsToHourlyPrice(t *testing.T) {
	for _, perHour := range []market.Money{0, 1, 59, 60, 61, 8_333, 500_000, 1_234_567, market.Tokens(3) + 7} {
		var sum market.Money
		for k := int64(0); k < 180; k++ {
			c := MinuteCharge(perHour, k)
			if c < 0 {
				t.Fatalf("MinuteCharge(%d, %d) = %d, want >= 0", perHour, k, c)
			}
			sum += c
			if k%60 == 59 {
				want := perHour * market.Money(k/60+1)
				if sum != want {
					t.Errorf("price %s: sum of minutes 0..%d = %s, want %s", perHour, k, sum, want)
				}
			}
			if got := MinutesCost(perHour, k+1); got != sum {
				t.Errorf("MinutesCost(%s, %d) = %s, want %s", perHour, k+1, got, sum)
			}
		}
	}
}

func TestChargeSplitsExactly(t *testing.T) {
	for _, tc := range []struct {
		amount   market.Money
		fee      BasisPoints
		wantFee  market.Money
		wantHost market.Money
	}{
		{8_333, 1000, 833, 7_500},
		{1, 1000, 0, 1},
		{market.Tokens(1), 1000, 100_000, 900_000},
		{market.Tokens(1), 0, 0, market.Tokens(1)},
		{market.Tokens(1), 250, 25_000, 975_000},
	} {
		tr := Charge(market.Available("a-r"), "a-h", "i-1", 3, tc.amount, tc.fee, time.Unix(0, 0))
		if err := Validate(tr); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		got := map[market.LedgerAccount]market.Money{}
		for _, e := range tr.Entries {
			got[e.Account] = e.Amount
		}
		if got[market.FeesAccount] != tc.wantFee || got[market.Earnings("a-h")] != tc.wantHost || got[market.Available("a-r")] != -tc.amount {
			t.Errorf("Charge(%s, fee %d) entries = %v, want fee %s host %s", tc.amount, tc.fee, got, tc.wantFee, tc.wantHost)
		}
		if tr.Key != "charge:i-1:3" || tr.Minute != 3 || tr.Instance != "i-1" {
			t.Errorf("Charge key/minute/instance = %q/%d/%q", tr.Key, tr.Minute, tr.Instance)
		}
	}
}

func TestValidate(t *testing.T) {
	at := time.Unix(0, 0)
	good := Deposit("a-1", 5, "k", "", at)
	for name, tc := range map[string]struct {
		t    market.Transfer
		want bool
	}{
		"deposit":   {good, true},
		"no key":    {market.Transfer{Entries: good.Entries}, false},
		"one entry": {market.Transfer{Key: "k", Entries: good.Entries[:1]}, false},
		"unbalanced": {market.Transfer{Key: "k", Entries: []market.Entry{
			{Account: "world", Amount: -5}, {Account: "user:a:available", Amount: 4}}}, false},
		"duplicate account": {market.Transfer{Key: "k", Entries: []market.Entry{
			{Account: "world", Amount: -5}, {Account: "world", Amount: 5}}}, false},
	} {
		err := Validate(tc.t)
		if (err == nil) != tc.want {
			t.Errorf("%s: Validate = %v, want ok=%v", name, err, tc.want)
		}
		if err != nil && !market.IsKind(err, market.Invalid) {
			t.Errorf("%s: kind = %v, want invalid", name, market.KindOf(err))
		}
	}
}

func TestCheck(t *testing.T) {
	ok := map[market.LedgerAccount]market.Money{"world": -10, "user:a:available": 7, "platform:fees": 3}
	if err := Check(ok); err != nil {
		t.Errorf("Check(balanced) = %v", err)
	}
	if err := Check(map[market.LedgerAccount]market.Money{"world": -10, "user:a:available": 9}); err == nil {
		t.Error("Check(sum -1) = nil, want error")
	}
	if err := Check(map[market.LedgerAccount]market.Money{"world": 1, "user:a:available": -1}); err == nil {
		t.Error("Check(negative user) = nil, want error")
	}
}

func TestCheckMinutes(t *testing.T) {
	if err := CheckMinutes("i", []int64{2, 0, 1}, 3); err != nil {
		t.Errorf("CheckMinutes(0..2) = %v", err)
	}
	if err := CheckMinutes("i", []int64{0, 2}, 2); err == nil {
		t.Error("CheckMinutes(gap) = nil, want error")
	}
	if err := CheckMinutes("i", []int64{0, 1}, 3); err == nil {
		t.Error("CheckMinutes(count mismatch) = nil, want error")
	}
}
