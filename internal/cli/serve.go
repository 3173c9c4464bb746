package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

type serveCmd struct {
	Listen          string        `default:"127.0.0.1:8080" env:"GPUMARKET_LISTEN" help:"Address to serve the API, agent API and web UI on."`
	DB              string        `name:"db" default:"gpumarket.db" env:"GPUMARKET_DB" help:"SQLite database file (created if missing), or a postgres://user:pass@host/db URL."`
	Fee             string        `default:"10" help:"Platform fee on on-demand charges, in percent."`
	SpotInterval    time.Duration `default:"10m" help:"Length of a spot billing interval: each one, every machine's GPUs go to its most profitable bids."`
	SpotFee         string        `default:"2.5" help:"Platform fee on spot charges, in percent."`
	LostAfter       time.Duration `default:"60s" help:"A machine silent this long goes offline and its instances fail."`
	Tick            time.Duration `default:"5s" help:"How often billing and lost-host detection run."`
	LeaseTTL        time.Duration `name:"lease-ttl" default:"15s" help:"With several coordinators on one Postgres: how long the leader lease lasts unrenewed; another coordinator runs the background loops within this after the leader dies."`
	HeartbeatFlush  time.Duration `default:"2s" help:"How often heartbeats kept in memory are written to the database; lost-host detection allows this much extra silence."`
	SettlementDelay time.Duration `default:"24h" help:"How long host earnings stay pending (refundable) before they can be withdrawn."`
	MinWithdrawal   string        `default:"1" help:"Smallest withdrawal, in tokens."`
	DividendPeriod  time.Duration `default:"24h" help:"Period over which platform fees are paid to stakers pro rata to stake-time."`
	UnstakeCooldown time.Duration `default:"168h" help:"How long unstaked tokens wait before they are available."`
	AdminEmail      string        `env:"GPUMARKET_ADMIN_EMAIL" help:"Create this admin account at start if it does not exist (password from GPUMARKET_ADMIN_PASSWORD)."`
	AdminPassword   string        `env:"GPUMARKET_ADMIN_PASSWORD" hidden:""`
	LatencyTable    string        `type:"existingfile" placeholder:"FILE" help:"Region-to-region latency estimates for ranking offers: lines of REGION REGION LATENCY (eu us 90ms) and default LATENCY."`
	Speedup         int           `default:"1" help:"For demos and tests: run the coordinator's clock N times faster than real time from --clock-epoch, so billing minutes pass in 60/N seconds. Deadlines (lost-after, lease, heartbeat flush) stay in real time."`
	ClockEpoch      time.Time     `name:"clock-epoch" placeholder:"RFC3339" help:"With --speedup: the instant from which the fast clock runs (default: now). Coordinators sharing a database, and a coordinator restarted on one, must use the same epoch so that they agree on the time."`
	PprofAddr       string        `name:"pprof-addr" placeholder:"HOST:PORT" help:"Serve Go's profiler (/debug/pprof/) on this address, apart from the API; keep it on localhost."`
	Node            string        `placeholder:"NAME" help:"This coordinator's name in the leader lease (default: the host name and a random suffix). A coordinator restarted with the same name resumes leading at once instead of waiting for its old lease to expire; two running coordinators must never share a name."`
	LogFormat       string        `default:"json" enum:"json,text" help:"Log format: json or text."`
	Verbose         bool          `short:"v" help:"Log debug messages."`

	RequireVerification bool `default:"true" negatable:"" help:"Hold machines off the market until their GPUs pass a verification check (docs/verification.md). Real GPUs need an agent with a GPU solver to pass; with --no-require-verification machines are listed at once and checked only on request (machine verify)."`
	AllowFakeGPUs       bool `name:"allow-fake-gpus" help:"Accept GPUs made up by agent --fake-gpus and verify them at CPU speed (testing only: anyone could claim one)."`
}

func (c *serveCmd) Help() string {
	return `Runs the coordinator: the JSON API under /api/v1, the agent API under
/agent/v1, the web UI at /, metrics at /metrics. Billing and lost-host
detection run in the background.

Examples:
  gpumarket serve --listen 0.0.0.0:8080 --db /var/lib/gpumarket/gpumarket.db
  GPUMARKET_ADMIN_EMAIL=ops@example.com GPUMARKET_ADMIN_PASSWORD=... gpumarket serve`
}

