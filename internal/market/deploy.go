package market

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DeploymentID names a deployment ("d-...").
type DeploymentID string

// DeploymentPrefix starts every deployment ID.
const DeploymentPrefix = "d-"

// ScaleMetric is what a deployment scales on.
type ScaleMetric string

// Scale metrics.
const (
	// ScaleGPUUtil is the mean GPU utilisation, in percent, of the GPUs
	// of the replicas that report it.
	ScaleGPUUtil ScaleMetric = "gpu_util"
	// ScaleQueue is the queue length the workload reports to the agent
	// (GPUMARKET_QUEUE_URL), per replica.
	ScaleQueue ScaleMetric = "queue"
)

// ScaleRule keeps the metric per replica at or below Target: the
// deployment wants ceil(sum of the metric over its replicas / Target)
// replicas, between its minimum and maximum, changing by at most MaxStep
// replicas per decision, and not sooner than the cooldown after the
// previous decision in the same direction (UpCooldown after a scale-up,
// DownCooldown after any scaling before a scale-down).
type ScaleRule struct {
	Metric       ScaleMetric `json:"metric"`
	Target       float64     `json:"target"`                  // percent for gpu_util, items for queue
	UpCooldown   Duration    `json:"up_cooldown,omitempty"`   // default 1 min
	DownCooldown Duration    `json:"down_cooldown,omitempty"` // default 5 min
	MaxStep      int         `json:"max_step,omitempty"`      // default 2
}

// String writes the rule as the CLI accepts it: gpu_util>70% or queue>100.
func (r ScaleRule) String() string {
	v := strconv.FormatFloat(r.Target, 'f', -1, 64)
	if r.Metric == ScaleGPUUtil {
		return string(r.Metric) + ">" + v + "%"
	}
	return string(r.Metric) + ">" + v
}

// ParseScaleRule reads "gpu_util>70%" or "queue>100".
func ParseScaleRule(s string) (ScaleRule, error) {
	name, val, ok := strings.Cut(strings.TrimSpace(s), ">")
	if !ok {
		return ScaleRule{}, fmt.Errorf("scale rule %q: write METRIC>TARGET, such as gpu_util>70%% or queue>100", s)
	}
	r := ScaleRule{Metric: ScaleMetric(strings.TrimSpace(name))}
	val = strings.TrimSpace(val)
	switch r.Metric {
	case ScaleGPUUtil:
		val = strings.TrimSuffix(val, "%")
	case ScaleQueue:
	default:
		return ScaleRule{}, fmt.Errorf("scale rule %q: unknown metric %q; use gpu_util or queue", s, name)
	}
	v, err := strconv.ParseFloat(val, 64)
	if err != nil {
		return ScaleRule{}, fmt.Errorf("scale rule %q: the target %q is not a number", s, val)
	}
	r.Target = v
	return r, r.Check()
}

// Check reports what is wrong with a rule.
func (r ScaleRule) Check() error {
	switch {
	case r.Metric != ScaleGPUUtil && r.Metric != ScaleQueue:
		return fmt.Errorf("scale metric %q is unknown; use gpu_util or queue", r.Metric)
	case !(r.Target > 0):
		return fmt.Errorf("scale target must be above zero, got %v", r.Target)
	case r.Metric == ScaleGPUUtil && r.Target > 100:
		return fmt.Errorf("GPU utilisation target %v%% is above 100%%", r.Target)
	case r.UpCooldown < 0 || r.DownCooldown < 0:
		return fmt.Errorf("cooldowns must not be negative")
	case r.MaxStep < 0:
		return fmt.Errorf("max step must not be negative, got %d", r.MaxStep)
	}
	return nil
}

// Duration is a time.Duration written in JSON and YAML as "80ms", "5m".
type Duration time.Duration

// MarshalText writes d as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "80ms", "5m" or a bare number of seconds.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*d = Duration(time.Duration(n) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like 80ms, 30s or 5m", s)
	}
	*d = Duration(v)
	return nil
}

