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

// A Reader is a Store that can also run reads outside a transaction, each
// statement seeing what was committed before it: cheaper than Tx where
// the reads need not agree with one another. fn must not write.
type Reader interface {
	Read(ctx context.Context, fn func(tx Tx) error) error
}

// Tx is the set of operations available inside a transaction. Lookups of a
// missing row return a *market.Error of kind NotFound; uniqueness violations
// return kind Conflict.
type Tx interface {
	// Atomic runs fn as one step of the transaction: when fn fails,
	// everything it wrote is undone and the transaction goes on, so that
	// one batch can try many changes and keep those that succeed.
	Atomic(ctx context.Context, fn func() error) error
	// AtomicOrRerun is Atomic for a step that nearly never fails after it
	// first writes: the store may set no savepoint for it, and when it
	// does fail after writing and the caller goes on, run the whole
	// transaction again (fn with it, so it must be rerunnable).
	AtomicOrRerun(ctx context.Context, fn func() error) error
	// WriteBehind lets the store keep, from now on, the writes that
	// return only an error (InsertInstance, AppendEvent,
	// InsertIdempotency, ApplyTransferLater) and write them together
	// before the transaction's next statement or its commit; a step that
	// fails forgets what it kept. When the database refuses what was
	// kept, the transaction runs again with every write made at once, so
	// that the call that wrote it returns the refusal: until the commit,
	// fn must not act outside the transaction on a write's success. A
	// store may ignore it.
	WriteBehind()
	// AfterCommit runs fn once the transaction has committed, before Tx
	// returns and before what the store does itself after a commit (on
	// Postgres, numbering the transaction's events); not at all when it
	// does not commit (an attempt retried, a failure). Outside a
	// transaction (Reader.Read) fn runs at once. fn must not start a
	// transaction: the store may hold its own locks until Tx returns.
	AfterCommit(fn func())

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
	// AllActiveGPUs is ActiveGPUs of every machine, in one read.
	AllActiveGPUs(ctx context.Context) (map[market.MachineID][]int, error)

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
	// ApplyTransferLater is ApplyTransfer for a caller that needs no
	// number back: with WriteBehind, it may be written later.
	ApplyTransferLater(ctx context.Context, t market.Transfer) error
	TransferByKey(ctx context.Context, key string) (market.Transfer, error)
	Balance(ctx context.Context, a market.LedgerAccount, asset market.Asset) (market.Money, error) // 0 for an unknown account
	Balances(ctx context.Context, asset market.Asset) (map[market.LedgerAccount]market.Money, error)
	// Transfers returns transfers touching any account of owner (all when
	// owner is ""), newest first, at most limit (0 = no limit), with Seq < before
	// when before > 0.
	Transfers(ctx context.Context, owner market.AccountID, before int64, limit int) ([]market.Transfer, error)
	// ChargedMinutes returns the minute indices already charged for an instance.
	ChargedMinutes(ctx context.Context, id market.InstanceID) ([]int64, error)

	// Batched billing (issue 7). Every charged minute of an instance has
	// one record, whichever transfer paid it: ApplyTransfer of a charge
	// writes its own, ApplyCharges those of a charges batch.
	//
	// ApplyTransfers applies ts as ApplyTransfer would one after another,
	// with a few statements for all of them, and returns them with Seq set:
	// all are applied or none (same error kinds as ApplyTransfer; balances
	// are checked on the net change per account and asset of the whole
	// batch). ApplyCharges applies t, a charges transfer, and records the
	// minutes it pays (their Transfer set to its Seq), or nothing: Conflict
	// if a minute was charged before. MinuteCharges lists minute records,
	// ordered by instance and minute. BillableInstances reads the billing
	// state of instances with StartedAt set, Settled false and ID > after,
	// ordered by ID, at most limit. BalancesOf returns the balances of the
	// named accounts (absent: 0). RecordBilling writes BilledMins, Charged
	// and Escrow of each instance whose billed minutes are still FromMins,
	// and returns Conflict, writing nothing, if any is not.
	ApplyTransfers(ctx context.Context, ts []market.Transfer) ([]market.Transfer, error)
	ApplyCharges(ctx context.Context, t market.Transfer, cs []market.MinuteCharge) (market.Transfer, error)
	MinuteCharges(ctx context.Context, f ChargeFilter) ([]market.MinuteCharge, error)
	BillableInstances(ctx context.Context, after market.InstanceID, limit int) ([]BillingRow, error)
	BalancesOf(ctx context.Context, asset market.Asset, accounts []market.LedgerAccount) (map[market.LedgerAccount]market.Money, error)
	RecordBilling(ctx context.Context, us []BillingUpdate) error

	// Refunds. InsertRefund returns Conflict if r.ID exists. Refunds lists
	// them ordered by At, then ID.
	InsertRefund(ctx context.Context, r market.Refund) error
	Refunds(ctx context.Context, f RefundFilter) ([]market.Refund, error)

	// Project assets. InsertAsset returns Conflict if the name exists;
	// Assets lists them by name (the platform token is not stored).
	InsertAsset(ctx context.Context, a market.AssetInfo) error
	Assets(ctx context.Context) ([]market.AssetInfo, error)

	// Spend limits, one row per renter. SpendLimit returns NotFound when
	// the renter set none; PutSpendLimit writes the whole row.
	// SpendAlerts lists the rows with an alert threshold.
	PutSpendLimit(ctx context.Context, l SpendLimit) error
	SpendLimit(ctx context.Context, account market.AccountID) (SpendLimit, error)
	// SpendLimitsOf returns the limits of those of accounts that set any.
	SpendLimitsOf(ctx context.Context, accounts []market.AccountID) (map[market.AccountID]SpendLimit, error)
	SpendAlerts(ctx context.Context) ([]SpendLimit, error)

	// Flow sums the entries of f.Account in transfers of kind f.Kind (or
	// f.Kinds) made in [f.From, f.To) (a zero To: no upper bound), in
	// asset f.Asset (empty: every asset).
	Flow(ctx context.Context, f FlowFilter) (market.Money, error)
	// FlowsOf is Flow for each of accounts (f.Account aside): the sums
	// that are not zero.
	FlowsOf(ctx context.Context, f FlowFilter, accounts []market.LedgerAccount) (map[market.LedgerAccount]market.Money, error)
	// FeesByDay sums the platform fee account's entries in charges and
	// refunds of the platform token per UTC day, for transfers made in
	// [from, to) (a zero to: no upper bound): one DayFlow for each day
	// with any, oldest first. It reads only the transfers made since
	// from, however long the ledger.
	FeesByDay(ctx context.Context, from, to time.Time) ([]DayFlow, error)
	// TransfersByKind returns the transfers of the given kinds made before
	// until, oldest first; never charges (see MinuteCharges).
	TransfersByKind(ctx context.Context, kinds []market.TransferKind, until time.Time) ([]market.Transfer, error)

	// Idempotency records of money calls, per (account, key).
	// InsertIdempotency returns Conflict if the key was recorded before.
	InsertIdempotency(ctx context.Context, r IdemRecord) error
	Idempotency(ctx context.Context, account market.AccountID, key string) (IdemRecord, error)
	// IdempotencyOf returns the records of those of keys recorded.
	IdempotencyOf(ctx context.Context, keys []IdemKey) (map[IdemKey]IdemRecord, error)

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

	// Events, numbered by the store without gaps. A store may number them
	// only once the transaction commits (Postgres does, so that writers
	// do not collide on the numbering), after every event committed
	// before: Events then lists them once Tx returns, not inside it.
	AppendEvent(ctx context.Context, e market.Event) error
	Events(ctx context.Context, f EventFilter) ([]market.Event, error) // newest first
	// OutcomeCounts counts the events of the OutcomeTypes of each span's
	// machine from its From to its To (both included), by machine, type
	// and message (ordered so), reading only those.
	OutcomeCounts(ctx context.Context, spans []OutcomeSpan) ([]EventCount, error)

	// Leases (leader election). Lease returns NotFound for a name never
	// written; PutLease writes the whole row, inserting it if missing.
	Lease(ctx context.Context, name string) (Lease, error)
	PutLease(ctx context.Context, l Lease) error

	// Verification checks. InsertCheck returns Conflict if c.ID exists
	// and NotFound if its machine does not; UpdateCheck writes the whole
	// check by ID. Checks lists the newest first (CreatedAt, then ID).
	InsertCheck(ctx context.Context, c market.Check) error
	UpdateCheck(ctx context.Context, c market.Check) error
	Check(ctx context.Context, id market.CheckID) (market.Check, error)
	Checks(ctx context.Context, f CheckFilter) ([]market.Check, error)
	// GPU UUID claims: a UUID belongs to one machine. GPUClaims returns
	// the machine holding each of uuids (unclaimed ones are absent).
	// ClaimGPUs makes machine's claims exactly uuids; it returns Conflict,
	// writing nothing, if another machine holds one of them.
	GPUClaims(ctx context.Context, uuids []string) (map[string]market.MachineID, error)
	ClaimGPUs(ctx context.Context, machine market.MachineID, uuids []string) error

	// Deployments (see deployments.go). InsertDeployment returns Conflict
	// if the ID or the owner's name is taken; UpdateDeployment writes the
	// whole row by ID; DeleteDeployment removes the row and its history.
	// Deployments lists them ordered by CreatedAt, then ID.
	InsertDeployment(ctx context.Context, d market.Deployment) error
	UpdateDeployment(ctx context.Context, d market.Deployment) error
	DeleteDeployment(ctx context.Context, id market.DeploymentID) error
	Deployment(ctx context.Context, id market.DeploymentID) (market.Deployment, error)
	DeploymentByName(ctx context.Context, owner market.AccountID, name string) (market.Deployment, error)
	Deployments(ctx context.Context, f DeploymentFilter) ([]market.Deployment, error)
	// SetInstanceDeployment records that an instance is a replica of a
	// deployment, at a revision of its spec. Replicas returns instances of
	// deployments (with Deployment and DeploymentRevision set), ordered by
	// CreatedAt then ID.
	SetInstanceDeployment(ctx context.Context, id market.InstanceID, d market.DeploymentID, revision int64) error
	Replicas(ctx context.Context, f ReplicaFilter) ([]market.Instance, error)
	// ActiveReplicas returns what the reconciler needs of every active
	// replica of every deployment, ordered by CreatedAt then ID.
	ActiveReplicas(ctx context.Context) ([]ReplicaState, error)
	// AppendDeploymentHistory numbers (Seq) and stores decisions;
	// DeploymentHistory lists a deployment's newest first, at most limit.
	AppendDeploymentHistory(ctx context.Context, hs []market.DeploymentHistory) error
	DeploymentHistory(ctx context.Context, id market.DeploymentID, limit int) ([]market.DeploymentHistory, error)
	// Pools. PutPool inserts or replaces a pool by name; DeletePool
	// returns Conflict while machines are assigned to it. SetMachinePool
	// assigns a machine to a pool ("" takes it out of pools); NotFound
	// for an unknown machine or pool. MachinePools maps every assigned
	// machine to its pool.
	PutPool(ctx context.Context, p market.Pool) error
	Pool(ctx context.Context, name string) (market.Pool, error)
	Pools(ctx context.Context) ([]market.Pool, error)
	DeletePool(ctx context.Context, name string) error
	SetMachinePool(ctx context.Context, machine market.MachineID, pool string) error
	MachinePools(ctx context.Context) (map[market.MachineID]string, error)
	// MachinePool is the pool a machine is assigned to, "" for none.
	MachinePool(ctx context.Context, machine market.MachineID) (string, error)

	// Pool rewards. PutPool writes a pool's reward terms but never its
	// Paid and Stopped, which only these change. ApplyPoolRewards applies
	// tr (a pool_rewards transfer paying exactly rs), records each minute
	// of rs and adds each pool's part to its Paid; a minute rewarded
	// before is a Conflict and nothing is written. SetPoolRewardsStopped
	// sets why a pool's rewards stopped ("" when they resume).
	// RewardMinutes lists the rewarded minutes of an instance ("" for
	// all) by instance and minute.
	ApplyPoolRewards(ctx context.Context, tr market.Transfer, rs []market.RewardMinute) (market.Transfer, error)
	SetPoolRewardsStopped(ctx context.Context, pool, why string) error
	RewardMinutes(ctx context.Context, instance market.InstanceID) ([]market.RewardMinute, error)

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
	// OtherNodes reports whether a node other than node vouched at or
	// after since, or claims a machine.
	OtherNodes(ctx context.Context, node string, since time.Time) (bool, error)
	VouchedSeen(ctx context.Context, ids []market.MachineID) (map[market.MachineID]time.Time, error)
	// AllVouchedSeen is VouchedSeen of every machine, in one read.
	AllVouchedSeen(ctx context.Context) (map[market.MachineID]time.Time, error)

	// Replica signals (signals.go). PutReplicaSignals writes signals by
	// instance, keeping of each value the one reported later.
	// ReplicaSignals returns those written at or after since, by instance.
	// PruneReplicaSignals deletes those written before before.
	PutReplicaSignals(ctx context.Context, sigs []ReplicaSignal) error
	ReplicaSignals(ctx context.Context, since time.Time) (map[market.InstanceID]ReplicaSignal, error)
	PruneReplicaSignals(ctx context.Context, before time.Time) error
}

