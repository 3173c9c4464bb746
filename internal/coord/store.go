package coord

import (
	"context"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Store is the coordinator's durable state. Every change happens inside Tx,
// which runs fn in one database transaction and commits only if fn returns
// nil. Transactions are serializable with respect to each other for the
// rows they touch; an implementation may retry fn on a serialization
// failure, so fn must have no side effects outside tx.
type Store interface {
	Tx(ctx context.Context, fn func(tx Tx) error) error
	Close() error
}

// Tx is the set of operations available inside a transaction. Lookups of a
// missing row return a *market.Error of kind NotFound; uniqueness violations
// return kind Conflict.
type Tx interface {
	// Accounts and keys.
	InsertAccount(ctx context.Context, a market.Account) error // Conflict if the email is taken (case-insensitive)
	Account(ctx context.Context, id market.AccountID) (market.Account, error)
	AccountByEmail(ctx context.Context, email string) (market.Account, error) // case-insensitive
	InsertAPIKey(ctx context.Context, k market.APIKey) error
	APIKeyByHash(ctx context.Context, hash []byte) (market.APIKey, error) // revoked keys are returned too
	APIKeys(ctx context.Context, owner market.AccountID) ([]market.APIKey, error)
	RevokeAPIKey(ctx context.Context, owner market.AccountID, id market.APIKeyID, at time.Time) error // NotFound if not the owner's

	// Machines. UsedGPUs is not stored; the coordinator fills it from
	// ActiveGPUs.
	InsertMachine(ctx context.Context, m market.Machine) error // Conflict on (owner, fingerprint)
	UpdateMachine(ctx context.Context, m market.Machine) error // whole row by ID
	Machine(ctx context.Context, id market.MachineID) (market.Machine, error)
	MachineByFingerprint(ctx context.Context, owner market.AccountID, fingerprint string) (market.Machine, error)
	Machines(ctx context.Context, f MachineFilter) ([]market.Machine, error) // ordered by ID
	// ActiveGPUs returns, per machine, the GPU indices held by active instances.
	ActiveGPUs(ctx context.Context, machines []market.MachineID) (map[market.MachineID][]int, error)

	// Instances. InsertInstance reserves the instance's GPUs: if any of them
	// is held by another active instance it returns Conflict and writes
	// nothing. UpdateInstance writes the whole row; moving to a terminal
	// state releases the GPUs, and so does a spot instance moving to
	// stopping (it was preempted or told to stop and no longer pays; the
	// agent starts nothing on its GPUs until it has ended).
	InsertInstance(ctx context.Context, i market.Instance) error
	UpdateInstance(ctx context.Context, i market.Instance) error
	Instance(ctx context.Context, id market.InstanceID) (market.Instance, error)
	Instances(ctx context.Context, f InstanceFilter) ([]market.Instance, error) // ordered by CreatedAt, then ID

	// Ledger. ApplyTransfer assigns t.Seq (the next of a gapless sequence),
	// stores t and its entries and updates balances. It returns Conflict if
	// t.Key was used before, Invalid if the entries do not sum to zero, and
	// InsufficientFunds (writing nothing) if an account that may not go
	// negative would. A charge (Kind charge) is unique per (Instance, Minute):
	// a second one returns Conflict.
	ApplyTransfer(ctx context.Context, t market.Transfer) (market.Transfer, error)
	TransferByKey(ctx context.Context, key string) (market.Transfer, error)
	Balance(ctx context.Context, a market.LedgerAccount, asset market.Asset) (market.Money, error) // 0 for an unknown account
	Balances(ctx context.Context, asset market.Asset) (map[market.LedgerAccount]market.Money, error)
	// Transfers returns transfers touching any account of owner (all when
	// owner is ""), newest first, at most limit (0 = no limit), with Seq < before
	// when before > 0.
	Transfers(ctx context.Context, owner market.AccountID, before int64, limit int) ([]market.Transfer, error)
	// ChargedMinutes returns the minute indices already charged for an instance.
	ChargedMinutes(ctx context.Context, id market.InstanceID) ([]int64, error)

	// Flow sums the entries of f.Account in transfers of kind f.Kind made
	// in [f.From, f.To) (a zero To: no upper bound).
	Flow(ctx context.Context, f FlowFilter) (market.Money, error)
	// TransfersByKind returns the transfers of the given kinds made before
	// until, oldest first.
	TransfersByKind(ctx context.Context, kinds []market.TransferKind, until time.Time) ([]market.Transfer, error)

	// Idempotency records of money calls, per (account, key).
	// InsertIdempotency returns Conflict if the key was recorded before.
	InsertIdempotency(ctx context.Context, r IdemRecord) error
	Idempotency(ctx context.Context, account market.AccountID, key string) (IdemRecord, error)

	// Withdrawals, ordered by CreatedAt then ID. UpdateWithdrawal writes
	// the whole row by ID.
	InsertWithdrawal(ctx context.Context, w market.Withdrawal) error
	UpdateWithdrawal(ctx context.Context, w market.Withdrawal) error
	Withdrawal(ctx context.Context, id market.WithdrawalID) (market.Withdrawal, error)
	Withdrawals(ctx context.Context, f WithdrawalFilter) ([]market.Withdrawal, error)

	// Stake removals in cooldown, ordered by At then ID. UpdateUnstake
	// writes the whole row by ID.
	InsertUnstake(ctx context.Context, u market.Unstake) error
	UpdateUnstake(ctx context.Context, u market.Unstake) error
	Unstakes(ctx context.Context, f UnstakeFilter) ([]market.Unstake, error)

	// Dividend statements, one per period: InsertStatement returns
	// Conflict if the period has one. Statements lists the newest first.
	InsertStatement(ctx context.Context, st market.DividendStatement) error
	Statement(ctx context.Context, period int64) (market.DividendStatement, error)
	Statements(ctx context.Context, limit int) ([]market.DividendStatement, error)

	// Logs. AppendLogs numbers the chunks per instance (Seq from 1) and stores them.
	AppendLogs(ctx context.Context, chunks []market.LogChunk) error
	Logs(ctx context.Context, id market.InstanceID, afterSeq int64, limit int) ([]market.LogChunk, error)

	// Spot bids. InsertBid assigns b.Seq (the next number of the book's
	// order) and returns the bid as stored; Conflict if b.ID exists,
	// NotFound if the bidder or machine does not. UpdateBid writes the
	// whole row by ID except Seq.
	InsertBid(ctx context.Context, b market.Bid) (market.Bid, error)
	UpdateBid(ctx context.Context, b market.Bid) error
	Bid(ctx context.Context, id market.BidID) (market.Bid, error)
	Bids(ctx context.Context, f BidFilter) ([]market.Bid, error) // ordered by Seq

	// Auction rounds. InsertRound assigns r.Seq and returns the round as
	// stored; Conflict if r.ID exists.
	InsertRound(ctx context.Context, r RoundRecord) (RoundRecord, error)
	Round(ctx context.Context, id market.RoundID) (RoundRecord, error)
	Rounds(ctx context.Context, f RoundFilter) ([]RoundRecord, error) // newest first

	// Events, numbered by the store.
	AppendEvent(ctx context.Context, e market.Event) error
	Events(ctx context.Context, f EventFilter) ([]market.Event, error) // newest first

	// Leases (leader election). Lease returns NotFound for a name never
	// written; PutLease writes the whole row, inserting it if missing.
	Lease(ctx context.Context, name string) (Lease, error)
	PutLease(ctx context.Context, l Lease) error

	// Heartbeat claims (see live.go). ClaimMachines records that node holds
	// fresh heartbeats of the machines named: each online one not yet
	// claimed by node gets BeatNode = node and LastSeenAt = the later of
	// its stored value and the one given (a claim node holds costs no
	// write). It returns the IDs that are offline or unknown.
	// ReleaseMachines ends node's claims on the machines named, writing
	// their last heartbeats; machines another node claimed since are left
	// alone. BeatNode records that node vouched for all its claims at at.
	// VouchedSeen returns, for those of the machines named that a node
	// claims, when that node last vouched.
	ClaimMachines(ctx context.Context, node string, seen map[market.MachineID]time.Time) ([]market.MachineID, error)
	ReleaseMachines(ctx context.Context, node string, seen map[market.MachineID]time.Time) error
	BeatNode(ctx context.Context, node string, at time.Time) error
	VouchedSeen(ctx context.Context, ids []market.MachineID) (map[market.MachineID]time.Time, error)
}

// Lease is a named lease row: who holds it, until when, and its fencing
// generation, which grows by one each time the lease changes holder.
type Lease struct {
	Name       string
	Holder     string
	Generation int64
	AcquiredAt time.Time
	ExpiresAt  time.Time
}

// MachineFilter selects machines. Zero fields do not filter.
type MachineFilter struct {
	Owner  market.AccountID
	Listed *bool
	Online *bool
	// SeenBefore selects machines last seen before it: their stored
	// LastSeenAt is before it and no node that claims them vouched since.
	SeenBefore time.Time
}

// InstanceFilter selects instances. Zero fields do not filter.
type InstanceFilter struct {
	Renter     market.AccountID
	Machine    market.MachineID
	ActiveOnly bool // only states that hold GPUs
	// Billable selects instances with StartedAt set and Settled false:
	// those whose charges or escrow release may still be due.
	Billable bool
}

// BidFilter selects bids. Zero fields do not filter.
type BidFilter struct {
	Bidder   market.AccountID
	Machine  market.MachineID
	OpenOnly bool // only bids in the book (active, winning, outbid)
}

// RoundRecord is one machine's clearing round as stored: the auction's
// input and decision as JSON (an auction.Round and an auction.Decision),
// kept as given so that a replay sees exactly what the round saw.
type RoundRecord struct {
	ID       market.RoundID
	Seq      int64
	Machine  market.MachineID
	At       time.Time
	Input    []byte
	Decision []byte
}

// RoundFilter selects rounds. Zero fields do not filter.
type RoundFilter struct {
	Machine market.MachineID
	Before  int64 // only rounds with a lower Seq
	Limit   int
}

// EventFilter selects events. Zero fields do not filter.
type EventFilter struct {
	Account  market.AccountID
	Machine  market.MachineID
	Instance market.InstanceID
	Type     string
	AfterSeq int64 // only events with a higher Seq
	Limit    int
}

// FlowFilter selects the entries Flow sums.
type FlowFilter struct {
	Account  market.LedgerAccount
	Kind     market.TransferKind
	From, To time.Time
}

// IdemRecord is the stored answer of a money call made with an
// Idempotency-Key: the hash of what was asked and either the JSON result or
// the error kind and message.
type IdemRecord struct {
	Account      market.AccountID
	Key          string
	Op           string
	RequestHash  string
	ErrorKind    string // "" when the call succeeded
	ErrorMessage string
	Response     []byte
	CreatedAt    time.Time
}

// WithdrawalFilter selects withdrawals. Zero fields do not filter.
type WithdrawalFilter struct {
	Account market.AccountID
	State   market.WithdrawalState
}

// UnstakeFilter selects stake removals. Zero fields do not filter.
type UnstakeFilter struct {
	Account    market.AccountID
	Unreleased bool
	DueBy      *time.Time // only those with ReleaseAt at or before
}