// DeploymentSpec is what a renter asks of a deployment. Changing the
// image, command, env or GPUs per replica makes a new revision, which a
// rolling update brings every replica to.
type DeploymentSpec struct {
	Name           string            `json:"name"`
	Image          string            `json:"image,omitempty"`
	Command        []string          `json:"command,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	GPUsPerReplica int               `json:"gpus_per_replica"`
	MinReplicas    int               `json:"min_replicas"`
	MaxReplicas    int               `json:"max_replicas"`
	// Query is an offer query (gpumarket offer search --help) every
	// replica's machine must match.
	Query string `json:"query,omitempty"`
	// Regions are preferred in order; with MaxLatency set, other regions
	// within that latency of a preferred one are used when these have no
	// room. No regions: anywhere.
	Regions    []string   `json:"regions,omitempty"`
	MaxLatency Duration   `json:"max_latency,omitempty"`
	Scale      *ScaleRule `json:"scale,omitempty"`
	// Pool places the replicas on machines the operator assigned to
	// pools, counted against the pool's quota; "" is the open market.
	Pool string `json:"pool,omitempty"`
	// Priority orders deployments within a pool when capacity is short:
	// higher first. 0..1000.
	Priority int `json:"priority,omitempty"`
	// MaxPricePerDay caps what one replica may cost per day (0: no cap).
	// For a spot deployment it is instead the bid of each replica, per
	// GPU-day.
	MaxPricePerDay Money `json:"max_price_per_day,omitempty"`
	// Spot runs each replica as a spot bid on the machine the reconciler
	// chooses, at MaxPricePerDay per GPU-day; an outbid replica waits in
	// the book (or moves) until it wins again.
	Spot bool `json:"spot,omitempty"`
	// PowerLimitW is the power limit of each GPU of a spot replica; zero
	// takes the machine's maximum for its GPU model.
	PowerLimitW  int `json:"power_limit_w,omitempty"`
	GraceSeconds int `json:"grace_seconds,omitempty"`
	// Health, when set, is checked by the agent; a rolling update waits
	// for a new replica to pass it before stopping an old one.
	Health *HealthCheck `json:"health,omitempty"`
}

// HealthCheck is what the agent checks of a replica every few seconds:
// either an HTTP GET (Port and Path), healthy when it answers 2xx within
// 2 s, or a command run inside the replica (Command), healthy when it
// exits 0 within Timeout. Port is the port the workload listens on: on
// the machine for plain processes (replicas then never share a machine),
// in the container for images (the coordinator publishes it). Command
// runs in the replica's container (docker exec) or, for plain processes,
// as a child process with the replica's environment and directory.
type HealthCheck struct {
	Port    int      `json:"port,omitempty"`
	Path    string   `json:"path,omitempty"` // "/healthz"
	Command []string `json:"command,omitempty"`
	// Timeout bounds a command; zero means DefaultHealthTimeout.
	Timeout Duration `json:"timeout,omitempty"`
}

// HealthEnv carries a replica's health check to its agent: "PORT PATH"
// for an HTTP check, the check as JSON for a command.
const HealthEnv = "GPUMARKET_HEALTH_CHECK"

// Limits of a health check command.
const (
	DefaultHealthTimeout = 5 * time.Second
	MaxHealthTimeout     = time.Minute
	maxHealthCommand     = 4096 // bytes, all arguments together
)

// DeploymentEnv gives a replica the ID of its deployment; coordinators
// tell replicas from other instances by it.
const DeploymentEnv = "GPUMARKET_DEPLOYMENT"

// DeploymentRevisionEnv gives a spot replica's bid the deployment revision
// it was placed at, so its instance is recorded at that revision.
const DeploymentRevisionEnv = "GPUMARKET_DEPLOYMENT_REVISION"

// Check reports what is wrong with a health check.
func (h HealthCheck) Check() error {
	if len(h.Command) > 0 {
		n := 0
		for _, a := range h.Command {
			n += len(a)
			if strings.ContainsRune(a, 0) {
				return fmt.Errorf("health check command must not contain NUL bytes")
			}
		}
		t := time.Duration(h.Timeout)
		switch {
		case h.Port != 0 || h.Path != "":
			return fmt.Errorf("a health check is an HTTP path or a command, not both; drop --health or --health-cmd")
		case h.Command[0] == "":
			return fmt.Errorf("health check command has no program to run")
		case n > maxHealthCommand:
			return fmt.Errorf("health check command is %d bytes; the limit is %d", n, maxHealthCommand)
		case t < 0 || t > MaxHealthTimeout:
			return fmt.Errorf("health check timeout %s must be between 1s and %s (0 for the default %s)", t, MaxHealthTimeout, DefaultHealthTimeout)
		case t > 0 && t < time.Second:
			return fmt.Errorf("health check timeout %s is under 1s; a command needs time to start", t)
		}
		return nil
	}
	switch {
	case h.Timeout != 0:
		return fmt.Errorf("a health check timeout applies to a command (--health-cmd); HTTP checks wait 2 s")
	case h.Port < 1 || h.Port > 65535:
		return fmt.Errorf("health check port %d is not a port number (1..65535)", h.Port)
	case !strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \t\n"):
		return fmt.Errorf("health check path %q must start with / and contain no spaces, like /healthz", h.Path)
	}
	return nil
}

// HTTP reports whether the check is an HTTP GET (not a command).
func (h HealthCheck) HTTP() bool { return len(h.Command) == 0 }

// CommandTimeout is how long a command check may run.
func (h HealthCheck) CommandTimeout() time.Duration {
	if h.Timeout <= 0 {
		return DefaultHealthTimeout
	}
	return time.Duration(h.Timeout)
}

// String writes the check as HealthEnv carries it.
func (h HealthCheck) String() string {
	if !h.HTTP() {
		b, _ := json.Marshal(h) // strings and a duration: cannot fail
		return string(b)
	}
	return strconv.Itoa(h.Port) + " " + h.Path
}

// ParseHealthCheck reads what HealthEnv carries, or "PORT/PATH" as the
// CLI takes it (8080/healthz).
func ParseHealthCheck(s string) (HealthCheck, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "{") {
		var h HealthCheck
		if err := json.Unmarshal([]byte(s), &h); err != nil {
			return HealthCheck{}, fmt.Errorf("health check %q: %w", s, err)
		}
		return h, h.Check()
	}
	port, path, ok := strings.Cut(s, " ")
	if !ok {
		port, path, ok = strings.Cut(s, "/")
		path = "/" + path
	}
	n, err := strconv.Atoi(port)
	if !ok || err != nil {
		return HealthCheck{}, fmt.Errorf("health check %q: write PORT/PATH, like 8080/healthz", s)
	}
	h := HealthCheck{Port: n, Path: strings.TrimSpace(path)}
	return h, h.Check()
}

// Deployment is a set of replicas the coordinator keeps running.
type Deployment struct {
	ID    DeploymentID   `json:"id"`
	Owner AccountID      `json:"owner"`
	Spec  DeploymentSpec `json:"spec"`
	// Revision grows when the spec changes what a replica runs.
	Revision int64 `json:"revision"`
	// Desired is the replica count the coordinator aims for now, between
	// MinReplicas and MaxReplicas; scaling moves it.
	Desired int `json:"desired"`
	// LastScaleAt and LastScaleUp are when scaling last changed Desired
	// and whether it went up; cooldowns start there.
	LastScaleAt *time.Time       `json:"last_scale_at,omitempty"`
	LastScaleUp bool             `json:"last_scale_up,omitempty"`
	Status      DeploymentStatus `json:"status"`
	Deleted     bool             `json:"deleted,omitempty"` // replicas are stopping; the row goes when they have
	CreatedAt   time.Time        `json:"created_at"`
	UpdatedAt   time.Time        `json:"updated_at"`
}

// DeploymentStatus is what the last reconcile saw of a deployment.
type DeploymentStatus struct {
	Replicas int `json:"replicas"` // active replicas
	Ready    int `json:"ready"`    // running at the current revision
	Pending  int `json:"pending"`  // wanted but not placed
	// Why says why replicas are pending ("no machine with 2 free ...").
	Why string    `json:"why,omitempty"`
	At  time.Time `json:"at,omitempty"`
}

// DeploymentView is a deployment with its replicas and recent decisions,
// as `deployment show` prints it.
type DeploymentView struct {
	Deployment
	Replicas []Instance `json:"replicas"`
	// Bids are the open bids of a spot deployment's replicas.
	Bids    []Bid               `json:"bids,omitempty"`
	History []DeploymentHistory `json:"history"`
}

// DeploymentHistory is one decision the coordinator took about a
// deployment, with its reason.
type DeploymentHistory struct {
	Seq        int64        `json:"seq"`
	Deployment DeploymentID `json:"deployment"`
	At         time.Time    `json:"at"`
	Kind       string       `json:"kind"` // place, stop, preempt, scale, pending, update
	Instance   InstanceID   `json:"instance,omitempty"`
	Machine    MachineID    `json:"machine,omitempty"`
	Message    string       `json:"message"`
}

// ScaleRequest sets a deployment's replica bounds; nil fields stay.
type ScaleRequest struct {
	MinReplicas *int `json:"min_replicas,omitempty"`
	MaxReplicas *int `json:"max_replicas,omitempty"`
	// Replicas sets the current desired count (within the bounds).
	Replicas *int `json:"replicas,omitempty"`
}

// Pool is a share of the pooled machines' GPUs that deployments naming it
// may use; a pool may borrow idle GPUs beyond its quota and gives them
// back by preemption when another pool needs its quota.
type Pool struct {
	Name        string `json:"name"`
	ShareBP     int64  `json:"share_bp"` // basis points of the pooled GPUs
	Description string `json:"description,omitempty"`
	// Open pools take machines from their hosts (gpumarket machine set
	// --pool): the operator approved every host in advance. Only an admin
	// moves machines into or out of a closed pool.
	Open bool `json:"open,omitempty"`
	// Reward, when set, pays the hosts of the pool's machines in a
	// project asset for every minute their GPUs are rented.
	Reward    *PoolReward `json:"reward,omitempty"`
	CreatedAt time.Time   `json:"created_at"`
}

// PoolReward is what a pool pays its hosts (DePIN rewards): PerGPUHour
// of Asset for each GPU-hour rented on a machine of the pool, from the
// available balance of the funding account From. Every billed minute of
// an instance on a machine that is in the pool when the minute is billed
// earns its host MinuteCharge(PerGPUHour * GPUs, minute), once. Paid and
// Stopped are kept by the coordinator: the total paid so far, and why
// rewards are not being paid ("" while they are).
type PoolReward struct {
	Asset      Asset     `json:"asset"`
	PerGPUHour Money     `json:"per_gpu_hour"`
	From       AccountID `json:"from"` // an account ID, or an email when setting it
	Paid       Money     `json:"paid"`
	Stopped    string    `json:"stopped,omitempty"`
}

// TransferPoolRewards pays a batch of pool reward minutes: the funding
// account gives the sum, each host's earnings get the sum of its minutes.
const TransferPoolRewards TransferKind = "pool_rewards"

// RewardMinute is the record of one rewarded minute of an instance; a
// minute is rewarded at most once.
type RewardMinute struct {
	Instance InstanceID `json:"instance"`
	Minute   int64      `json:"minute"`
	Pool     string     `json:"pool"`
	Host     AccountID  `json:"host"`
	Amount   Money      `json:"amount"`
	Transfer int64      `json:"transfer"` // Seq of the pool_rewards transfer
	At       time.Time  `json:"at"`
}

// PoolUsage is a pool with its quota and use, as `admin pool list` shows.
type PoolUsage struct {
	Pool
	Machines    int `json:"machines"`      // machines assigned to this pool
	QuotaGPUs   int `json:"quota_gpus"`    // share of every pooled GPU online
	UsedGPUs    int `json:"used_gpus"`     // held by the pool's replicas
	BorrowedGPU int `json:"borrowed_gpus"` // of UsedGPUs, beyond the quota
	Deployments int `json:"deployments"`
}

// ApplyResult answers an apply of a deployment spec.
type ApplyResult struct {
	Deployment Deployment `json:"deployment"`
	Created    bool       `json:"created"` // false: an existing deployment was updated
}

// PoolAssignment assigns machines to a pool ("" takes them out of pools).
type PoolAssignment struct {
	Pool     string      `json:"pool"`
	Machines []MachineID `json:"machines"`
}
