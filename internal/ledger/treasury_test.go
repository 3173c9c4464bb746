package ledger

import (
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

var t0 = time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)

func TestStakeTime(t *testing.T) {
	h := time.Hour
	end := t0.Add(h)
	for _, tc := range []struct {
		name    string
		changes []StakeChange
		want    map[market.AccountID]int64 // in micro-tokens x hours
	}{
		{"staked all period", []StakeChange{{"a", t0.Add(-h), 10}}, map[market.AccountID]int64{"a": 10}},
		{"staked half way", []StakeChange{{"a", t0.Add(h / 2), 10}}, map[market.AccountID]int64{"a": 5}},
		{"unstaked half way", []StakeChange{{"a", t0.Add(-h), 10}, {"a", t0.Add(h / 2), -10}}, map[market.AccountID]int64{"a": 5}},
		{"changes after the end ignored", []StakeChange{{"a", t0, 10}, {"a", end, 100}}, map[market.AccountID]int64{"a": 10}},
		{"two stakers", []StakeChange{{"b", t0.Add(h / 4), 8}, {"a", t0, 4}}, map[market.AccountID]int64{"a": 4, "b": 6}},
		{"nothing staked", nil, map[market.AccountID]int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := StakeTime(tc.changes, t0, end)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for a, w := range tc.want {
				want := new(big.Int).Mul(big.NewInt(w), big.NewInt(h.Microseconds()))
				if got[a] == nil || got[a].Cmp(want) != 0 {
					t.Errorf("%s: got %v, want %v", a, got[a], want)
				}
			}
		})
	}
}

func TestDistribute(t *testing.T) {
	st := func(vs ...int64) map[market.AccountID]*big.Int {
		m := map[market.AccountID]*big.Int{}
		for i, v := range vs {
			m[market.AccountID(rune('a'+i))] = big.NewInt(v)
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		pool    market.Money
		stake   map[market.AccountID]*big.Int
		payouts []market.Money
		rest    market.Money
	}{
		{"exact split", 100, st(1, 3), []market.Money{25, 75}, 0},
		{"remainder stays", 100, st(1, 1, 1), []market.Money{33, 33, 33}, 1},
		{"nobody staked", 100, st(), nil, 100},
		{"empty pool", 0, st(5), []market.Money{0}, 0},
		{"huge stake-time", 7, st(1<<62, 1<<62), []market.Money{3, 3}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shares, _, rest := Distribute(tc.pool, tc.stake)
			var got []market.Money
			for _, s := range shares {
				got = append(got, s.Payout)
			}
			if !slices.Equal(got, tc.payouts) || rest != tc.rest {
				t.Errorf("payouts %v rest %s; want %v rest %s", got, rest, tc.payouts, tc.rest)
			}
		})
	}
}

func TestCheckTransfers(t *testing.T) {
	charge := Charge(market.Available("r"), "h", "i-1", 0, 1000, 1000, t0)
	charge.Seq = 1
	dep := Deposit("r", 5, "k", "", t0)
	dep.Seq = 2
	bad := dep
	bad.Seq = 4
	bad.Entries = []market.Entry{{Account: market.WorldAccount, Amount: -5}, {Account: market.Available("r"), Amount: 4}}
	split := charge
	split.Seq = 2
	split.Entries = []market.Entry{{Account: market.Available("r"), Amount: -1000}, {Account: market.Earnings("h"), Amount: 1000}, {Account: market.WorldAccount, Amount: 0}}
	for _, tc := range []struct {
		name   string
		ts     []market.Transfer
		broken []string
	}{
		{"clean", []market.Transfer{charge, dep}, nil},
		{"gap and unbalanced", []market.Transfer{charge, dep, bad}, []string{RuleSeq, RuleSumZero}},
		{"charge not split into earnings and fee", []market.Transfer{charge, split}, []string{RuleChargeSplit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var broken []string
			for rule, probs := range CheckTransfers(tc.ts) {
				if len(probs) > 0 {
					broken = append(broken, rule)
				}
			}
			slices.Sort(broken)
			want := slices.Sorted(slices.Values(tc.broken))
			if !slices.Equal(broken, want) {
				t.Errorf("broken rules %q, want %q", broken, want)
			}
		})
	}
}

func TestPeriod(t *testing.T) {
	k, start, end := Period(t0.Add(25*time.Hour+time.Second), 24*time.Hour)
	if !start.Equal(t0.Add(24*time.Hour)) || !end.Equal(t0.Add(48*time.Hour)) || PeriodStart(k, 24*time.Hour) != start {
		t.Errorf("period %d: %s to %s", k, start, end)
	}
}
