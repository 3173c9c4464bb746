package market

import "time"

// TransferCharges is a billing batch: one transfer that pays many
// instance-minutes at once, from the renters' available or escrow accounts
// to the hosts' earnings and the platform fee. Each minute it pays is a
// MinuteCharge row naming it, so every (instance, minute) is still charged
// exactly once and can be listed; the batch only saves writing three
// ledger entries per minute (issue 7: 100,000 running instances are
// billed in a few seconds a minute).
const TransferCharges TransferKind = "charges"

// MinuteCharge is one billed minute of an instance: what the renter paid
// for it, from which account, and the platform's fee (the host earned
// Amount - Fee). Transfer is the Seq of the transfer that moved the money:
// a charge (one minute) or a charges batch.
type MinuteCharge struct {
	Instance InstanceID    `json:"instance"`
	Minute   int64         `json:"minute"`
	Transfer int64         `json:"transfer"`
	From     LedgerAccount `json:"from"`
	Host     AccountID     `json:"host"`
	Amount   Money         `json:"amount"`
	Fee      Money         `json:"fee"`
	At       time.Time     `json:"at"`
}
