package market

import "time"

// This file holds the types of machine verification: checks (a compute
// challenge plus spec and uniqueness findings), the challenge messages of
// the agent protocol, and the reliability score's terms.

// CheckID names one verification check.
type CheckID string

// CheckPrefix starts every check ID.
const CheckPrefix = "v-"

// CheckState is where a check stands.
type CheckState string

// Check states. Pending checks wait for the agent; the others are final.
const (
	CheckPending CheckState = "pending"
	CheckPassed  CheckState = "passed"
	CheckFailed  CheckState = "failed"
)

// Why a check was asked for.
const (
	CheckOnRegister = "registered" // first registration, agent restart or hardware change
	CheckRequested  = "requested"  // the host or an admin asked (machine verify)
	CheckPeriodic   = "periodic"   // at a random time, on idle GPUs
)

// Check is one verification of a machine: a compute challenge sent to some
// of its GPUs, and what came of it. Times named Real are the coordinator's
// wall clock, which challenge deadlines and timings use even when the
// billing clock runs faster (dev --speedup).
type Check struct {
	ID      CheckID    `json:"id"`
	Machine MachineID  `json:"machine"`
	Owner   AccountID  `json:"owner"`
	Cause   string     `json:"cause"` // registered, requested or periodic
	State   CheckState `json:"state"`
	// Failure says why the check failed, in words the host can act on.
	Failure   string    `json:"failure,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// IssuedAt is when the agent fetched the challenge (zero until then);
	// Deadline is when its commitment is due.
	IssuedAt    *time.Time `json:"issued_at,omitempty"`
	Deadline    *time.Time `json:"deadline,omitempty"`
	CommittedAt *time.Time `json:"committed_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	// Nonce makes the task fresh; Secret (never shown) picks the tiles the
	// agent must prove after it has committed.
	Nonce  string     `json:"nonce"`
	Secret string     `json:"-"`
	GPUs   []CheckGPU `json:"gpus"`
}

// CheckGPU is the challenge of one GPU of a check and its evidence.
type CheckGPU struct {
	Index    int    `json:"index"`
	UUID     string `json:"uuid"`
	Model    string `json:"model"`
	TileSize int    `json:"tile_size"` // each tile is a TileSize x TileSize integer matrix product
	Tiles    int    `json:"tiles"`     // how many tiles the task has
	Samples  int    `json:"samples"`   // how many tiles the agent must prove
	// Envelope is the model's accepted throughput, in multiply-adds per
	// second (fake GPUs get the CPU path's range).
	MinRate float64 `json:"min_rate"`
	MaxRate float64 `json:"max_rate"`
	// Evidence: the agent's Merkle root, the tiles asked for, the work
	// done and the rate measured from issue to commitment.
	Root        string  `json:"root,omitempty"`
	SampleTiles []int   `json:"sample_tiles,omitempty"`
	Work        int64   `json:"work"` // multiply-adds of the whole task
	ElapsedMS   int64   `json:"elapsed_ms,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	Passed      bool    `json:"passed"`
	Failure     string  `json:"failure,omitempty"`
}

// Challenge is a pending check as the agent sees it in its desired state.
type Challenge struct {
	Check    CheckID         `json:"check"`
	Protocol int             `json:"protocol"` // the challenge protocol (internal/verify.Protocol)
	Nonce    string          `json:"nonce"`
	Deadline time.Time       `json:"deadline"`
	GPUs     []ChallengeTask `json:"gpus"`
}

// ChallengeTask is one GPU's task: tiles of TileSize x TileSize products
// derived from the challenge nonce and the GPU's UUID.
type ChallengeTask struct {
	Index    int    `json:"index"`
	UUID     string `json:"uuid"`
	TileSize int    `json:"tile_size"`
	Tiles    int    `json:"tiles"`
}

// ChallengeCommit is the agent's commitment: one Merkle root per GPU.
type ChallengeCommit struct {
	Roots []GPURoot `json:"roots"`
}

// GPURoot is the hex Merkle root over one GPU's tile results.
type GPURoot struct {
	UUID string `json:"uuid"`
	Root string `json:"root"`
}

// ChallengeSamples answers a commitment: the tiles to prove, per GPU.
type ChallengeSamples struct {
	GPUs []GPUSamples `json:"gpus"`
}

// GPUSamples names the tiles of one GPU to prove.
type GPUSamples struct {
	UUID  string `json:"uuid"`
	Tiles []int  `json:"tiles"`
}

// ChallengeProofs carries the asked tiles with their Merkle paths.
type ChallengeProofs struct {
	GPUs []GPUProofs `json:"gpus"`
}

// GPUProofs are one GPU's proofs.
type GPUProofs struct {
	UUID   string      `json:"uuid"`
	Proofs []TileProof `json:"proofs"`
}

// TileProof proves one tile: the digests of the tiles of its Merkle leaf
// (its group; 8 bytes per tile: two little-endian uint32s) and the sibling
// hashes from that leaf to the root (hex).
type TileProof struct {
	Tile  int      `json:"tile"`
	Group []byte   `json:"group"`
	Path  []string `json:"path"`
}

// Reliability is a machine's published score and the terms it is made of;
// see docs/verification.md for the formula.
type Reliability struct {
	Score        float64   `json:"score"` // 0..1
	WindowStart  time.Time `json:"window_start"`
	WindowEnd    time.Time `json:"window_end"`
	ListedSecs   int64     `json:"listed_seconds"` // time the host had it listed
	OnlineSecs   int64     `json:"online_seconds"` // of which heartbeats arrived
	Coverage     float64   `json:"coverage"`       // OnlineSecs / ListedSecs (1 when never listed)
	Completed    int       `json:"completed"`      // instances that ended without a host fault
	HostFaults   int       `json:"host_faults"`    // instances that ended by the host's fault
	RenterFaults int       `json:"renter_faults"`  // not counted; shown for transparency
	FaultFactor  float64   `json:"fault_factor"`   // 1 - HostFaults/(Completed+HostFaults)
	ChecksFailed int       `json:"checks_failed"`  // in the window; shown, not in the score
	ChecksPassed int       `json:"checks_passed"`  // in the window
	Formula      string    `json:"formula"`
}

// MachineVerification is everything about a machine's verification: its
// checks, newest first, and its reliability score with its terms.
type MachineVerification struct {
	Machine     MachineID   `json:"machine"`
	Verified    bool        `json:"verified"`         // its latest finished check passed
	Unverified  bool        `json:"unverified"`       // held off the market until a check passes
	Review      string      `json:"review,omitempty"` // why it is flagged for review
	Checks      []Check     `json:"checks"`
	Reliability Reliability `json:"reliability"`
	// PerfScore is the mean rate of the GPUs that its newest passed check
	// measured, in trillions of multiply-adds per second (search's
	// perf_score); 0 before any.
	PerfScore float64 `json:"perf_score"`
	Bond      Bond    `json:"bond"`
}