func (c *serveCmd) Run(ctx context.Context, env *Env) error {
	fee, err := parseFee(c.Fee)
	if err != nil {
		return usagef("--fee: %v", err)
	}
	spotFee, err := parseFee(c.SpotFee)
	if err != nil {
		return usagef("--spot-fee: %v", err)
	}
	if c.SpotInterval < time.Minute {
		return usagef("--spot-interval %s is too short; use at least 1m", c.SpotInterval)
	}
	minWithdrawal, err := market.ParseMoney(c.MinWithdrawal)
	if err != nil || minWithdrawal <= 0 {
		return usagef("--min-withdrawal %q must be a positive amount of tokens", c.MinWithdrawal)
	}
	if c.SettlementDelay < 0 || c.DividendPeriod < time.Minute || c.UnstakeCooldown < 0 {
		return usagef("--settlement-delay and --unstake-cooldown must not be negative, and --dividend-period must be at least 1m")
	}
	if c.LeaseTTL < time.Second {
		return usagef("--lease-ttl %s is too short; use at least 1s", c.LeaseTTL)
	}
	if c.HeartbeatFlush <= 0 || c.HeartbeatFlush > c.LostAfter/4 {
		return usagef("--heartbeat-flush %s must be above zero and at most a quarter of --lost-after (%s)", c.HeartbeatFlush, c.LostAfter)
	}
	if c.Speedup < 1 || c.Speedup > 3600 {
		return usagef("--speedup %d must be between 1 and 3600", c.Speedup)
	}
	if !c.ClockEpoch.IsZero() && c.Speedup == 1 {
		return usagef("--clock-epoch only makes sense with --speedup above 1")
	}
	var clock coord.Clock
	if c.Speedup > 1 {
		epoch := c.ClockEpoch
		if epoch.IsZero() {
			epoch = time.Now()
		}
		clock = speedClock{start: epoch, speedup: c.Speedup}
	}
	if c.LostAfter < 10*time.Second {
		return usagef("--lost-after %s is too short; use at least 10s", c.LostAfter)
	}
	var ranking *match.Ranking
	if c.LatencyTable != "" {
		text, err := os.ReadFile(c.LatencyTable)
		if err != nil {
			return usagef("--latency-table: %v", err)
		}
		tab, err := match.ParseLatencyTable(text)
		if err != nil {
			return usagef("--latency-table %s: %v", c.LatencyTable, err)
		}
		r := match.DefaultRanking()
		r.Latency = tab
		ranking = &r
	}
	level := slog.LevelInfo
	if c.Verbose {
		level = slog.LevelDebug
	}
	log := newLogger(c.LogFormat, level, env.Stderr)
	co, err := startCoordinator(ctx, coordinatorConfig{
		Listen: c.Listen, DB: c.DB, Mode: "serve", Logger: log, Clock: clock, Speedup: c.Speedup,
		Fee: fee, LostAfter: c.LostAfter, Tick: c.Tick, SpotInterval: c.SpotInterval, SpotFee: spotFee, Ranking: ranking,
		LeaseTTL: c.LeaseTTL, HeartbeatFlush: c.HeartbeatFlush, Node: c.Node, FailpointFile: os.Getenv(failpointEnv),
		SettlementDelay: c.SettlementDelay, DividendPeriod: c.DividendPeriod, UnstakeCooldown: c.UnstakeCooldown, MinWithdrawal: minWithdrawal,
		RequireVerification: c.RequireVerification, AllowFakeGPUs: c.AllowFakeGPUs,
	})
	if err != nil {
		return err
	}
	if c.AdminEmail != "" {
		if c.AdminPassword == "" {
			return usagef("--admin-email needs the password in GPUMARKET_ADMIN_PASSWORD")
		}
		_, err := co.Service.CreateAccount(ctx, c.AdminEmail, c.AdminPassword, []market.Role{market.RoleAdmin})
		switch {
		case market.IsKind(err, market.Conflict):
			log.Info("admin account exists", "email", c.AdminEmail)
		case err != nil:
			return fmt.Errorf("create admin account: %w", err)
		default:
			log.Info("admin account created", "email", c.AdminEmail)
		}
	}
	if c.PprofAddr != "" {
		stop, err := servePprof(c.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	log.Info("coordinator listening", "url", co.URL, "db", c.DB, "node", co.Service.Leadership().Node)
	return co.Run(ctx)
}
