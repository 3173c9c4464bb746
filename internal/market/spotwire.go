package market

import "time"

// This file holds the spot market's API messages.

// RoundID names a stored auction round of one machine.
type RoundID string

// RoundPrefix starts every RoundID.
const RoundPrefix = "r-"

// CreateBidRequest places a spot bid.
type CreateBidRequest struct {
	Machine MachineID `json:"machine"`
	// GPUs is how many GPUs the bid wants; 0 means all of the machine's.
	GPUs           int               `json:"gpus,omitempty"`
	PricePerGPUDay Money             `json:"price_per_gpu_day"`
	PowerLimitW    int               `json:"power_limit_w"`
	Clocks                           // optional; one value for all GPUs
	GPUClocks      []Clocks          `json:"gpu_clocks,omitempty"` // optional; one entry per GPU, instead of Clocks
	Image          string            `json:"image,omitempty"`
	Command        []string          `json:"command"`
	Env            map[string]string `json:"env,omitempty"`
	Webhook        string            `json:"webhook,omitempty"`
	NoticeSeconds  int               `json:"notice_seconds,omitempty"`
	// LifetimeSeconds is how long the bid lives; 0 means DefaultBidLifetime.
	LifetimeSeconds int64 `json:"lifetime_seconds,omitempty"`
}

// BidChange changes an open bid. Nil fields are left as they are.
type BidChange struct {
	PricePerGPUDay *Money `json:"price_per_gpu_day,omitempty"`
}

// Snapshot is the public market data feed of the spot market: every
// listed, online machine with its spot terms and its book, bidders left out.
type Snapshot struct {
	At       time.Time         `json:"at"`
	Interval time.Duration     `json:"interval_ns"`
	Machines []SnapshotMachine `json:"machines"`
}

// SnapshotMachine is one machine of a Snapshot.
type SnapshotMachine struct {
	Machine   MachineID `json:"machine"`
	GPUModel  string    `json:"gpu_model"`
	TotalGPUs int       `json:"total_gpus"`
	// SpotGPUs are the GPUs not held by on-demand instances.
	SpotGPUs  int           `json:"spot_gpus"`
	Region    string        `json:"region,omitempty"`
	Terms     SpotTerms     `json:"terms"`
	MinPowerW int           `json:"min_power_w"` // lowest power limit a bid may ask
	MaxPowerW int           `json:"max_power_w"` // highest power limit a bid may ask
	Bids      []SnapshotBid `json:"bids"`
}

// SnapshotBid is a bid in the book without its bidder or workload.
type SnapshotBid struct {
	Seq            int64    `json:"seq"`
	GPUs           int      `json:"gpus"`
	PricePerGPUDay Money    `json:"price_per_gpu_day"`
	PowerLimitW    int      `json:"power_limit_w"`
	Clocks                  // as bid
	State          BidState `json:"state"`
}
