package market

import "time"

// BidID names a spot bid.
type BidID string

// BidPrefix starts every BidID.
const BidPrefix = "b-"

// BidState is the lifecycle state of a spot bid.
type BidState string

// Bid states. Active, Winning and Outbid bids are in the book and take part
// in every clearing round; Cancelled and Expired are terminal.
const (
	BidActive    BidState = "active"    // in the book, has not won yet
	BidWinning   BidState = "winning"   // won the last round; its instance runs
	BidOutbid    BidState = "outbid"    // won before, lost since; still in the book
	BidCancelled BidState = "cancelled" // withdrawn by the bidder
	BidExpired   BidState = "expired"   // its lifetime ended
)

// Open reports whether a bid in state s is in the book.
func (s BidState) Open() bool {
	return s == BidActive || s == BidWinning || s == BidOutbid
}

// DefaultBidLifetime is how long a bid lives when the bidder does not say.
const DefaultBidLifetime = 20 * 24 * time.Hour

// Clocks are a bid's optional clock settings, in MHz. Zero means "not set":
// the card keeps its default (a lock of 0 MHz or an offset of 0 MHz would
// mean the same). One value applies to every GPU the bid gets, unless the
// bid or instance gives GPUClocks, one entry per GPU (GPUSettings).
type Clocks struct {
	CoreLockMHz   int `json:"core_lock_mhz,omitempty"`
	MemLockMHz    int `json:"mem_lock_mhz,omitempty"`
	CoreOffsetMHz int `json:"core_offset_mhz,omitempty"` // may be negative
	MemOffsetMHz  int `json:"mem_offset_mhz,omitempty"`  // may be negative
}

// Bid is a renter's standing offer for GPUs of one machine's spot capacity.
// It pays as bid, per minute, while it wins.
type Bid struct {
	ID      BidID     `json:"id"`
	Bidder  AccountID `json:"bidder"`
	Machine MachineID `json:"machine"`
	GPUs    int       `json:"gpus"`
	// PricePerGPUDay is what the bidder pays per GPU per 24 hours; the whole
	// bid costs GPUs times this.
	PricePerGPUDay Money `json:"price_per_gpu_day"`
	// PowerLimitW is the power limit applied to each of the bid's GPUs.
	PowerLimitW   int               `json:"power_limit_w"`
	Clocks                          // optional; one value for all GPUs
	GPUClocks     []Clocks          `json:"gpu_clocks,omitempty"` // optional; one entry per GPU, instead of Clocks
	Image         string            `json:"image,omitempty"`
	Command       []string          `json:"command,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Webhook       string            `json:"webhook,omitempty"`        // told before preemption
	NoticeSeconds int               `json:"notice_seconds,omitempty"` // wanted notice before SIGTERM
	State         BidState          `json:"state"`
	CreatedAt     time.Time         `json:"created_at"`
	ExpiresAt     time.Time         `json:"expires_at"` // zero: never
	// Seq orders the book: of two otherwise tied bids the lower Seq wins.
	// Assigned by the store, unique.
	Seq int64 `json:"seq"`
	// Instance is the spot instance of the bid's current or last win.
	Instance InstanceID `json:"instance,omitempty"`
}

// ClockRange is an inclusive range of MHz a host allows for one clock
// setting. The zero range allows no setting other than "not set".
type ClockRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// Contains reports whether v is "not set" (zero) or within r.
func (r ClockRange) Contains(v int) bool { return v == 0 || (r.Min <= v && v <= r.Max) }

// SpotTerms are a host's terms for a machine's spot capacity.
type SpotTerms struct {
	ReservePerGPUDay Money      `json:"reserve_per_gpu_day"` // lowest price per GPU-day accepted
	EnergyPerKWh     Money      `json:"energy_per_kwh"`      // the host's energy cost
	MaxPowerW        int        `json:"max_power_w"`         // highest power limit per GPU allowed
	CoreLockMHz      ClockRange `json:"core_lock_mhz"`
	MemLockMHz       ClockRange `json:"mem_lock_mhz"`
	CoreOffsetMHz    ClockRange `json:"core_offset_mhz"`
	MemOffsetMHz     ClockRange `json:"mem_offset_mhz"`
}

// GPUSettings returns the clock settings of each of n GPUs: per, when it has
// one entry per GPU, else one for every GPU.
func GPUSettings(one Clocks, per []Clocks, n int) []Clocks {
	if len(per) == n && n > 0 {
		return per
	}
	out := make([]Clocks, n)
	for i := range out {
		out[i] = one
	}
	return out
}
