// Package coord is the coordinator service: accounts, machines, instances,
// billing and the agent protocol. It applies the pure rules of ledger and
// match to the state kept behind the Store interface it declares.
//
// It imports market and the pure packages, never an adapter.
package coord

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/auction"
	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// Clock tells the coordinator what time it is. Tests use a fake one; `dev
// --speedup` a fast one.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Config configures a Service.
type Config struct {
	Store  Store
	Clock  Clock
	Logger *slog.Logger
	// Fee is the platform's share of on-demand charges (default 10%).
	Fee ledger.BasisPoints
	// LostAfter is how long, in real time, a machine may stay silent before
	// it is offline and its instances fail (default 60 s).
	LostAfter time.Duration
	// Speedup is how many times faster than real time Clock runs (dev
	// --speedup; default 1). Billing follows Clock; deadlines that agents
	// keep (LostAfter) stay in real time.
	Speedup int
	// DefaultGrace is the SIGTERM-to-SIGKILL time when a create names none
	// (default 10 s); MaxGrace caps what a renter may ask (default 5 min).
	DefaultGrace, MaxGrace time.Duration
	// Faucet, when positive, lets any account credit itself this much with
	// the faucet call (dev mode only).
	Faucet market.Money
	// Ranking weighs the offer score and holds the operator's latency
	// table; nil = match.DefaultRanking().
	Ranking *match.Ranking
	// WebhookClient posts preemption webhooks to bidders' URLs (nil: a
	// client with a 10 s timeout). Operators who must not let the
	// coordinator reach arbitrary URLs give one whose transport refuses
	// them.
	WebhookClient *http.Client
	// PasswordHasher hashes and checks passwords. Tests use a cheap one.
	Passwords PasswordHasher
	// Node names this coordinator in the leader lease (default: the host
	// name and a random suffix); it must differ between coordinators.
	Node string
	// LeaseTTL is how long, in real time, the leader lease lasts without
	// renewal (default DefaultLeaseTTL): after a leader dies, another
	// coordinator runs the loops within it.
	LeaseTTL time.Duration
	// HeartbeatFlush is how often, in real time, heartbeats kept in memory
	// are written (default DefaultHeartbeatFlush); lost-host detection
	// allows that much extra silence.
	HeartbeatFlush time.Duration
	// Spot market: the clearing interval in clock time (default 10 min),
	// the platform's share of spot charges (default 2.5%), the minimum
	// increment a set of bids must beat running winners by (default
	// auction.DefaultMinIncrement) and the most open bids one renter may
	// hold (default 20).
	SpotInterval time.Duration
	SpotFee      ledger.BasisPoints
	MinIncrement auction.BasisPoints
	MaxBids      int
	// Money: how long, in clock time, a host's earnings stay pending before
	// they can be withdrawn (default 24 h), the smallest withdrawal (default
	// 1 token), the dividend distribution period (default 24 h, periods
	// aligned to the Unix epoch) and the unstaking cooldown (default 7 days).
	SettlementDelay time.Duration
	MinWithdrawal   market.Money
	DividendPeriod  time.Duration
	UnstakeCooldown time.Duration
	// Verification (verify.go): RequireVerification holds a new machine,
	// or one whose GPUs changed, off the market until it passes a check,
	// and runs checks at every registration and at random times;
	// AllowFakeGPUs accepts GPUs made up by the fake adapter (dev and
	// tests only); Models is the model table (nil: verify.DefaultTable);
	// RealClock times challenges in real time (nil: the system clock);
	// CheckEvery is the mean time between periodic checks (default 6 h).
	RequireVerification bool
	AllowFakeGPUs       bool
	Models              *verify.Table
	RealClock           Clock
	CheckEvery          time.Duration
}

// PasswordHasher hashes and checks passwords.
type PasswordHasher interface {
	Hash(password string) (string, error)
	Verify(hash, password string) bool
}

// Service is the coordinator. Its methods take the calling account (already
// authenticated) and enforce who may see and change what.
type Service struct {
	store Store
	clock Clock
	log   *slog.Logger
	cfg   Config
	hub   *hub
	index *match.Index
	// entries serialise the refreshes of index entries (offers.go).
	entries entryLocks
	// webhooks is the outbox cursor of preemption webhooks.
	webhooks webhookOutbox
	// follow is the cursor of changes made through other replicas.
	follow follower
	// keys caches authenticated API keys.
	keys keyCache

	spotMu    sync.Mutex
	lastRound time.Time // start of the last spot interval cleared

	lead  leader     // the leader lease as last seen
	live  *liveSet   // machines seen online and heartbeats not yet written
	beats beatCounts // heartbeat totals for the metrics

	metrics *metricStore // recent GPU metrics from agents' reports (metrics.go)
	signals signalStore  // queue lengths, health results replicas reported (signals.go)

	verify *verifier // verification state kept in memory (verify.go)
	// noChecks: machines read without a pending check (verify.go).
	noChecks machineMemo[struct{}]
	// work: machines' active instances, for the desired state (work.go).
	work machineMemo[[]market.Instance]
	// seen: machines' instance reports recorded, for heartbeats (work.go).
	seen machineMemo[seenReports]

	// batches: on-demand creates and agents' reports committed together (batch.go).
	batches groupCommit[batchCall]
}

