package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/httpapi"
	"github.com/gpumarket/gpumarket/internal/ledger"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
	"github.com/gpumarket/gpumarket/internal/postgres"
	"github.com/gpumarket/gpumarket/internal/sqlite"
	"github.com/gpumarket/gpumarket/internal/webui"
)

// Guards: both database adapters are coordinator stores.
var (
	_ coord.Store = (*sqlite.DB)(nil)
	_ coord.Store = (*postgres.DB)(nil)
)

// Guard: the web pages run on the coordinator service.
var _ webui.Service = (*coord.Service)(nil)

// coordinatorConfig is what serve and dev decide about the coordinator.
type coordinatorConfig struct {
	Listen    string // host:port; port 0 picks a free one
	DB        string // a SQLite file path, or a postgres:// URL
	Mode      string // shown on the home page: "serve" or "dev"
	Clock     coord.Clock
	Logger    *slog.Logger
	Fee       ledger.BasisPoints
	LostAfter time.Duration
	Speedup   int
	Tick      time.Duration // real time between background passes
	Faucet    market.Money
	Passwords coord.PasswordHasher
	// Spot market: clearing interval (clock time) and fee.
	SpotInterval time.Duration
	SpotFee      ledger.BasisPoints
	Ranking      *match.Ranking // nil: the default weights and latencies
	// Several coordinators on one database: the leader lease's length and
	// how often heartbeats kept in memory are written (zero: defaults).
	LeaseTTL       time.Duration
	HeartbeatFlush time.Duration
	Node           string // name in the leader lease; "" = coord's default
	// Money rules (zero: the coordinator's defaults).
	SettlementDelay, DividendPeriod, UnstakeCooldown time.Duration
	MinWithdrawal                                    market.Money
	// FailpointFile, when set, arms fault injection for crash tests (see
	// failpointStore).
	FailpointFile string
	// Verification: hold machines off the market until they pass a check,
	// and accept fake GPUs (dev and tests).
	RequireVerification, AllowFakeGPUs bool
}

// coordinator is a started coordinator: store open, port bound.
type coordinator struct {
	Service *coord.Service
	URL     string // http://host:port
	store   coord.Store
	ln      net.Listener
	srv     *http.Server
	tick    time.Duration
	log     *slog.Logger
}

// startCoordinator opens the store and binds the listener, so that errors
// (a bad path, a port in use) surface before anything runs. Run serves.
func startCoordinator(ctx context.Context, cfg coordinatorConfig) (*coordinator, error) {
	store, err := openStore(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	if cfg.FailpointFile != "" {
		cfg.Logger.Warn("fault injection armed through "+failpointEnv, "file", cfg.FailpointFile)
		store = &failpointStore{Store: store, file: cfg.FailpointFile, log: cfg.Logger}
	}
	svc := coord.New(coord.Config{
		Store: store, Clock: cfg.Clock, Logger: cfg.Logger, Fee: cfg.Fee,
		LostAfter: cfg.LostAfter, Speedup: cfg.Speedup, Faucet: cfg.Faucet, Passwords: cfg.Passwords,
		SpotInterval: cfg.SpotInterval, SpotFee: cfg.SpotFee, Ranking: cfg.Ranking,
		LeaseTTL: cfg.LeaseTTL, HeartbeatFlush: cfg.HeartbeatFlush, Node: cfg.Node,
		SettlementDelay: cfg.SettlementDelay, DividendPeriod: cfg.DividendPeriod, UnstakeCooldown: cfg.UnstakeCooldown, MinWithdrawal: cfg.MinWithdrawal,
		RequireVerification: cfg.RequireVerification, AllowFakeGPUs: cfg.AllowFakeGPUs,
	})
	if err := svc.RebuildIndex(ctx); err != nil {
		store.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerCoordMetrics(reg, svc)
	reg.MustRegister(coordCollector{svc: svc, log: cfg.Logger})
	ui := webui.Handler(webui.Info{Mode: cfg.Mode, Stats: func() webui.Stats {
		st, err := svc.Stats(context.Background())
		if err != nil {
			cfg.Logger.Error("stats for home page", "err", err)
		}
		return webui.Stats{Machines: st.Machines, OnlineMachines: st.OnlineMachines, RunningInstances: st.RunningInstances}
	}, Faucet: cfg.Faucet > 0}, svc, cfg.Logger)
	handler := httpapi.New(svc, httpapi.Options{Logger: cfg.Logger, Registry: reg, UI: ui})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("listen on %s: %w (is another gpumarket running? pick another address with --listen)", cfg.Listen, err)
	}
	tick := cfg.Tick
	if tick <= 0 {
		tick = 5 * time.Second
	}
	return &coordinator{
		Service: svc,
		URL:     "http://" + ln.Addr().String(),
		store:   store,
		ln:      ln,
		srv:     &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second},
		tick:    tick,
		log:     cfg.Logger,
	}, nil
}

