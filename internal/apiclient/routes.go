package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// Accounts and keys.

// Signup creates an account. It needs no credential.
func (c *Client) Signup(ctx context.Context, req market.SignupRequest) (market.Account, error) {
	var out market.Account
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/signup", body: req, out: &out})
	return out, err
}

// Login exchanges an email and password for a new API key.
func (c *Client) Login(ctx context.Context, req market.LoginRequest) (market.LoginResult, error) {
	var out market.LoginResult
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/login", body: req, out: &out})
	return out, err
}

// Me returns the account the token belongs to.
func (c *Client) Me(ctx context.Context) (market.Account, error) {
	var out market.Account
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/me", out: &out})
	return out, err
}

// Keys lists the caller's API keys.
func (c *Client) Keys(ctx context.Context) ([]market.APIKey, error) {
	out := []market.APIKey{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/keys", out: &out})
	return nonNil(out), err
}

// CreateKey creates an API key; the secret is in the result only.
func (c *Client) CreateKey(ctx context.Context, req market.CreateKeyRequest) (market.NewAPIKey, error) {
	var out market.NewAPIKey
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/keys", body: req, out: &out})
	return out, err
}

// RevokeKey revokes one of the caller's API keys.
func (c *Client) RevokeKey(ctx context.Context, id market.APIKeyID) error {
	return c.do(ctx, call{method: http.MethodDelete, path: "/api/v1/keys/" + esc(string(id))})
}

// Machines.

// Machines lists the caller's machines; with all, an admin sees every machine.
func (c *Client) Machines(ctx context.Context, all bool) ([]market.Machine, error) {
	var q url.Values
	if all {
		q = url.Values{"all": {"1"}}
	}
	out := []market.Machine{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/machines", query: q, out: &out})
	return nonNil(out), err
}

// Machine returns one machine.
func (c *Client) Machine(ctx context.Context, id market.MachineID) (market.Machine, error) {
	var out market.Machine
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/machines/" + esc(string(id)), out: &out})
	return out, err
}

// UpdateMachine changes the host settings of a machine.
func (c *Client) UpdateMachine(ctx context.Context, id market.MachineID, upd market.MachineUpdate) (market.Machine, error) {
	var out market.Machine
	err := c.do(ctx, call{method: http.MethodPatch, path: "/api/v1/machines/" + esc(string(id)), body: upd, out: &out})
	return out, err
}

// ListMachine offers a machine for rent.
func (c *Client) ListMachine(ctx context.Context, id market.MachineID) (market.Machine, error) {
	var out market.Machine
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/machines/" + esc(string(id)) + "/list", out: &out})
	return out, err
}

// UnlistMachine takes a machine off the market; running instances go on.
func (c *Client) UnlistMachine(ctx context.Context, id market.MachineID) (market.Machine, error) {
	var out market.Machine
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/machines/" + esc(string(id)) + "/unlist", out: &out})
	return out, err
}

// Offers.

// Offers searches listed machines with free GPUs. Zero filter fields do not
// filter.
func (c *Client) Offers(ctx context.Context, f market.OfferFilter) ([]market.Offer, error) {
	out := []market.Offer{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/offers", query: offerQuery(f), out: &out})
	return nonNil(out), err
}

// ExplainOffers says how many machines each filter of a search removed.
func (c *Client) ExplainOffers(ctx context.Context, f market.OfferFilter) (match.Explanation, error) {
	var out match.Explanation
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/offers/explain", query: offerQuery(f), out: &out})
	return out, err
}

func offerQuery(f market.OfferFilter) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"q": f.Query, "sort": f.Sort, "region": f.Region, "gpu_name": f.GPUName} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.MinGPUs > 0 {
		q.Set("num_gpus", strconv.Itoa(f.MinGPUs))
	}
	if f.MaxPrice > 0 {
		q.Set("max_price", f.MaxPrice.String())
	}
	if f.MinGPURAMGB > 0 {
		q.Set("min_gpu_ram_gb", strconv.FormatInt(f.MinGPURAMGB, 10))
	}
	return q
}

// Instances.

// CreateInstance rents GPUs of a machine on demand. It holds money in
// escrow, so it sends a random Idempotency-Key: the client's own retries
// and failover to another replica make one instance. To retry across
// calls (after a crash, say), use CreateInstanceOnce with a key kept.
func (c *Client) CreateInstance(ctx context.Context, req market.CreateInstanceRequest) (market.Instance, error) {
	return c.CreateInstanceOnce(ctx, req, "create-"+market.RandomToken(16))
}

// CreateInstanceOnce is CreateInstance with the caller's idempotency key:
// sending it again with the same key and request returns the first
// answer and makes no second instance.
func (c *Client) CreateInstanceOnce(ctx context.Context, req market.CreateInstanceRequest, idempotencyKey string) (market.Instance, error) {
	var out market.Instance
	h, err := idem("create instance", idempotencyKey)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, call{method: http.MethodPost, path: "/api/v1/instances", body: req, out: &out, header: h})
	return out, err
}

