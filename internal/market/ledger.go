package market

import (
	"strings"
	"time"
)

// Asset names a token. Each asset balances separately.
type Asset string

// DefaultAsset is the platform token.
const DefaultAsset Asset = "GMT"

// LedgerAccount names an account of the double-entry ledger:
// "world", "platform:fees", "user:<id>:available", "user:<id>:escrow",
// "host:<id>:earnings".
type LedgerAccount string

// WorldAccount is the external account that balances deposits and
// withdrawals. It is the only account allowed to go negative.
const WorldAccount LedgerAccount = "world"

// FeesAccount collects the platform fee.
const FeesAccount LedgerAccount = "platform:fees"

// Available is the account a renter spends from.
func Available(a AccountID) LedgerAccount { return LedgerAccount("user:" + string(a) + ":available") }

// Escrow holds a renter's money set aside for running rentals.
func Escrow(a AccountID) LedgerAccount { return LedgerAccount("user:" + string(a) + ":escrow") }

// Earnings is what a host earned from rentals of its machines.
func Earnings(a AccountID) LedgerAccount { return LedgerAccount("host:" + string(a) + ":earnings") }

// MayGoNegative reports whether the account may hold a negative balance.
func (l LedgerAccount) MayGoNegative() bool { return l == WorldAccount }

// Owner returns the user the account belongs to, or "" for platform accounts.
func (l LedgerAccount) Owner() AccountID {
	parts := strings.Split(string(l), ":")
	if len(parts) == 3 && (parts[0] == "user" || parts[0] == "host") {
		return AccountID(parts[1])
	}
	return ""
}

// TransferKind says why money moved.
type TransferKind string

// Transfer kinds.
const (
	TransferDeposit TransferKind = "deposit"
	TransferHold    TransferKind = "hold"    // available -> escrow
	TransferRelease TransferKind = "release" // escrow -> available
	TransferCharge  TransferKind = "charge"  // renter -> host earnings + fees
)

// Entry is one leg of a transfer. Amounts of a transfer sum to zero.
type Entry struct {
	Account LedgerAccount `json:"account"`
	Amount  Money         `json:"amount"`
}

// Transfer moves money between ledger accounts atomically. Transfers are
// never updated or deleted.
type Transfer struct {
	ID       TransferID   `json:"id"`
	Seq      int64        `json:"seq"` // assigned by the store, gapless
	Key      string       `json:"key"` // idempotency key, unique
	Kind     TransferKind `json:"kind"`
	Asset    Asset        `json:"asset"`
	Entries  []Entry      `json:"entries"`
	Instance InstanceID   `json:"instance,omitempty"`
	Minute   int64        `json:"minute,omitempty"` // for charges: minute index since the instance started
	Memo     string       `json:"memo,omitempty"`
	At       time.Time    `json:"at"`
}
