package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/gpu/nvidiasmi"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/docker"
)

// Demo accounts that dev creates.
const (
	devPassword    = "gpumarket-demo"
	devRenterEmail = "renter@demo.gpumarket.dev"
	devHostEmail   = "host@demo.gpumarket.dev"
	devAdminEmail  = "admin@demo.gpumarket.dev"
	devFakeGPUs    = "4xRTX 4090"
)

var devDemoTokens = market.Tokens(1000)

type devCmd struct {
	Listen       string        `default:"127.0.0.1:8080" help:"Address to serve on; port 0 picks a free one."`
	Data         string        `type:"path" placeholder:"DIR" help:"Keep the database and agent state in DIR (default: a temporary directory removed at exit)."`
	Speedup      int           `default:"1" help:"Run the coordinator's clock N times faster, so billing minutes pass in 60/N seconds."`
	FakeGPUs     string        `name:"fake-gpus" placeholder:"SPEC" help:"Simulated GPUs for the agent (default: the machine's NVIDIA GPUs, else \"${dev_fake_gpus}\")."`
	Fee          string        `default:"10" help:"Platform fee on on-demand charges, in percent."`
	SpotInterval time.Duration `default:"1m" help:"Spot billing interval, in clock time (so 1s of real time at --speedup 60)."`
	Runner       string        `default:"process" enum:"process,docker" help:"How the agent runs workloads: process (child processes) or docker (containers; needs a Docker daemon and local images)."`
	Verbose      bool          `short:"v" help:"Log debug messages."`
}

func (c *devCmd) Help() string {
	return `Runs a coordinator and one host agent in one process, on a fresh SQLite
database at 127.0.0.1, with demo renter, host and admin accounts. The agent
talks HTTP to the coordinator like a remote one would. Ctrl-C stops both.

Examples:
  gpumarket dev
  gpumarket dev --speedup 60 --fake-gpus "8xH100 80GB" --data ./demo`
}

// speedClock runs speedup times faster than the wall clock from start.
type speedClock struct {
	start   time.Time
	speedup int
}

func (c speedClock) Now() time.Time {
	return c.start.Add(time.Since(c.start) * time.Duration(c.speedup))
}