// Run serves HTTP and runs the background loops until ctx ends, then
// shuts down within a few seconds and closes the store.
func (c *coordinator) Run(ctx context.Context) error {
	defer c.store.Close()
	loopCtx, stopLoops := context.WithCancel(ctx)
	loopsDone := make(chan error, 1)
	go func() { loopsDone <- c.Service.Run(loopCtx, c.tick) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- c.srv.Serve(c.ln) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveDone:
		err = fmt.Errorf("http server: %w", err)
	}
	stopLoops()
	shutCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if serr := c.srv.Shutdown(shutCtx); serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
		c.log.Warn("http shutdown", "err", serr)
	}
	c.srv.Close() // ends long polls still open
	<-loopsDone
	return err
}

// openStore opens Postgres for a postgres:// URL and SQLite otherwise.
func openStore(ctx context.Context, db string) (coord.Store, error) {
	if strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://") {
		store, err := postgres.Open(ctx, db)
		if err != nil {
			return nil, err // it names the database
		}
		return store, nil
	}
	store, err := sqlite.Open(ctx, db)
	if err != nil {
		return nil, err // it names the database
	}
	return store, nil
}

// parseFee reads a percentage such as "10", "2.5" or "2.5%" into basis
// points.
func parseFee(s string) (ledger.BasisPoints, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "%")
	whole, frac, _ := strings.Cut(t, ".")
	if len(frac) > 2 {
		return 0, fmt.Errorf("fee %q has more than 2 decimals", s)
	}
	frac += strings.Repeat("0", 2-len(frac))
	w, err1 := strconv.Atoi(whole)
	f, err2 := strconv.Atoi(frac)
	bp := w*100 + f
	if err1 != nil || err2 != nil || w < 0 || bp > 10_000 {
		return 0, fmt.Errorf("fee %q must be a percentage between 0 and 100, like 10 or 2.5", s)
	}
	return ledger.BasisPoints(bp), nil
}

func newLogger(format string, level slog.Level, w interface{ Write([]byte) (int, error) }) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// registerCoordMetrics exposes leadership and heartbeat counts.
func registerCoordMetrics(reg *prometheus.Registry, svc *coord.Service) {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gpumarket_leader", Help: "1 while this coordinator holds the leader lease and runs the background loops, else 0."},
			func() float64 { return b2f(svc.Leadership().IsLeader) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gpumarket_leader_generation", Help: "Fencing generation of the leader lease as this coordinator last saw it."},
			func() float64 { return float64(svc.Leadership().Generation) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gpumarket_heartbeats_in_memory_total", Help: "Agent reports answered from memory, without a transaction."},
			func() float64 { return float64(svc.HeartbeatCounts().InMemory) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gpumarket_heartbeats_flushed_total", Help: "Heartbeats written to the store in batches."},
			func() float64 { return float64(svc.HeartbeatCounts().Flushed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gpumarket_heartbeat_flushes_total", Help: "Transactions that wrote batches of heartbeats."},
			func() float64 { return float64(svc.HeartbeatCounts().Flushes) }),
	)
}
