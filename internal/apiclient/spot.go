package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Spot market.

// CreateBid places a spot bid.
func (c *Client) CreateBid(ctx context.Context, req market.CreateBidRequest) (market.Bid, error) {
	var out market.Bid
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/bids", body: req, out: &out})
	return out, err
}

// Bids lists the caller's bids.
func (c *Client) Bids(ctx context.Context) ([]market.Bid, error) {
	out := []market.Bid{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/bids", out: &out})
	return nonNil(out), err
}

// Bid returns one of the caller's bids.
func (c *Client) Bid(ctx context.Context, id market.BidID) (market.Bid, error) {
	var out market.Bid
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/bids/" + esc(string(id)), out: &out})
	return out, err
}

// ChangeBid changes an open bid.
func (c *Client) ChangeBid(ctx context.Context, id market.BidID, ch market.BidChange) (market.Bid, error) {
	var out market.Bid
	err := c.do(ctx, call{method: http.MethodPatch, path: "/api/v1/bids/" + esc(string(id)), body: ch, out: &out})
	return out, err
}

// CancelBid cancels one of the caller's bids.
func (c *Client) CancelBid(ctx context.Context, id market.BidID) (market.Bid, error) {
	var out market.Bid
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/bids/" + esc(string(id)) + "/cancel", out: &out})
	return out, err
}

// Snapshot returns the spot market's public data feed.
func (c *Client) Snapshot(ctx context.Context) (market.Snapshot, error) {
	var out market.Snapshot
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/market/snapshot", out: &out})
	return out, err
}

// RoundQuery selects stored auction rounds. Zero fields do not filter.
type RoundQuery struct {
	Machine market.MachineID
	Before  int64
	Limit   int
}

// Rounds lists stored clearing rounds, newest first.
func (c *Client) Rounds(ctx context.Context, q RoundQuery) ([]coord.AuctionRound, error) {
	v := url.Values{}
	if q.Machine != "" {
		v.Set("machine", string(q.Machine))
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatInt(q.Before, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	out := []coord.AuctionRound{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/auction/rounds", query: v, out: &out})
	return nonNil(out), err
}

// Round returns one stored clearing round.
func (c *Client) Round(ctx context.Context, id market.RoundID) (coord.AuctionRound, error) {
	var out coord.AuctionRound
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/auction/rounds/" + esc(string(id)), out: &out})
	return out, err
}

// ReplayRound recomputes a stored round and says whether it matches.
func (c *Client) ReplayRound(ctx context.Context, id market.RoundID) (coord.RoundReplay, error) {
	var out coord.RoundReplay
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/auction/rounds/" + esc(string(id)) + "/replay", out: &out})
	return out, err
}