func (c *devCmd) Run(ctx context.Context, env *Env) error {
	if c.Speedup < 1 || c.Speedup > 3600 {
		return usagef("--speedup %d must be between 1 and 3600", c.Speedup)
	}
	fee, err := parseFee(c.Fee)
	if err != nil {
		return usagef("--fee: %v", err)
	}
	dir := c.Data
	if dir == "" {
		if dir, err = os.MkdirTemp("", "gpumarket-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create --data dir: %w", err)
	}
	fakeGPUs := c.FakeGPUs
	if fakeGPUs == "" {
		if _, err := nvidiasmi.Discover(ctx, nvidiasmi.Exec); err != nil {
			fakeGPUs = devFakeGPUs
		}
	}
	level := slog.LevelWarn
	if c.Verbose {
		level = slog.LevelDebug
	}
	log := newLogger("text", level, env.Stderr)

	tick := 5 * time.Second / time.Duration(c.Speedup)
	co, err := startCoordinator(ctx, coordinatorConfig{
		Listen: c.Listen, DB: filepath.Join(dir, "gpumarket.db"), Mode: "dev",
		Clock: speedClock{start: time.Now(), speedup: c.Speedup}, Speedup: c.Speedup,
		Logger: log, Fee: fee, Tick: max(tick, 100*time.Millisecond), Faucet: market.Tokens(100),
		SpotInterval: c.SpotInterval,
		// Fake GPUs are verified at CPU speed; real ones need a GPU
		// solver the agent does not have yet, so dev on a GPU machine
		// lists them unverified.
		RequireVerification: fakeGPUs != "", AllowFakeGPUs: true,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	coordErr := make(chan error, 1)
	coordCtx, stopCoord := context.WithCancel(context.Background())
	defer stopCoord()
	wg.Go(func() { coordErr <- co.Run(coordCtx) })
	defer func() {
		stopCoord()
		wg.Wait()
	}()

	demo, err := setupDemo(ctx, co.Service)
	if err != nil {
		return fmt.Errorf("create demo accounts: %w", err)
	}
	hostAPI := apiclient.New(co.URL, demo.hostKey, nil)
	o := agentOptions{
		StateDir: filepath.Join(dir, "agent"), FakeGPUs: fakeGPUs, Client: hostAPI, Logger: log,
		HeartbeatInterval: 5 * time.Second,
	}
	if c.Runner == "docker" {
		// Published ports on the agent's default range, reached on loopback.
		ports := market.PortRange{First: 40000, Last: 40999}
		run, err := docker.New(ctx, docker.Options{NoGPUDevices: fakeGPUs != "", PidsLimit: 4096, Logger: log, PortRange: ports, PublicHost: "127.0.0.1"})
		if err != nil {
			return fmt.Errorf("--runner docker: %w", err)
		}
		defer run.Close()
		o.Runner, o.RunnerName, o.PortRange = run, "docker", ports
	}
	if o.Queue, err = serveQueue(ctx, "127.0.0.1:0", log); err != nil { // deployment.go
		return err
	}
	ag, err := newAgent(ctx, o)
	if err != nil {
		return err
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(ctx) }()

	m, err := listDemoMachine(ctx, co.Service, demo.host)
	if err != nil {
		cancel()
		<-agentDone
		return err
	}
	printDevBanner(env, co.URL, dir, c, m, demo)

	select {
	case <-ctx.Done():
	case err = <-coordErr:
		cancel()
		<-agentDone
		return err
	case err = <-agentDone:
		return err
	}
	fmt.Fprintln(env.Stderr, "\nstopping: agent first (it stops its workloads), then the coordinator")
	err = <-agentDone
	stopCoord()
	if cerr := <-coordErr; cerr != nil && !errors.Is(cerr, context.Canceled) {
		err = errors.Join(err, cerr)
	}
	return err
}

type demoAccounts struct {
	host, renter market.Account
	hostKey      string
	renterKey    string
}

// setupDemo creates the demo accounts (or finds them in a kept --data
// database), gives the renter tokens once, and makes keys for the agent and
// the renter.
func setupDemo(ctx context.Context, svc *coord.Service) (demoAccounts, error) {
	var d demoAccounts
	accounts := map[string][]market.Role{
		devAdminEmail:  {market.RoleAdmin},
		devHostEmail:   {market.RoleHost},
		devRenterEmail: {market.RoleRenter},
	}
	for email, roles := range accounts {
		if _, err := svc.CreateAccount(ctx, email, devPassword, roles); err != nil && !market.IsKind(err, market.Conflict) {
			return d, err
		}
	}
	login := func(email string) (market.Account, string, error) {
		res, err := svc.Login(ctx, market.LoginRequest{Email: email, Password: devPassword, KeyName: "dev"})
		return res.Account, res.Key.Secret, err
	}
	admin, _, err := login(devAdminEmail)
	if err != nil {
		return d, err
	}
	if d.host, d.hostKey, err = login(devHostEmail); err != nil {
		return d, err
	}
	if d.renter, d.renterKey, err = login(devRenterEmail); err != nil {
		return d, err
	}
	// The key makes the demo deposit happen once per database.
	_, err = svc.Deposit(ctx, admin, "dev-demo-renter", market.DepositRequest{Account: d.renter.ID, Amount: devDemoTokens, Memo: "demo tokens"})
	return d, err
}

// listDemoMachine waits for the agent's machine to register, prices it and
// lists it for rent.
func listDemoMachine(ctx context.Context, svc *coord.Service, host market.Account) (market.Machine, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		ms, err := svc.Machines(ctx, host, false)
		if err != nil {
			return market.Machine{}, err
		}
		if len(ms) > 0 {
			m := ms[0]
			if m.PricePerGPUHour == 0 {
				price := market.Money(500_000)
				if _, err := svc.UpdateMachine(ctx, host, m.ID, market.MachineUpdate{PricePerGPUHour: &price}); err != nil {
					return m, err
				}
			}
			return svc.SetListed(ctx, host, m.ID, true)
		}
		if time.Now().After(deadline) {
			return market.Machine{}, errors.New("the dev agent did not register within 15s; run with -v to see why")
		}
		select {
		case <-ctx.Done():
			return market.Machine{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func printDevBanner(env *Env, url, dir string, c *devCmd, m market.Machine, d demoAccounts) {
	w := env.Stdout
	fmt.Fprintf(w, "gpumarket dev is running at %s\n\n", url)
	fmt.Fprintf(w, "  web UI      %s/\n  API         %s/api/v1/openapi.json\n  data        %s\n", url, url, dir)
	if c.Speedup > 1 {
		fmt.Fprintf(w, "  clock       %dx faster: a billing minute takes %s\n", c.Speedup, time.Minute/time.Duration(c.Speedup))
	}
	fmt.Fprintf(w, "  machine     %s with %d GPUs (%s) at %s %s per GPU-hour, listed\n\n", m.ID, len(m.GPUs), m.GPUs[0].Model, m.PricePerGPUHour, market.DefaultAsset)
	fmt.Fprintf(w, "Demo accounts (password %q):\n", devPassword)
	fmt.Fprintf(w, "  renter  %s  (%s %s to spend)\n  host    %s\n  admin   %s\n\n", devRenterEmail, devDemoTokens, market.DefaultAsset, devHostEmail, devAdminEmail)
	fmt.Fprintf(w, "Try, in another terminal:\n")
	fmt.Fprintf(w, "  gpumarket login --coordinator %s --email %s --password %s\n", url, devRenterEmail, devPassword)
	fmt.Fprintf(w, "  gpumarket offer search\n")
	if m.Runner == "docker" {
		fmt.Fprintf(w, "  gpumarket instance create %s --gpus 1 --image IMAGE -- COMMAND   (a locally built image)\n", m.ID)
	} else {
		fmt.Fprintf(w, "  gpumarket instance create %s --gpus 1 -- sh -c 'echo my GPUs: $CUDA_VISIBLE_DEVICES; sleep 600'\n", m.ID)
	}
	fmt.Fprintf(w, "then 'gpumarket instance logs -f ID', 'gpumarket wallet show' and 'gpumarket instance stop ID'.\n")
	fmt.Fprintf(w, "The renter's API key, for scripts: GPUMARKET_URL=%s GPUMARKET_TOKEN=%s\n\n", url, d.renterKey)
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n")
}