// BillingRow is what the billing tick reads of a billable instance: its
// billing fields and the host its charges pay. Zero times stand for none.
// It is narrow on purpose: the tick reads every billable instance.
type BillingRow struct {
	ID           market.InstanceID
	Renter       market.AccountID
	Host         market.AccountID
	Kind         market.InstanceKind
	State        market.InstanceState
	PricePerHour market.Money
	PricePerDay  market.Money
	Escrow       market.Money
	Charged      market.Money
	BilledMins   int64
	StartedAt    time.Time
	StopAt       time.Time
	// Pool is the pool of the instance's machine ("" for none) and GPUs
	// the instance's GPU count, for pool rewards; GPUs is 0 outside pools.
	Pool string
	GPUs int
}

// BillingUpdate is the billing state of one instance after a batch of
// charges; FromMins is the billed minutes it was read with.
type BillingUpdate struct {
	Instance   market.InstanceID
	FromMins   int64
	BilledMins int64
	Charged    market.Money
	Escrow     market.Money
}

// ChargeFilter selects minute records. Zero fields do not filter.
type ChargeFilter struct {
	Instance  market.InstanceID
	Transfers []int64 // only minutes paid by these transfers (Seq)
}

// SpendLimit is a renter's stored spend limits and its last alert.
type SpendLimit struct {
	Account   market.AccountID
	Limits    market.SpendLimits
	AlertedAt time.Time // zero when never
	UpdatedAt time.Time
}

