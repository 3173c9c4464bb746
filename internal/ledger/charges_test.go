package ledger

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestSplitRefund(t *testing.T) {
	for _, tc := range []struct {
		name                            string
		amount, hostShare, pending, fee market.Money
		fromHost, fromPlatform          market.Money
		ok                              bool
	}{
		{"host's unsettled earnings cover its share", 100, 90, 500, 10, 90, 10, true},
		{"host has less pending than its share", 100, 90, 40, 100, 40, 60, true},
		{"nothing pending: all from the platform", 100, 90, 0, 100, 0, 100, true},
		{"the platform cannot cover the rest", 100, 90, 40, 59, 40, 60, false},
		{"negative pending counts as none", 100, 90, -5, 100, 0, 100, true},
		{"exactly covered", 100, 90, 90, 10, 90, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, p, ok := SplitRefund(tc.amount, tc.hostShare, tc.pending, tc.fee)
			if h != tc.fromHost || p != tc.fromPlatform || ok != tc.ok {
				t.Errorf("SplitRefund(%d, %d, %d, %d) = %d, %d, %v; want %d, %d, %v", tc.amount, tc.hostShare, tc.pending, tc.fee, h, p, ok, tc.fromHost, tc.fromPlatform, tc.ok)
			}
			if h+p != tc.amount {
				t.Errorf("parts %d + %d do not make %d", h, p, tc.amount)
			}
		})
	}
}

func TestChargesAndCheckMinuteCharges(t *testing.T) {
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	r1, r2, h := market.AccountID("a-r1"), market.AccountID("a-r2"), market.AccountID("a-h")
	cs := []market.MinuteCharge{
		MinuteRecord(market.Available(r1), h, "i-1", 0, 10_000, 1000, at),
		MinuteRecord(market.Escrow(r2), h, "i-2", 5, 20_000, 1000, at),
		MinuteRecord(market.Available(r1), h, "i-1", 1, 10_001, 1000, at),
	}
	batch := Charges(cs, "charges:1", at)
	batch.Seq = 7
	if err := Validate(batch); err != nil {
		t.Fatal(err)
	}
	want := map[market.LedgerAccount]market.Money{market.Available(r1): -20_001, market.Escrow(r2): -20_000, market.Earnings(h): 36_001, market.FeesAccount: 4000}
	for _, e := range batch.Entries {
		if want[e.Account] != e.Amount {
			t.Errorf("entry %s = %s, want %s", e.Account, e.Amount, want[e.Account])
		}
	}
	if probs := CheckTransfers([]market.Transfer{{Seq: 1, Kind: market.TransferDeposit, Entries: []market.Entry{{Account: market.WorldAccount, Amount: -1}, {Account: market.Available(r1), Amount: 1}}}}); len(probs[RuleChargeSplit]) != 0 {
		t.Fatal(probs)
	}
	if probs := CheckTransfers([]market.Transfer{batch})[RuleChargeSplit]; len(probs) != 0 {
		t.Errorf("a well-formed batch breaks the charge split: %v", probs)
	}
	for i := range cs {
		cs[i].Transfer = 7
	}
	for _, tc := range []struct {
		name   string
		ts     []market.Transfer
		cs     []market.MinuteCharge
		wantIn string // "" = no problem
	}{
		{"batch and its minutes agree", []market.Transfer{batch}, cs, ""},
		{"a minute missing", []market.Transfer{batch}, cs[:2], "add up to"},
		{"a minute of no transfer", nil, cs, "not a charge"},
		{"fee above the amount", []market.Transfer{batch}, append(cs[:2:2], market.MinuteCharge{Instance: "i-1", Minute: 1, Transfer: 7, From: market.Available(r1), Host: h, Amount: 1, Fee: 2}), "fee"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probs := CheckMinuteCharges(tc.ts, tc.cs)
			switch {
			case tc.wantIn == "" && len(probs) > 0:
				t.Errorf("problems %v, want none", probs)
			case tc.wantIn != "" && !strings.Contains(strings.Join(probs, "; "), tc.wantIn):
				t.Errorf("problems %v, want one saying %q", probs, tc.wantIn)
			}
		})
	}
}
