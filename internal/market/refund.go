package market

import "time"

// RefundID names a refund ("r-...").
type RefundID string

// RefundPrefix starts every RefundID.
const RefundPrefix = "r-"

// TransferRefund gives a renter back what minutes of an instance cost:
// host earnings (and, for what they cannot cover, platform fees) -> the
// renter's available balance.
const TransferRefund TransferKind = "refund"

// RefundRequest asks to refund a renter for minutes of an instance, for
// example while its host was down. The minutes are FromMinute (included)
// to ToMinute (excluded), counted from the instance's start as billing
// counts them; or, when Since and Until are set instead, every minute that
// overlaps [Since, Until). Only minutes that were charged are refunded,
// each at most once.
type RefundRequest struct {
	Instance   InstanceID `json:"instance"`
	FromMinute int64      `json:"from_minute,omitempty"`
	ToMinute   int64      `json:"to_minute,omitempty"`
	Since      *time.Time `json:"since,omitempty"`
	Until      *time.Time `json:"until,omitempty"`
	Reason     string     `json:"reason"`
}

// Refund is a refund made: the minutes, what the renter got back and
// where it came from.
type Refund struct {
	ID           RefundID   `json:"id"`
	Instance     InstanceID `json:"instance"`
	Renter       AccountID  `json:"renter"`
	Host         AccountID  `json:"host"`
	FromMinute   int64      `json:"from_minute"`
	ToMinute     int64      `json:"to_minute"` // excluded
	Minutes      int64      `json:"minutes"`   // charged minutes refunded
	Asset        Asset      `json:"asset"`
	Amount       Money      `json:"amount"`        // paid back to the renter
	FromHost     Money      `json:"from_host"`     // taken from the host's unsettled earnings
	FromPlatform Money      `json:"from_platform"` // taken from the platform's fees
	Reason       string     `json:"reason"`
	By           AccountID  `json:"by,omitempty"` // the admin; "" when the coordinator refunded on its own
	TransferSeq  int64      `json:"transfer_seq"`
	At           time.Time  `json:"at"`
}
