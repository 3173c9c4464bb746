package market

import "time"

// This file holds the messages of the JSON APIs that are shared by the
// coordinator and its clients (agent and CLI).

// Desired is what an assignment asks the agent to do with an instance.
type Desired string

// Desired states.
const (
	DesiredRun  Desired = "run"
	DesiredStop Desired = "stop"
)

// Assignment is one instance the agent must run or stop. Generation fences
// reports: the coordinator rejects a report that carries an older one.
type Assignment struct {
	Instance     InstanceID        `json:"instance"`
	Generation   int64             `json:"generation"`
	Desired      Desired           `json:"desired"`
	GPUs         []int             `json:"gpus"`
	GPUUUIDs     []string          `json:"gpu_uuids"`
	Image        string            `json:"image,omitempty"`
	Command      []string          `json:"command"`
	Env          map[string]string `json:"env,omitempty"`
	GraceSeconds int               `json:"grace_seconds"`
	// Spot instances: the power limit and clocks to apply to each GPU
	// before start (0: leave as is), and the notice the renter asked for.
	PowerLimitW   int      `json:"power_limit_w,omitempty"`
	Clocks        Clocks   `json:"clocks"`
	GPUClocks     []Clocks `json:"gpu_clocks,omitempty"` // per GPU, in the order of GPUUUIDs, instead of Clocks
	NoticeSeconds int      `json:"notice_seconds,omitempty"`
	// Container instances: ports to publish, SSH keys to inject, limits.
	Ports   []string `json:"ports,omitempty"`
	SSHKeys []string `json:"ssh_keys,omitempty"`
	Limits  Limits   `json:"limits,omitzero"`
}

// DesiredState is the full set of assignments of a machine. The agent
// reconciles against it on every poll, whether or not Version changed.
type DesiredState struct {
	Machine     MachineID    `json:"machine"`
	Version     int64        `json:"version"`
	Assignments []Assignment `json:"assignments"`
	// LostAfterSeconds is the coordinator's lost-host deadline. The agent
	// stops its workloads when it has had no contact for a shorter time.
	LostAfterSeconds int `json:"lost_after_seconds"`
	// Challenge, when set, is a verification check the agent must answer
	// before its deadline (see ChallengeCommit).
	Challenge *Challenge `json:"challenge,omitempty"`
}

// ObservedState is what the agent's runner sees of an instance.
type ObservedState string

// Observed states.
const (
	ObservedStarting ObservedState = "starting"
	ObservedRunning  ObservedState = "running"
	ObservedExited   ObservedState = "exited"  // ended on its own
	ObservedStopped  ObservedState = "stopped" // ended because it was asked to
	ObservedFailed   ObservedState = "failed"  // could not start
)

// InstanceReport is the agent's view of one instance.
type InstanceReport struct {
	Instance   InstanceID    `json:"instance"`
	Generation int64         `json:"generation"`
	State      ObservedState `json:"state"`
	ExitCode   *int          `json:"exit_code,omitempty"`
	Message    string        `json:"message,omitempty"`
	Ports      []PortBinding `json:"ports,omitempty"` // where published ports are reachable
	// Queue is the queue length the workload last reported to the agent
	// (GPUMARKET_QUEUE_URL), for deployments that scale on it.
	Queue *int64 `json:"queue,omitempty"`
	// Healthy is the result of the replica's latest health check (see
	// HealthCheck), when it has one.
	Healthy *bool `json:"healthy,omitempty"`
}

// Report is sent by the agent after each reconcile and as its heartbeat.
type Report struct {
	Instances []InstanceReport `json:"instances"`
	Logs      []LogChunk       `json:"logs,omitempty"` // Seq is ignored; the coordinator numbers chunks
	GPUs      []GPUSample      `json:"gpus,omitempty"` // latest per-GPU metrics, one sample per GPU
}

// GPUSample is one reading of one GPU's metrics, taken by the agent. Metric
// values are measurements, not money, so they are floats.
type GPUSample struct {
	Index       int       `json:"index"`
	UUID        string    `json:"uuid,omitempty"`
	At          time.Time `json:"at"`
	UtilPct     float64   `json:"util_pct"`      // 0..100
	MemUsedMiB  int64     `json:"mem_used_mib"`  // VRAM in use
	PowerW      float64   `json:"power_w"`       // draw
	TempC       float64   `json:"temp_c"`        // core temperature
	CoreMHz     int       `json:"core_mhz"`      // current graphics clock
	MemMHz      int       `json:"mem_mhz"`       // current memory clock
	PowerLimitW int       `json:"power_limit_w"` // enforced limit
}

