package market

import "time"

// Accounts, transfer kinds and wire types of withdrawals, staking and
// dividends, and of the ledger check.

// WithdrawalID names a queued withdrawal ("w-...").
type WithdrawalID string

// WithdrawalPrefix starts every WithdrawalID.
const WithdrawalPrefix = "w-"

// Withdrawing holds a host's earnings queued for withdrawal until an admin
// completes (pays out) or rejects (returns) them.
func Withdrawing(a AccountID) LedgerAccount {
	return LedgerAccount("host:" + string(a) + ":withdrawing")
}

// Staked holds the tokens a user has staked; they earn dividends.
func Staked(a AccountID) LedgerAccount { return LedgerAccount("user:" + string(a) + ":staked") }

// Unstaking holds unstaked tokens during the cooldown; they earn nothing.
func Unstaking(a AccountID) LedgerAccount { return LedgerAccount("user:" + string(a) + ":unstaking") }

// More transfer kinds.
const (
	TransferWithdraw       TransferKind = "withdraw"        // earnings -> withdrawing
	TransferPayout         TransferKind = "payout"          // withdrawing -> world
	TransferWithdrawReturn TransferKind = "withdraw_return" // withdrawing -> earnings (rejected)
	TransferStake          TransferKind = "stake"           // available -> staked
	TransferUnstake        TransferKind = "unstake"         // staked -> unstaking
	TransferUnstakeRelease TransferKind = "unstake_release" // unstaking -> available, after the cooldown
	TransferDividend       TransferKind = "dividend"        // platform fees -> stakers' available
)

// WithdrawalState is where a withdrawal is in the queue.
type WithdrawalState string

// Withdrawal states.
const (
	WithdrawalPending   WithdrawalState = "pending"
	WithdrawalCompleted WithdrawalState = "completed"
	WithdrawalRejected  WithdrawalState = "rejected"
)

// Withdrawal is a host's request to be paid out.
type Withdrawal struct {
	ID        WithdrawalID    `json:"id"`
	Account   AccountID       `json:"account"`
	Asset     Asset           `json:"asset"`
	Amount    Money           `json:"amount"`
	State     WithdrawalState `json:"state"`
	Reason    string          `json:"reason,omitempty"` // why it was rejected
	CreatedAt time.Time       `json:"created_at"`
	DecidedAt *time.Time      `json:"decided_at,omitempty"`
	DecidedBy AccountID       `json:"decided_by,omitempty"`
}

// WithdrawRequest asks to withdraw earnings in one asset; an empty Asset
// is the platform token.
type WithdrawRequest struct {
	Amount Money `json:"amount"`
	Asset  Asset `json:"asset,omitempty"`
}

// RejectRequest says why a withdrawal is rejected.
type RejectRequest struct {
	Reason string `json:"reason"`
}

// StakeRequest stakes or unstakes an amount.
type StakeRequest struct {
	Amount Money `json:"amount"`
}

// Unstake is a stake removal in its cooldown.
type Unstake struct {
	ID        string    `json:"id"`
	Account   AccountID `json:"account"`
	Amount    Money     `json:"amount"`
	At        time.Time `json:"at"`
	ReleaseAt time.Time `json:"release_at"`
	Released  bool      `json:"released"`
}

// StakeInfo is a user's stake.
type StakeInfo struct {
	Account   AccountID `json:"account"`
	Asset     Asset     `json:"asset"`
	Staked    Money     `json:"staked"`
	Unstaking Money     `json:"unstaking"` // in cooldown, earning nothing
	Unstakes  []Unstake `json:"unstakes"`  // not yet released
	// TotalStaked is everyone's stake, for the share a user holds.
	TotalStaked Money `json:"total_staked"`
	// Dividends is what the user has been paid in dividends.
	Dividends Money `json:"dividends"`
}

// StakeShare is one staker's part of a distribution period.
type StakeShare struct {
	Account   AccountID `json:"account"`
	StakeTime string    `json:"stake_time"` // micro-tokens x microseconds staked, in decimal (it exceeds int64)
	Payout    Money     `json:"payout"`
}

// DividendStatement is the published record of one distribution period:
// the fees that came in, what was carried over, each staker's stake-time
// and payout, and the remainder kept in the fee account for the next period.
type DividendStatement struct {
	Period         int64        `json:"period"` // index since the Unix epoch, in periods
	Start          time.Time    `json:"start"`
	End            time.Time    `json:"end"`
	Asset          Asset        `json:"asset"`
	FeesIn         Money        `json:"fees_in"`    // fees charged in [Start, End)
	CarriedIn      Money        `json:"carried_in"` // remainder of the previous statement
	Pool           Money        `json:"pool"`       // FeesIn + CarriedIn
	TotalStakeTime string       `json:"total_stake_time"`
	Shares         []StakeShare `json:"shares"`
	Paid           Money        `json:"paid"`
	CarriedOut     Money        `json:"carried_out"` // Pool - Paid, left in the fee account
	TransferSeq    int64        `json:"transfer_seq,omitempty"`
	At             time.Time    `json:"at"` // when it was distributed
}

// LedgerCheck is the result of one invariant of the ledger check.
type LedgerCheck struct {
	Name    string   `json:"name"`
	OK      bool     `json:"ok"`
	Details []string `json:"details,omitempty"` // the violations, when not OK
}

// LedgerReport is the result of `gpumarket admin ledger check`.
type LedgerReport struct {
	OK        bool          `json:"ok"`
	Transfers int64         `json:"transfers"`
	Checks    []LedgerCheck `json:"checks"`
	At        time.Time     `json:"at"`
}

// DayRevenue is what the platform took on one UTC day: the fees of the
// minutes charged that day, less the fees of refunds made that day.
type DayRevenue struct {
	Day  string `json:"day"` // YYYY-MM-DD, UTC
	Fees Money  `json:"fees"`
}

// DayEarnings is what a host earned on one UTC day.
type DayEarnings struct {
	Day        string `json:"day"` // YYYY-MM-DD, UTC
	Minutes    int64  `json:"minutes"`
	GPUMinutes int64  `json:"gpu_minutes"`
	Amount     Money  `json:"amount"`
	Pending    Money  `json:"pending"` // of Amount, still in the settlement delay
}
