package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Withdrawals, staking, dividends and the ledger check. Every call that
// moves money takes an idempotency key: sending it again with the same key
// (a retry) has the effect of sending it once.

func idem(op, key string) (http.Header, error) {
	if key == "" {
		return nil, market.Errorf(op, market.Invalid, "an idempotency key is required so that a retried %s happens once", op)
	}
	return http.Header{"Idempotency-Key": {key}}, nil
}

// Withdraw queues a withdrawal of settled earnings.
func (c *Client) Withdraw(ctx context.Context, req market.WithdrawRequest, idempotencyKey string) (market.Withdrawal, error) {
	var out market.Withdrawal
	h, err := idem("withdraw", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/wallet/withdraw", body: req, out: &out, header: h})
	return out, err
}

// Withdrawals lists the caller's withdrawals; with all, an admin sees
// everyone's. state filters when not empty.
func (c *Client) Withdrawals(ctx context.Context, all bool, state market.WithdrawalState) ([]market.Withdrawal, error) {
	q := url.Values{}
	if all {
		q.Set("all", "1")
	}
	if state != "" {
		q.Set("state", string(state))
	}
	out := []market.Withdrawal{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/withdrawals", query: q, out: &out})
	return nonNil(out), err
}

// CompleteWithdrawal pays out a pending withdrawal (admins).
func (c *Client) CompleteWithdrawal(ctx context.Context, id market.WithdrawalID, idempotencyKey string) (market.Withdrawal, error) {
	var out market.Withdrawal
	h, err := idem("complete withdrawal", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/admin/withdrawals/" + esc(string(id)) + "/complete", out: &out, header: h})
	return out, err
}

// RejectWithdrawal rejects a pending withdrawal and returns the money (admins).
func (c *Client) RejectWithdrawal(ctx context.Context, id market.WithdrawalID, reason, idempotencyKey string) (market.Withdrawal, error) {
	var out market.Withdrawal
	h, err := idem("reject withdrawal", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/admin/withdrawals/" + esc(string(id)) + "/reject",
		body: market.RejectRequest{Reason: reason}, out: &out, header: h})
	return out, err
}

// LedgerCheck runs every ledger invariant check (admins).
func (c *Client) LedgerCheck(ctx context.Context) (market.LedgerReport, error) {
	var out market.LedgerReport
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/admin/ledger/check", out: &out})
	return out, err
}

// Stake returns the caller's stake.
func (c *Client) Stake(ctx context.Context) (market.StakeInfo, error) {
	var out market.StakeInfo
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/stake", out: &out})
	return out, err
}

// AddStake stakes tokens from the caller's available balance.
func (c *Client) AddStake(ctx context.Context, amount market.Money, idempotencyKey string) (market.StakeInfo, error) {
	var out market.StakeInfo
	h, err := idem("stake", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/stake/add", body: market.StakeRequest{Amount: amount}, out: &out, header: h})
	return out, err
}

// RemoveStake unstakes tokens; they return after the cooldown.
func (c *Client) RemoveStake(ctx context.Context, amount market.Money, idempotencyKey string) (market.Unstake, error) {
	var out market.Unstake
	h, err := idem("unstake", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/stake/remove", body: market.StakeRequest{Amount: amount}, out: &out, header: h})
	return out, err
}

// Statements returns dividend statements, newest first: one period when
// period >= 0, else the latest limit (limit <= 0: the server's default).
func (c *Client) Statements(ctx context.Context, period int64, limit int) ([]market.DividendStatement, error) {
	q := url.Values{}
	if period >= 0 {
		q.Set("period", strconv.FormatInt(period, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	out := []market.DividendStatement{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/stake/statements", query: q, out: &out})
	return nonNil(out), err
}

// Refund refunds a renter for minutes of an instance (admins).
func (c *Client) Refund(ctx context.Context, req market.RefundRequest, idempotencyKey string) (market.Refund, error) {
	var out market.Refund
	h, err := idem("refund", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/admin/refunds", body: req, out: &out, header: h})
	return out, err
}

// Refunds lists the caller's refunds; with all, an admin sees everyone's.
// instance filters when not empty.
func (c *Client) Refunds(ctx context.Context, all bool, instance market.InstanceID) ([]market.Refund, error) {
	q := url.Values{}
	if all {
		q.Set("all", "1")
	}
	if instance != "" {
		q.Set("instance", string(instance))
	}
	out := []market.Refund{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/refunds", query: q, out: &out})
	return nonNil(out), err
}

// Statement returns the caller's statement of month (YYYY-MM, UTC).
func (c *Client) Statement(ctx context.Context, month string) (market.WalletStatement, error) {
	var out market.WalletStatement
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/wallet/statement", query: url.Values{"month": {month}}, out: &out})
	return out, err
}

// CreateAsset creates a project asset (admins).
func (c *Client) CreateAsset(ctx context.Context, req market.CreateAssetRequest) (market.AssetInfo, error) {
	var out market.AssetInfo
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/admin/assets", body: req, out: &out})
	return out, err
}

// Assets lists the platform token and the project assets.
func (c *Client) Assets(ctx context.Context) ([]market.AssetInfo, error) {
	out := []market.AssetInfo{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/assets", out: &out})
	return nonNil(out), err
}

// PayHost pays a host in an asset from the caller's available balance.
func (c *Client) PayHost(ctx context.Context, req market.PayRequest, idempotencyKey string) (market.Transfer, error) {
	var out market.Transfer
	h, err := idem("pay host", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/wallet/pay", body: req, out: &out, header: h})
	return out, err
}

// SpendStatus returns the caller's spend limits and where it stands.
func (c *Client) SpendStatus(ctx context.Context) (market.SpendStatus, error) {
	var out market.SpendStatus
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/wallet/limits", out: &out})
	return out, err
}

// SetSpendLimits sets the caller's spend limits (zero turns one off).
func (c *Client) SetSpendLimits(ctx context.Context, l market.SpendLimits) (market.SpendStatus, error) {
	var out market.SpendStatus
	err := c.do(ctx, call{method: http.MethodPut, path: "/api/v1/wallet/limits", body: l, out: &out})
	return out, err
}
