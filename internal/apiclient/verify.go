package apiclient

import (
	"context"
	"net/http"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Verification.

// VerifyMachine asks for a verification check of a machine now, or
// returns the one pending.
func (c *Client) VerifyMachine(ctx context.Context, id market.MachineID) (market.Check, error) {
	var out market.Check
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/machines/" + esc(string(id)) + "/verify", out: &out})
	return out, err
}

// MachineVerification returns a machine's checks and reliability terms.
func (c *Client) MachineVerification(ctx context.Context, id market.MachineID) (market.MachineVerification, error) {
	var out market.MachineVerification
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/machines/" + esc(string(id)) + "/verification", out: &out})
	return out, err
}

// SetBond sets a machine's bond per GPU.
func (c *Client) SetBond(ctx context.Context, id market.MachineID, req market.BondRequest) (market.Bond, error) {
	var out market.Bond
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/machines/" + esc(string(id)) + "/bond", body: req, out: &out})
	return out, err
}

// CommitChallenge sends the agent's Merkle roots for a check and returns
// the tiles to prove.
func (c *Client) CommitChallenge(ctx context.Context, id market.MachineID, check market.CheckID, cm market.ChallengeCommit) (market.ChallengeSamples, error) {
	var out market.ChallengeSamples
	err := c.do(ctx, call{method: http.MethodPost, path: "/agent/v1/machines/" + esc(string(id)) + "/checks/" + esc(string(check)) + "/commit", body: cm, out: &out})
	return out, err
}

// ProveChallenge sends the proofs of the asked tiles and returns the
// finished check.
func (c *Client) ProveChallenge(ctx context.Context, id market.MachineID, check market.CheckID, pr market.ChallengeProofs) (market.Check, error) {
	var out market.Check
	err := c.do(ctx, call{method: http.MethodPost, path: "/agent/v1/machines/" + esc(string(id)) + "/checks/" + esc(string(check)) + "/proofs", body: pr, out: &out})
	return out, err
}