// RefundFilter selects refunds. Zero fields do not filter.
type RefundFilter struct {
	Instance market.InstanceID
	Renter   market.AccountID
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
	// IDs, when not empty, selects only these machines.
	IDs    []market.MachineID
	Owner  market.AccountID
	Listed *bool
	Online *bool
	// SeenBefore selects machines last seen before it: their stored
	// LastSeenAt is before it and no node that claims them vouched since.
	SeenBefore time.Time
}

// InstanceFilter selects instances. Zero fields do not filter.
type InstanceFilter struct {
	Renter  market.AccountID
	Machine market.MachineID
	// Machines, when not empty, selects only instances on these machines.
	Machines []market.MachineID
	// IDs, when not empty, selects only these instances.
	IDs        []market.InstanceID
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

// CheckFilter selects verification checks. Zero fields do not filter.
type CheckFilter struct {
	Machine market.MachineID
	// Machines, when not empty, selects only checks of these machines.
	Machines []market.MachineID
	State    market.CheckState
	Limit    int
	// LimitEach, when above 0 with Machines, keeps only the newest
	// LimitEach checks of each of them.
	LimitEach int
}

// DeploymentFilter selects deployments. Zero fields do not filter.
type DeploymentFilter struct {
	Owner market.AccountID
	Pool  string
}

// ReplicaFilter selects instances of deployments. Zero fields do not
// filter.
type ReplicaFilter struct {
	Deployment market.DeploymentID
	ActiveOnly bool
	// EndedAfter selects instances that reached a terminal state after it,
	// in the order they ended (otherwise replicas come in creation order).
	EndedAfter time.Time
	Limit      int
}

// ReplicaState is an active replica as the reconciler reads it.
type ReplicaState struct {
	Instance   market.InstanceID
	Deployment market.DeploymentID
	Revision   int64
	Machine    market.MachineID
	GPUs       []int
	State      market.InstanceState
	CreatedAt  time.Time
}

// EventFilter selects events. Zero fields do not filter.
type EventFilter struct {
	Account  market.AccountID
	Machine  market.MachineID
	Instance market.InstanceID
	Type     string
	AfterSeq int64 // only events with a higher Seq
	// Machines, when not empty, selects only events of these machines.
	Machines []market.MachineID
	// StatesOnly selects only the events that change whether a machine
	// is online or listed: machine.registered, .online, .offline, .listed
	// and .unlisted (indexed apart: migration 0019).
	StatesOnly bool
	Limit      int
	// LimitEach, when above 0 with Machines, keeps only the newest
	// LimitEach events of each of them.
	LimitEach int
}

// OutcomeTypes are the event types of a machine's outcomes that its
// reliability counts: its instances' ends and its checks' verdicts
// (Tx.OutcomeCounts).
var OutcomeTypes = []string{"instance.failed", "instance.stopped", "instance.preempted", "machine.verified", "machine.verify_failed"}

// OutcomeSpan is a machine and a span of time for Tx.OutcomeCounts.
type OutcomeSpan struct {
	Machine  market.MachineID
	From, To time.Time
}

// EventCount is how many events of one machine, type and message
// Tx.OutcomeCounts found.
type EventCount struct {
	Machine       market.MachineID
	Type, Message string
	N             int
}

// FlowFilter selects the entries Flow sums.
type FlowFilter struct {
	Account  market.LedgerAccount
	Kind     market.TransferKind
	Kinds    []market.TransferKind // more kinds, besides Kind
	From, To time.Time
	Asset    market.Asset // "" sums every asset
}

// DayFlow is the sum of an account's entries on one UTC day.
type DayFlow struct {
	Day    time.Time // midnight UTC
	Amount market.Money
}

// IdemRecord is the stored answer of a money call made with an
// Idempotency-Key: the hash of what was asked and either the JSON result or
// the error kind and message.
// IdemKey names an idempotency record: an account's key.
type IdemKey struct {
	Account market.AccountID
	Key     string
}

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