// Instances lists the caller's instances.
func (c *Client) Instances(ctx context.Context) ([]market.Instance, error) {
	out := []market.Instance{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/instances", out: &out})
	return nonNil(out), err
}

// Instance returns one instance.
func (c *Client) Instance(ctx context.Context, id market.InstanceID) (market.Instance, error) {
	var out market.Instance
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/instances/" + esc(string(id)), out: &out})
	return out, err
}

// InstanceMetrics returns the recent GPU metrics of an instance over
// window (0: the coordinator's default of 1h).
func (c *Client) InstanceMetrics(ctx context.Context, id market.InstanceID, window time.Duration) (market.MetricsReport, error) {
	var out market.MetricsReport
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/instances/" + esc(string(id)) + "/metrics", query: windowQuery(window), out: &out})
	return out, err
}

// MachineMetrics returns the recent GPU metrics of a machine over window
// (0: the coordinator's default of 1h).
func (c *Client) MachineMetrics(ctx context.Context, id market.MachineID, window time.Duration) (market.MetricsReport, error) {
	var out market.MetricsReport
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/machines/" + esc(string(id)) + "/metrics", query: windowQuery(window), out: &out})
	return out, err
}

func windowQuery(window time.Duration) url.Values {
	if window <= 0 {
		return nil
	}
	return url.Values{"window": {window.String()}}
}

// StopInstance asks for an instance to stop and returns it as it is now.
func (c *Client) StopInstance(ctx context.Context, id market.InstanceID) (market.Instance, error) {
	var out market.Instance
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/instances/" + esc(string(id)) + "/stop", out: &out})
	return out, err
}

// Logs returns up to limit log chunks of an instance with Seq > after. With
// wait > 0 it is a long poll: the coordinator answers as soon as such chunks
// exist, or with none after wait. limit <= 0 leaves the limit to the server.
// Cancel ctx to stop waiting.
func (c *Client) Logs(ctx context.Context, id market.InstanceID, after int64, limit int, wait time.Duration) ([]market.LogChunk, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if s := waitSeconds(wait); s > 0 {
		q.Set("wait", strconv.FormatInt(s, 10))
	}
	out := []market.LogChunk{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/instances/" + esc(string(id)) + "/logs",
		query: q, out: &out, wait: wait})
	return nonNil(out), err
}

// EventQuery narrows an event listing. Zero fields do not filter.
type EventQuery struct {
	Instance market.InstanceID
	Machine  market.MachineID
	Limit    int
}

// Events lists events the caller may see.
func (c *Client) Events(ctx context.Context, f EventQuery) ([]market.Event, error) {
	q := url.Values{}
	if f.Instance != "" {
		q.Set("instance", string(f.Instance))
	}
	if f.Machine != "" {
		q.Set("machine", string(f.Machine))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	out := []market.Event{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/events", query: q, out: &out})
	return nonNil(out), err
}

// Money.

// Wallet returns the caller's balances.
func (c *Client) Wallet(ctx context.Context) (market.Wallet, error) {
	var out market.Wallet
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/wallet", out: &out})
	return out, err
}

// History returns the caller's transfers, newest first, with Seq < before
// (before <= 0: from the newest). limit <= 0 leaves the limit to the server.
func (c *Client) History(ctx context.Context, before int64, limit int) ([]market.HistoryEntry, error) {
	q := url.Values{}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	out := []market.HistoryEntry{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/wallet/history", query: q, out: &out})
	return nonNil(out), err
}

// Deposit credits tokens to an account (admin only). The idempotency key
// makes a retried deposit happen once; it must not be empty.
func (c *Client) Deposit(ctx context.Context, req market.DepositRequest, idempotencyKey string) (market.Transfer, error) {
	if idempotencyKey == "" {
		return market.Transfer{}, market.Errorf("deposit", market.Invalid, "an idempotency key is required so that a retried deposit is made once")
	}
	var out market.Transfer
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/wallet/deposit", body: req, out: &out,
		header: http.Header{"Idempotency-Key": {idempotencyKey}}})
	return out, err
}

// Faucet credits demo tokens to the caller (dev mode only).
func (c *Client) Faucet(ctx context.Context) (market.Wallet, error) {
	var out market.Wallet
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/wallet/faucet", out: &out})
	return out, err
}

// Earnings returns what the caller earned as a host.
func (c *Client) Earnings(ctx context.Context) (market.EarningsReport, error) {
	var out market.EarningsReport
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/earnings", out: &out})
	if out.Machines == nil {
		out.Machines = []market.MachineEarnings{}
	}
	return out, err
}

// Agent API.

// Register registers (or re-registers) the agent's machine.
func (c *Client) Register(ctx context.Context, hw market.Hardware) (market.Machine, error) {
	var out market.Machine
	err := c.do(ctx, call{method: http.MethodPost, path: "/agent/v1/register", body: hw, out: &out})
	return out, err
}

// Desired returns the machine's desired state. With wait > 0 it is a long
// poll that answers as soon as the version is newer than sinceVersion, or
// with the current state after wait. Cancel ctx to stop waiting.
func (c *Client) Desired(ctx context.Context, machineID market.MachineID, sinceVersion int64, wait time.Duration) (market.DesiredState, error) {
	q := url.Values{"version": {strconv.FormatInt(sinceVersion, 10)}}
	if s := waitSeconds(wait); s > 0 {
		q.Set("wait", strconv.FormatInt(s, 10))
	}
	var out market.DesiredState
	err := c.do(ctx, call{method: http.MethodGet, path: "/agent/v1/machines/" + esc(string(machineID)) + "/desired",
		query: q, out: &out, wait: wait})
	return out, err
}

// Report sends the agent's observed state, logs and heartbeat.
func (c *Client) Report(ctx context.Context, machineID market.MachineID, r market.Report) (market.ReportResult, error) {
	var out market.ReportResult
	err := c.do(ctx, call{method: http.MethodPost, path: "/agent/v1/machines/" + esc(string(machineID)) + "/report",
		body: r, out: &out})
	return out, err
}

// nonNil makes empty lists encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
