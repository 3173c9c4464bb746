package verify

import (
	"slices"

	"github.com/gpumarket/gpumarket/internal/market"
)

// The slashing schedule, in basis points of the machine's bond at the
// time. Whatever is slashed goes to the renters affected, pro rata to the
// GPUs each held; with no renter affected nothing is slashed.
const (
	// SlashFailedCheckBP: a failed check, paid to the renters of the
	// instances running on the machine then.
	SlashFailedCheckBP = 1000 // 10%
	// SlashDowntimeBP: the machine went offline with instances running,
	// paid to the renters of the instances that failed.
	SlashDowntimeBP = 500 // 5%
)

// SlashAmount is bp basis points of bond, rounded down.
func SlashAmount(bond market.Money, bp int64) market.Money {
	if bond <= 0 || bp <= 0 {
		return 0
	}
	return market.Money(int64(bond)/10000*bp + int64(bond)%10000*bp/10000)
}

// SlashShares splits amount among renters pro rata to the GPUs each held.
// The micro-tokens left by rounding go one each to the renters in ID
// order, so the shares sum to amount exactly.
func SlashShares(amount market.Money, gpus map[market.AccountID]int) map[market.AccountID]market.Money {
	out := map[market.AccountID]market.Money{}
	total := 0
	for _, n := range gpus {
		total += max(n, 0)
	}
	if amount <= 0 || total == 0 {
		return out
	}
	ids := make([]market.AccountID, 0, len(gpus))
	for id, n := range gpus {
		if n > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var given market.Money
	for _, id := range ids {
		share := market.Money(int64(amount)/int64(total)*int64(gpus[id]) + int64(amount)%int64(total)*int64(gpus[id])/int64(total))
		out[id] = share
		given += share
	}
	for i := 0; given < amount; i = (i + 1) % len(ids) {
		out[ids[i]]++
		given++
	}
	return out
}