// Rejection says why one instance report was refused.
type Rejection struct {
	Instance InstanceID `json:"instance"`
	Reason   string     `json:"reason"`
}

// ReportResult answers a Report. Rejected reports must not be retried with
// the same generation; the agent should poll for the desired state.
type ReportResult struct {
	Rejected []Rejection `json:"rejected,omitempty"`
}

// SignupRequest creates an account.
type SignupRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Roles    []Role `json:"roles"`
}

// LoginRequest exchanges a password for a new API key.
type LoginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	KeyName  string `json:"key_name,omitempty"`
}

// NewAPIKey is returned once when a key is created; Secret is not stored.
type NewAPIKey struct {
	APIKey
	Secret string `json:"secret"`
}

// LoginResult answers a login.
type LoginResult struct {
	Account Account   `json:"account"`
	Key     NewAPIKey `json:"key"`
}

// CreateKeyRequest creates an API key for the caller.
type CreateKeyRequest struct {
	Name string `json:"name"`
}

// MachineUpdate changes a host's settings of a machine. Nil fields are left
// as they are.
type MachineUpdate struct {
	PricePerGPUHour *Money  `json:"price_per_gpu_hour,omitempty"`
	Region          *string `json:"region,omitempty"`
	DataCenter      *string `json:"datacenter,omitempty"`
	// Spot terms: the lowest price per GPU-day a bid may offer, the host's
	// energy cost per kWh, and the highest power limit per GPU a bid may ask.
	SpotReservePerGPUDay *Money `json:"spot_reserve_per_gpu_day,omitempty"`
	EnergyPerKWh         *Money `json:"energy_per_kwh,omitempty"`
	MaxPowerW            *int   `json:"max_power_w,omitempty"`
	// Clock settings a spot bid may ask for, published to bidders; a zero
	// range allows none.
	CoreLockMHz   *ClockRange `json:"core_lock_mhz,omitempty"`
	MemLockMHz    *ClockRange `json:"mem_lock_mhz,omitempty"`
	CoreOffsetMHz *ClockRange `json:"core_offset_mhz,omitempty"`
	MemOffsetMHz  *ClockRange `json:"mem_offset_mhz,omitempty"`
	// Pool offers the machine to an open capacity pool; "none" takes it
	// out of its (open) pool.
	Pool *string `json:"pool,omitempty"`
}

// OfferFilter is an offer search: a query in the offer query language
// (see `gpumarket offer search --help`) plus shorthand filters that are
// added to it. Zero fields do not filter.
type OfferFilter struct {
	Query       string `json:"q,omitempty"`              // e.g. "gpu_name=RTX_4090 num_gpus>=2 region in [eu,us]"
	Sort        string `json:"sort,omitempty"`           // score (default), price, -reliability, ...
	Limit       int    `json:"limit,omitempty"`          // at most this many offers (default 50)
	Region      string `json:"region,omitempty"`         // the renter's region, for latency ranking
	GPUName     string `json:"gpu_name,omitempty"`       // shorthand for gpu_name=...
	MinGPUs     int    `json:"num_gpus,omitempty"`       // shorthand for num_gpus>=...
	MaxPrice    Money  `json:"max_price,omitempty"`      // shorthand for price_per_gpu_hour<=...
	MinGPURAMGB int64  `json:"min_gpu_ram_gb,omitempty"` // shorthand for gpu_ram>=...
}

// Offer is a listed machine with free GPUs, as a renter sees it.
type Offer struct {
	Machine         MachineID `json:"machine"`
	GPUModel        string    `json:"gpu_model"`
	GPURAMMiB       int64     `json:"gpu_ram_mib"`
	FreeGPUs        int       `json:"free_gpus"`
	TotalGPUs       int       `json:"total_gpus"`
	PricePerGPUHour Money     `json:"price_per_gpu_hour"`
	CPUCores        int       `json:"cpu_cores"`
	RAMMiB          int64     `json:"ram_mib"`
	DiskGiB         int64     `json:"disk_gib"`
	Region          string    `json:"region,omitempty"`
	Runner          string    `json:"runner"`
}

