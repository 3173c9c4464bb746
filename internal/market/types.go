package market

import (
	"fmt"
	"slices"
	"time"
)

// Role is what an account may do. An account can hold several.
type Role string

// Roles.
const (
	RoleRenter Role = "renter"
	RoleHost   Role = "host"
	RoleAdmin  Role = "admin"
)

// ParseRole checks that s names a role.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleRenter, RoleHost, RoleAdmin:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q; use renter, host or admin", s)
}

// Account is a user of the marketplace.
type Account struct {
	ID           AccountID `json:"id"`
	Email        string    `json:"email"`
	PasswordHash string    `json:"-"`
	Roles        []Role    `json:"roles"`
	CreatedAt    time.Time `json:"created_at"`
}

// Has reports whether the account holds role r. Admins hold every role.
func (a Account) Has(r Role) bool {
	return slices.Contains(a.Roles, r) || slices.Contains(a.Roles, RoleAdmin)
}

// APIKey is a bearer credential. Only the SHA-256 of the secret is stored;
// the secret itself is shown once, when the key is created.
type APIKey struct {
	ID        APIKeyID   `json:"id"`
	Owner     AccountID  `json:"owner"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"` // first characters of the secret, to recognise it
	Hash      []byte     `json:"-"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// GPU is one card of a machine as the agent discovered it.
type GPU struct {
	Index         int    `json:"index"`
	UUID          string `json:"uuid"`
	Model         string `json:"model"`
	VRAMMiB       int64  `json:"vram_mib"`
	MinPowerW     int    `json:"min_power_w"`
	DefaultPowerW int    `json:"default_power_w"`
	MaxPowerW     int    `json:"max_power_w"`
	PCIeGen       int    `json:"pcie_gen,omitempty"`
	PCIeWidth     int    `json:"pcie_width,omitempty"`
	MIG           bool   `json:"mig,omitempty"` // MIG mode on (NVML or nvidia-smi); the card is rented whole
}

// Hardware is what an agent reports about its machine when it registers.
type Hardware struct {
	// Fingerprint is a stable key chosen by the agent (its machine ID file),
	// so that a restarted agent registers the same machine again.
	Fingerprint   string `json:"fingerprint"`
	Hostname      string `json:"hostname"`
	GPUs          []GPU  `json:"gpus"`
	CPUCores      int    `json:"cpu_cores"`
	RAMMiB        int64  `json:"ram_mib"`
	DiskGiB       int64  `json:"disk_gib"`
	DriverVersion string `json:"driver_version,omitempty"`
	CUDAVersion   string `json:"cuda_version,omitempty"`
	Runner        string `json:"runner"` // "process" or "docker"
	Region        string `json:"region,omitempty"`
	DataCenter    string `json:"datacenter,omitempty"`
	// PortRange is the host ports the agent publishes container ports on.
	PortRange PortRange `json:"port_range,omitzero"`
}

// MachineStatus is the status a user sees: derived from liveness and the
// host's listing choice.
type MachineStatus string

// Machine statuses.
const (
	MachineListed   MachineStatus = "listed"
	MachineUnlisted MachineStatus = "unlisted"
	MachineOffline  MachineStatus = "offline"
	// MachineUnverified: listed by the host but held off the market until
	// it passes verification (see Machine.Unverified).
	MachineUnverified MachineStatus = "unverified"
)

// Machine is a host's GPU machine as the coordinator knows it.
type Machine struct {
	ID              MachineID     `json:"id"`
	Owner           AccountID     `json:"owner"`
	Hardware                      // as last registered
	Listed          bool          `json:"listed"` // the host's choice
	Online          bool          `json:"online"` // heartbeats arrive within the lost deadline
	Status          MachineStatus `json:"status"` // derived; see DeriveStatus
	PricePerGPUHour Money         `json:"price_per_gpu_hour"`
	Spot            SpotTerms     `json:"spot"` // the host's terms for spot bids
	LastSeenAt      time.Time     `json:"last_seen_at"`
	CreatedAt       time.Time     `json:"created_at"`
	// UsedGPUs lists the GPU indices held by active instances. Filled in by
	// the coordinator when it reads the machine; not stored on the row.
	UsedGPUs []int `json:"used_gpus"`
	// Unverified holds the machine off the market until a verification
	// check passes: set at registration when the coordinator requires
	// verification, and by a failed check.
	Unverified bool `json:"unverified"`
	// Review, when not empty, says why the machine is flagged for an
	// operator's review (a GPU UUID also claimed by another machine).
	Review string `json:"review,omitempty"`
}

// DeriveStatus sets m.Status from Online, Listed and Unverified.
func (m *Machine) DeriveStatus() {
	switch {
	case !m.Online:
		m.Status = MachineOffline
	case m.Listed && m.Unverified:
		m.Status = MachineUnverified
	case m.Listed:
		m.Status = MachineListed
	default:
		m.Status = MachineUnlisted
	}
}

// FreeGPUs returns the indices of GPUs not in UsedGPUs, in order.
func (m Machine) FreeGPUs() []int {
	var free []int
	for _, g := range m.GPUs {
		if !slices.Contains(m.UsedGPUs, g.Index) {
			free = append(free, g.Index)
		}
	}
	return free
}

// InstanceKind says how an instance is rented.
type InstanceKind string

// Instance kinds.
const (
	OnDemand InstanceKind = "on_demand"
	Spot     InstanceKind = "spot"
)

// InstanceState is the lifecycle state of an instance.
type InstanceState string

// Instance states. Pending, Starting, Running and Stopping hold GPUs; the
// others are terminal.
const (
	InstancePending   InstanceState = "pending"
	InstanceStarting  InstanceState = "starting"
	InstanceRunning   InstanceState = "running"
	InstanceStopping  InstanceState = "stopping"
	InstanceStopped   InstanceState = "stopped"
	InstancePreempted InstanceState = "preempted"
	InstanceFailed    InstanceState = "failed"
)

// Terminal reports whether s is an end state.
func (s InstanceState) Terminal() bool {
	switch s {
	case InstanceStopped, InstancePreempted, InstanceFailed:
		return true
	}
	return false
}

// Instance is an allocation of GPUs of one machine to one renter.
type Instance struct {
	ID         InstanceID        `json:"id"`
	Renter     AccountID         `json:"renter"`
	Machine    MachineID         `json:"machine"`
	Kind       InstanceKind      `json:"kind"`
	GPUs       []int             `json:"gpus"` // exact GPU indices on the machine
	Image      string            `json:"image,omitempty"`
	Command    []string          `json:"command"`
	Env        map[string]string `json:"env,omitempty"`
	State      InstanceState     `json:"state"`
	Generation int64             `json:"generation"`
	// PricePerHour is the whole instance's price, fixed at creation.
	PricePerHour Money      `json:"price_per_hour"`
	Escrow       Money      `json:"escrow"` // held up front, released at the end
	Reason       string     `json:"reason,omitempty"`
	ExitCode     *int       `json:"exit_code,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at,omitempty"`  // first reported running
	StopAt       *time.Time `json:"stop_at,omitempty"`     // billing ends here (stop asked, exit seen, host lost)
	EndedAt      *time.Time `json:"ended_at,omitempty"`    // reached a terminal state
	BilledMins   int64      `json:"billed_minutes"`        // minutes charged so far
	Charged      Money      `json:"charged"`               // total charged so far
	Settled      bool       `json:"settled"`               // every minute charged and the escrow released
	GraceSeconds int        `json:"grace_seconds"`         // SIGTERM to SIGKILL
	NoticeAt     *time.Time `json:"notice_at,omitempty"`   // when the renter was told it will stop
	LastReportAt *time.Time `json:"last_report,omitempty"` // last agent report about it
	// Spot instances only: the bid that won and its price for the whole
	// instance per day (billed per minute instead of PricePerHour). Spot
	// and on-demand instances: the settings the agent applies to each GPU.
	Bid           BidID    `json:"bid,omitempty"`
	PricePerDay   Money    `json:"price_per_day,omitempty"`
	PowerLimitW   int      `json:"power_limit_w,omitempty"`
	Clocks        Clocks   `json:"clocks"`
	GPUClocks     []Clocks `json:"gpu_clocks,omitempty"`     // per GPU, in the order of GPUs, instead of Clocks
	NoticeSeconds int      `json:"notice_seconds,omitempty"` // notice the bid asked for
	// Deployment is the deployment the instance is a replica of ("" for
	// instances rented directly).
	Deployment         DeploymentID `json:"deployment,omitempty"`
	DeploymentRevision int64        `json:"deployment_revision,omitempty"` // the revision of its spec it runs
	// Container instances: the template they came from, the container
	// ports to publish, the renter's SSH public keys, the resource limits
	// (resolved at creation), and where the agent published the ports.
	Template string        `json:"template,omitempty"`
	Ports    []string      `json:"ports,omitempty"`
	SSHKeys  []string      `json:"ssh_keys,omitempty"`
	Limits   Limits        `json:"limits,omitzero"`
	PortMap  []PortBinding `json:"port_map,omitempty"`
}

// Active reports whether the instance holds its GPUs.
func (i Instance) Active() bool { return !i.State.Terminal() }

// LogChunk is a piece of an instance's output, numbered per instance.
type LogChunk struct {
	Instance InstanceID `json:"instance"`
	Seq      int64      `json:"seq"`
	Stream   string     `json:"stream"` // stdout or stderr
	Data     string     `json:"data"`
	At       time.Time  `json:"at"`
}

// Event is an append-only record of something that happened.
type Event struct {
	Seq      int64      `json:"seq"`
	At       time.Time  `json:"at"`
	Type     string     `json:"type"` // "instance.running", "machine.offline", ...
	Account  AccountID  `json:"account,omitempty"`
	Machine  MachineID  `json:"machine,omitempty"`
	Instance InstanceID `json:"instance,omitempty"`
	Message  string     `json:"message"`
}