// New returns a Service with defaults filled in. Call RebuildIndex before
// serving searches.
func New(cfg Config) *Service {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Fee == 0 {
		cfg.Fee = 1000
	}
	if cfg.Fee < 0 {
		cfg.Fee = 0
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = time.Minute
	}
	if cfg.Speedup < 1 {
		cfg.Speedup = 1
	}
	if cfg.DefaultGrace <= 0 {
		cfg.DefaultGrace = 10 * time.Second
	}
	if cfg.MaxGrace <= 0 {
		cfg.MaxGrace = 5 * time.Minute
	}
	if cfg.WebhookClient == nil {
		cfg.WebhookClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Node == "" {
		cfg.Node = defaultNode()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.HeartbeatFlush <= 0 {
		cfg.HeartbeatFlush = DefaultHeartbeatFlush
	}
	if cfg.Passwords == nil {
		cfg.Passwords = Argon2id{}
	}
	if cfg.SpotInterval <= 0 {
		cfg.SpotInterval = DefaultSpotInterval
	}
	if cfg.SpotFee == 0 {
		cfg.SpotFee = DefaultSpotFee
	}
	if cfg.SpotFee < 0 {
		cfg.SpotFee = 0
	}
	if cfg.MaxBids <= 0 {
		cfg.MaxBids = DefaultMaxBids
	}
	if cfg.SettlementDelay <= 0 {
		cfg.SettlementDelay = DefaultSettlementDelay
	}
	if cfg.MinWithdrawal <= 0 {
		cfg.MinWithdrawal = DefaultMinWithdrawal
	}
	if cfg.DividendPeriod <= 0 {
		cfg.DividendPeriod = DefaultDividendPeriod
	}
	if cfg.UnstakeCooldown <= 0 {
		cfg.UnstakeCooldown = DefaultUnstakeCooldown
	}
	index := match.NewIndex()
	if cfg.Ranking != nil {
		index.SetRanking(*cfg.Ranking)
	}
	s := &Service{clock: cfg.Clock, log: cfg.Logger, cfg: cfg, hub: newHub(cfg.Clock.Now().UnixNano()), index: index, live: newLiveSet(), metrics: newMetricStore()}
	s.store = fencedStore{Store: cfg.Store, s: s}
	s.verify = newVerifier(&s.cfg)
	s.seen.max = maxSeenReports
	s.batches = groupCommit[batchCall]{name: "create and report", max: maxBatch, run: s.runBatch, log: s.log}
	return s
}

// Run keeps the leader lease (taking it when free, renewing it while
// held), flushes heartbeats, follows other replicas' changes, keeps the
// offer index's machine facts (facts.go), and every interval of real time
// runs Tick, whose background loops (billing, lost-host detection, spot
// rounds) run only while this coordinator leads, until ctx ends.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	keepCtx, stopKeep := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() { defer close(kept); s.keep(keepCtx) }()
	defer func() { stopKeep(); <-kept }()
	followed := make(chan struct{})
	go func() { defer close(followed); s.FollowChanges(keepCtx, DefaultFollowEvery) }()
	defer func() { stopKeep(); <-followed }()
	facts := make(chan struct{})
	go func() { defer close(facts); s.keepFacts(keepCtx) }() // every coordinator serves searches: facts.go
	defer func() { stopKeep(); <-facts }()
	if _, err := s.campaign(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("leader lease", "err", err)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			switch err := s.Tick(ctx); {
			case err == nil || ctx.Err() != nil:
			case errors.Is(err, errNotLeader):
				s.log.Warn("lost the leader lease during a tick; its remaining work was refused", "err", err)
			default:
				s.log.Error("background tick", "err", err)
			}
		}
	}
}

// Tick runs one pass of the background work at the clock's current time:
// machines silent past the lost deadline go offline, a spot clearing round
// runs when a new interval has begun, and every running instance is
// charged for the minutes it completed.
//
// It first writes the heartbeats held in memory and takes or renews the
// leader lease; only the leader does the rest, and each of its
// transactions commits only while it still holds the lease.
func (s *Service) Tick(ctx context.Context) error {
	ctx, leader, err := s.beginPass(ctx)
	if err != nil || !leader {
		return err
	}
	if err := s.step(ctx, "detect_lost", s.detectLost); err != nil {
		return err
	}
	if err := s.step(ctx, "verify", s.tickVerify); err != nil {
		return err
	}
	if err := s.step(ctx, "spot_clearing", s.clearSpot); err != nil {
		return err
	}
	if err := s.step(ctx, "webhooks", s.sendWebhooks); err != nil {
		return err
	}
	if err := s.step(ctx, "deployments", s.tickDeployments); err != nil { // deployments.go
		if errors.Is(err, errNotLeader) {
			return err
		}
		s.log.Error("deployments pass", "err", err) // billing still runs
	}
	return s.step(ctx, "money", s.tickMoney) // billing, unstake releases, dividends
}

func (s *Service) now() time.Time { return s.clock.Now().UTC() }

func ptr[T any](v T) *T { return &v }

// Stats are live counts for the home page and metrics.
type Stats struct {
	Machines, OnlineMachines, RunningInstances int
}

// Stats counts machines and running instances. Machines are counted in
// the offer index, which holds every machine: reading them all from the
// store took a third of a second at 10,000 machines, on every home page.
func (s *Service) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	s.index.Each(func(m *market.Machine) {
		st.Machines++
		if m.Online {
			st.OnlineMachines++
		}
	})
	err := s.store.Tx(ctx, func(tx Tx) error {
		insts, err := tx.Instances(ctx, InstanceFilter{ActiveOnly: true})
		for _, i := range insts {
			if i.State == market.InstanceRunning {
				st.RunningInstances++
			}
		}
		return err
	})
	return st, err
}