// CreateInstanceRequest rents GPUs of a machine on demand. With Auto set
// instead of Machine, the coordinator picks the best-ranked offer that
// matches the query and has GPUs free.
type CreateInstanceRequest struct {
	Machine      MachineID         `json:"machine,omitempty"`
	Auto         string            `json:"auto,omitempty"`   // an offer query; "" with Machine set
	Region       string            `json:"region,omitempty"` // the renter's region, for ranking Auto offers
	GPUs         int               `json:"gpus"`
	Image        string            `json:"image,omitempty"`
	Command      []string          `json:"command"`
	Env          map[string]string `json:"env,omitempty"`
	GraceSeconds int               `json:"grace_seconds,omitempty"`
	// Container instances (machines with the docker runner): a template
	// (see market.Templates) that sets image, ports and command unless
	// given; container ports to publish ("8888/tcp"); the renter's SSH
	// public keys; resource limits, zero fields taken from the GPU share.
	Template string   `json:"template,omitempty"`
	Ports    []string `json:"ports,omitempty"`
	SSHKeys  []string `json:"ssh_keys,omitempty"`
	Limits   Limits   `json:"limits,omitzero"`
	// GPU settings the agent applies before the workload starts and
	// resets after it ends, within the machine's ranges as for a spot
	// bid: a power limit per GPU in W (0: leave it), and clocks for every
	// GPU, or in GPUClocks one entry per GPU.
	PowerLimitW int      `json:"power_limit_w,omitempty"`
	Clocks      Clocks   `json:"clocks,omitzero"`
	GPUClocks   []Clocks `json:"gpu_clocks,omitempty"`
}

// DepositRequest credits tokens to an account (admin only).
type DepositRequest struct {
	Account AccountID `json:"account,omitempty"`
	Email   string    `json:"email,omitempty"` // alternative to Account
	Amount  Money     `json:"amount"`
	Memo    string    `json:"memo,omitempty"`
	Asset   Asset     `json:"asset,omitempty"` // "" = the platform token; else a project asset
}

// Wallet is a user's balances: in the platform token, and per project
// asset the user holds (Assets).
type Wallet struct {
	Account   AccountID       `json:"account"`
	Asset     Asset           `json:"asset"`
	Available Money           `json:"available"`
	Escrow    Money           `json:"escrow"`
	Earnings  Money           `json:"earnings"`
	Assets    []AssetBalances `json:"assets,omitempty"` // project assets with a balance
}

// EarningsReport summarises what a host earned. Total is the earnings
// account's balance: Pending (credited within the settlement delay) plus
// Withdrawable. Withdrawing is queued for payout. The top-level amounts
// are in the platform token (Asset); Assets has the same per asset, the
// platform token first. Machines and Days break down the billed minutes,
// which are paid in the platform token.
type EarningsReport struct {
	Account         AccountID         `json:"account"`
	Asset           Asset             `json:"asset"`
	Total           Money             `json:"total"`
	Pending         Money             `json:"pending"`
	Withdrawable    Money             `json:"withdrawable"`
	Withdrawing     Money             `json:"withdrawing"`
	SettlementDelay string            `json:"settlement_delay"`
	Assets          []AssetEarnings   `json:"assets"`
	Machines        []MachineEarnings `json:"machines"`
	Days            []DayEarnings     `json:"days"`
}

// AssetEarnings is a host's earnings in one asset: the platform token
// (billed minutes) or a project token (payments).
type AssetEarnings struct {
	Asset        Asset `json:"asset"`
	Total        Money `json:"total"`
	Pending      Money `json:"pending"`
	Withdrawable Money `json:"withdrawable"`
	Withdrawing  Money `json:"withdrawing"`
}

// MachineEarnings is a host's earnings from one machine. Minutes counts
// billed instance-minutes; GPUMinutes weighs each by the instance's GPUs.
type MachineEarnings struct {
	Machine    MachineID `json:"machine"`
	Minutes    int64     `json:"minutes"`
	GPUMinutes int64     `json:"gpu_minutes"`
	Amount     Money     `json:"amount"`
	Pending    Money     `json:"pending"` // of Amount, still in the settlement delay
}

// HistoryEntry is one transfer as seen from one user's accounts.
type HistoryEntry struct {
	Seq      int64         `json:"seq"`
	At       time.Time     `json:"at"`
	Kind     TransferKind  `json:"kind"`
	Account  LedgerAccount `json:"account"`
	Asset    Asset         `json:"asset"`
	Amount   Money         `json:"amount"`
	Instance InstanceID    `json:"instance,omitempty"`
	Minute   int64         `json:"minute,omitempty"`
	Memo     string        `json:"memo,omitempty"`
}
