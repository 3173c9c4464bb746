package verify_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

func TestSlashAmount(t *testing.T) {
	tests := []struct {
		bond market.Money
		bp   int64
		want market.Money
	}{
		{market.Tokens(100), verify.SlashFailedCheckBP, market.Tokens(10)},
		{market.Tokens(100), verify.SlashDowntimeBP, market.Tokens(5)},
		{9, 1000, 0}, // rounds down
		{19, 1000, 1},
		{0, 1000, 0},
		{market.Money(1 << 62), 10000, market.Money(1 << 62)}, // no overflow
		{market.Tokens(1), 0, 0},
	}
	for _, tc := range tests {
		if got := verify.SlashAmount(tc.bond, tc.bp); got != tc.want {
			t.Errorf("SlashAmount(%d, %d) = %d, want %d", tc.bond, tc.bp, got, tc.want)
		}
	}
}

func TestSlashShares(t *testing.T) {
	tests := []struct {
		name   string
		amount market.Money
		gpus   map[market.AccountID]int
		want   map[market.AccountID]market.Money
	}{
		{"one renter", 100, map[market.AccountID]int{"a-1": 2}, map[market.AccountID]market.Money{"a-1": 100}},
		{"pro rata", 100, map[market.AccountID]int{"a-1": 1, "a-2": 3}, map[market.AccountID]market.Money{"a-1": 25, "a-2": 75}},
		{"remainder in ID order", 10, map[market.AccountID]int{"a-2": 1, "a-1": 1, "a-3": 1}, map[market.AccountID]market.Money{"a-1": 4, "a-2": 3, "a-3": 3}},
		{"nobody affected", 100, map[market.AccountID]int{}, map[market.AccountID]market.Money{}},
		{"zero GPUs ignored", 7, map[market.AccountID]int{"a-1": 0, "a-2": 2}, map[market.AccountID]market.Money{"a-2": 7}},
		{"nothing to give", 0, map[market.AccountID]int{"a-1": 1}, map[market.AccountID]market.Money{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := verify.SlashShares(tc.amount, tc.gpus)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("shares (-want +got):\n%s", d)
			}
			var sum market.Money
			for _, v := range got {
				sum += v
			}
			if len(got) > 0 && sum != tc.amount {
				t.Errorf("shares sum to %d, want %d", sum, tc.amount)
			}
		})
	}
}
