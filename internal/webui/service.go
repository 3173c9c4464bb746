package webui

import (
	"context"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// Service is what the pages need of the coordinator; *coord.Service
// implements it. Every method that takes a caller checks what that caller
// may see and change, so the pages never decide access themselves.
type Service interface {
	Signup(ctx context.Context, req market.SignupRequest) (market.Account, error)
	Login(ctx context.Context, req market.LoginRequest) (market.LoginResult, error)
	Authenticate(ctx context.Context, secret string) (market.Account, error)
	Keys(ctx context.Context, caller market.Account) ([]market.APIKey, error)
	RevokeKey(ctx context.Context, caller market.Account, id market.APIKeyID) error

	Offers(ctx context.Context, f market.OfferFilter) ([]market.Offer, error)
	ExplainOffers(ctx context.Context, f market.OfferFilter) (match.Explanation, error)
	Machine(ctx context.Context, caller market.Account, id market.MachineID) (market.Machine, error)

	// CreateInstanceOnce creates an instance under an idempotency key: a
	// repeat with the key and the same request returns the first result.
	CreateInstanceOnce(ctx context.Context, caller market.Account, key string, req market.CreateInstanceRequest) (market.Instance, error)
	Instances(ctx context.Context, caller market.Account, all bool) ([]market.Instance, error)
	Instance(ctx context.Context, caller market.Account, id market.InstanceID) (market.Instance, error)
	StopInstance(ctx context.Context, caller market.Account, id market.InstanceID) (market.Instance, error)
	Logs(ctx context.Context, caller market.Account, id market.InstanceID, after int64, limit int, wait time.Duration) ([]market.LogChunk, error)
	Events(ctx context.Context, caller market.Account, f coord.EventFilter) ([]market.Event, error)
	InstanceMetrics(ctx context.Context, caller market.Account, id market.InstanceID, window time.Duration) (market.MetricsReport, error)
	MachineMetrics(ctx context.Context, caller market.Account, id market.MachineID, window time.Duration) (market.MetricsReport, error)

	Wallet(ctx context.Context, caller market.Account) (market.Wallet, error)
	History(ctx context.Context, caller market.Account, before int64, limit int) ([]market.HistoryEntry, error)
	Faucet(ctx context.Context, caller market.Account) (market.Wallet, error)

	Machines(ctx context.Context, caller market.Account, all bool) ([]market.Machine, error)
	UpdateMachine(ctx context.Context, caller market.Account, id market.MachineID, u market.MachineUpdate) (market.Machine, error)
	SetListed(ctx context.Context, caller market.Account, id market.MachineID, listed bool) (market.Machine, error)
	Earnings(ctx context.Context, caller market.Account) (market.EarningsReport, error)

	CreateKey(ctx context.Context, caller market.Account, name string) (market.NewAPIKey, error)

	Bids(ctx context.Context, caller market.Account) ([]market.Bid, error)
	Snapshot(ctx context.Context) (market.Snapshot, error)
	Rounds(ctx context.Context, f coord.RoundFilter) ([]coord.AuctionRound, error)

	Withdraw(ctx context.Context, caller market.Account, key string, req market.WithdrawRequest) (market.Withdrawal, error)
	Withdrawals(ctx context.Context, caller market.Account, all bool, state market.WithdrawalState) ([]market.Withdrawal, error)
	CompleteWithdrawal(ctx context.Context, caller market.Account, key string, id market.WithdrawalID) (market.Withdrawal, error)
	RejectWithdrawal(ctx context.Context, caller market.Account, key string, id market.WithdrawalID, reason string) (market.Withdrawal, error)
	Stake(ctx context.Context, caller market.Account) (market.StakeInfo, error)
	AddStake(ctx context.Context, caller market.Account, key string, req market.StakeRequest) (market.StakeInfo, error)
	RemoveStake(ctx context.Context, caller market.Account, key string, req market.StakeRequest) (market.Unstake, error)
	Statements(ctx context.Context, period int64, limit int) ([]market.DividendStatement, error)
	LedgerCheck(ctx context.Context, caller market.Account) (market.LedgerReport, error)
	Revenue(ctx context.Context, caller market.Account, days int) ([]market.DayRevenue, error)
	Fleet(ctx context.Context, caller market.Account) ([]market.Machine, error)

	Statement(ctx context.Context, caller market.Account, month string) (market.WalletStatement, error)
	MachineVerification(ctx context.Context, caller market.Account, id market.MachineID) (market.MachineVerification, error)
}
