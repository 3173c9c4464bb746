// Package cli is gpumarket's command line: the user verbs (login, offer
// search, instance create, ...) and the process roles (serve, agent, dev).
// It is the only package that wires adapters together, so it may import every
// other package of gpumarket; nothing may import it but cmd/gpumarket.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

// CLI is the root of the command tree. Each command is a struct with a
// Run method; kong injects into Run any of these bindings:
//
//	context.Context      cancelled on SIGINT/SIGTERM
//	*Env                 stdout, stderr, stdin, output format, config, client
//	*Globals             the global flags as given
//	*Config              the loaded config file (loaded on first use)
//	*apiclient.Client    a client of --coordinator with --token (built on first use)
//
// For example: func (c *fooCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error.
type CLI struct {
	Globals

	// Accounts.
	Signup signupCmd `cmd:"" group:"Account" help:"Create an account."`
	Login  loginCmd  `cmd:"" group:"Account" help:"Log in and store an API key in the config file."`
	Logout logoutCmd `cmd:"" group:"Account" help:"Revoke the stored API key and forget it."`
	Whoami whoamiCmd `cmd:"" group:"Account" help:"Show the account of the current credential."`
	Key    keyCmd    `cmd:"" group:"Account" help:"Manage API keys."`

	// Renting and hosting.
	Offer    offerCmd    `cmd:"" group:"Renting" help:"Search machines with free GPUs."`
	Instance instanceCmd `cmd:"" group:"Renting" help:"Rent GPUs and manage instances."`
	Bid      bidCmd      `cmd:"" group:"Renting" help:"Bid for spot (interruptible) GPUs."`
	Auction  auctionCmd  `cmd:"" group:"Renting" help:"Inspect and replay spot clearing rounds."`
	Machine  machineCmd  `cmd:"" group:"Hosting" help:"Manage your machines."`
	Earnings earningsCmd `cmd:"" group:"Hosting" help:"Show what your machines earned."`

	// Deployments (deployment.go).
	Deployment deploymentCmd `cmd:"" group:"Renting" help:"Run replicated services: placement, scaling, rolling updates."`

	// Money and records.
	Wallet walletCmd `cmd:"" group:"Money" help:"Show balances, history, deposits, withdrawals."`
	Stake  stakeCmd  `cmd:"" group:"Money" help:"Stake tokens for a share of the platform fees."`
	Admin  adminCmd  `cmd:"" group:"Money" help:"Admin tools: ledger check, withdrawal queue."`
	Events eventsCmd `cmd:"" group:"Money" help:"List events of your instances and machines."`

	// Process roles.
	Serve serveCmd `cmd:"" group:"Processes" help:"Run the coordinator (API, agent API, web UI, billing)."`
	Agent agentCmd `cmd:"" group:"Processes" help:"Run the host agent on this GPU machine."`
	Dev   devCmd   `cmd:"" group:"Processes" help:"Run a coordinator and an agent in one process, with demo accounts."`
	// Tools.
	Loadtest loadtestCmd `cmd:"" group:"Processes" help:"Simulate many agents and renters against a coordinator; print throughput and latencies."`
}

// Globals are the flags every command accepts.
type Globals struct {
	Coordinator string `name:"coordinator" env:"GPUMARKET_URL" placeholder:"URL" help:"Coordinator URL (default: from the config file, else ${default_url})."`
	Token       string `name:"token" env:"GPUMARKET_TOKEN" placeholder:"SECRET" help:"API key secret (default: from the config file)."`
	Output      string `name:"output" short:"o" enum:"table,json" default:"table" help:"Output format: table or json."`
	ConfigPath  string `name:"config" placeholder:"PATH" type:"path" help:"Config file (default: ${default_config})."`
}

// DefaultCoordinator is used when neither a flag, the environment nor the
// config file names a coordinator.
const DefaultCoordinator = "http://127.0.0.1:8080"

// Main runs the command line args and returns the process exit status:
// 0 on success, 1 when the command failed, 2 for usage errors.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, os.Stdin, stdout, stderr, nil)
}

// exitPanic carries kong's exit status (after --help) out of kong's parser,
// which would otherwise call os.Exit.
type exitPanic int

// run is Main with stdin and the Env hooks tests need.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, tweak func(*Env)) (code int) {
	var root CLI
	env := &Env{Stdin: stdin, Stdout: stdout, Stderr: stderr, globals: &root.Globals,
		loc: time.Local, followWait: 5 * time.Second}
	if tweak != nil {
		tweak(env)
	}
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(exitPanic)
			if !ok {
				panic(r)
			}
			code = int(c)
		}
	}()

	parser, err := kong.New(&root,
		kong.Name("gpumarket"),
		kong.Description("gpumarket: rent and host GPU compute.\n\nStart with 'gpumarket signup', 'gpumarket login' and 'gpumarket offer search'."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(exitPanic(c)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{"default_url": DefaultCoordinator, "default_config": defaultConfigHelp(), "dev_fake_gpus": devFakeGPUs},
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(env, &root.Globals),
		kong.BindSingletonProvider(func() (*Config, error) { return env.Config() }),
		kong.BindSingletonProvider(func() (*apiclient.Client, error) { return env.Client() }),
	)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err) // a bug in the command tree
		return 1
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		hint := "gpumarket --help"
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil && pe.Context.Selected() != nil {
			hint = "gpumarket " + pe.Context.Selected().Path() + " --help"
		}
		fmt.Fprintf(stderr, "error: %s (see '%s')\n", oneLine(err.Error()), hint)
		return 2
	}
	if err := kctx.Run(); err != nil {
		return report(stderr, err)
	}
	return 0
}

// report prints err as the one line a user sees and returns the exit status.
func report(stderr io.Writer, err error) int {
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "error: %s\n", oneLine(ue.Error()))
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "error: interrupted")
		return 1
	}
	fmt.Fprintf(stderr, "error: %s\n", oneLine(err.Error()))
	return 1
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// usageError is a mistake in the command line found after parsing; it
// exits with status 2 like kong's own parse errors.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// isCanceled reports whether err only says that ctx was cancelled.
func isCanceled(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// asset is the token name printed next to amounts that carry no asset.
const asset = market.DefaultAsset
