package market

import "time"

// WalletStatement is a user's monthly statement: every movement of its
// accounts in the month, with opening and closing balances per asset and
// account. Charges of consecutive minutes of one instance are one line
// with their minute range.
type WalletStatement struct {
	Account  AccountID          `json:"account"`
	Month    string             `json:"month"` // YYYY-MM, UTC
	From     time.Time          `json:"from"`  // first instant of the month
	To       time.Time          `json:"to"`    // first instant of the next month
	Balances []StatementBalance `json:"balances"`
	Lines    []StatementLine    `json:"lines"`
}

// StatementBalance is one account's balance over the month.
type StatementBalance struct {
	Asset   Asset         `json:"asset"`
	Account LedgerAccount `json:"account"`
	Opening Money         `json:"opening"`
	In      Money         `json:"in"`  // credits in the month
	Out     Money         `json:"out"` // debits in the month, as a positive amount
	Closing Money         `json:"closing"`
}

// StatementLine is one movement of a statement: a transfer, or a run of
// charged minutes of one instance.
type StatementLine struct {
	Seq        int64         `json:"seq"` // the first transfer's
	At         time.Time     `json:"at"`  // the first transfer's
	Kind       TransferKind  `json:"kind"`
	Asset      Asset         `json:"asset"`
	Account    LedgerAccount `json:"account"`
	Amount     Money         `json:"amount"`
	Instance   InstanceID    `json:"instance,omitempty"`
	FromMinute int64         `json:"from_minute,omitempty"` // for charges: the minutes [FromMinute, ToMinute)
	ToMinute   int64         `json:"to_minute,omitempty"`
	Reason     string        `json:"reason,omitempty"`
}
