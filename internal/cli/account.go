package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

type signupCmd struct {
	Email    string   `required:"" help:"Email address; it is also your login name."`
	Password string   `required:"" help:"Password, at least as long as the coordinator asks for."`
	Role     []string `name:"role" default:"renter" enum:"renter,host" help:"Role to hold; repeat for both (renter, host)."`
}

func (c *signupCmd) Help() string {
	return `Examples:
  gpumarket signup --email ada@example.com --password 'correct horse'
  gpumarket signup --email host@example.com --password 'battery staple' --role renter --role host`
}

func (c *signupCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	req := market.SignupRequest{Email: c.Email, Password: c.Password}
	for _, r := range c.Role {
		role, err := market.ParseRole(r)
		if err != nil {
			return usagef("%v", err)
		}
		req.Roles = append(req.Roles, role)
	}
	acct, err := api.Signup(ctx, req)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(acct)
	}
	fmt.Fprintf(env.Stdout, "Created account %s (%s) with roles %s. Next: gpumarket login --email %s\n",
		acct.Email, acct.ID, roles(acct.Roles), acct.Email)
	return nil
}

type loginCmd struct {
	Email    string `required:"" help:"Email address of the account."`
	Password string `help:"Password; when left out it is read from the terminal without echo, or as one line from standard input."`
	KeyName  string `name:"key-name" help:"Name of the API key this login creates (default: cli@HOSTNAME)."`
}

func (c *loginCmd) Help() string {
	return `Login creates an API key and saves it, with the coordinator URL, in the config
file (mode 0600). Later commands use it unless --token is given.

Examples:
  gpumarket login --email ada@example.com
  gpumarket --coordinator https://market.example.com login --email ada@example.com
  echo "$PASSWORD" | gpumarket login --email ada@example.com`
}

func (c *loginCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	pw := c.Password
	if pw == "" {
		if pw, err = readPassword(env.Stdin, env.Stderr); err != nil {
			return err
		}
	}
	name := c.KeyName
	if name == "" {
		host, _ := os.Hostname()
		name = "cli@" + dash(host)
	}
	res, err := api.WithToken("").Login(ctx, market.LoginRequest{Email: c.Email, Password: pw, KeyName: name})
	if err != nil {
		return err
	}
	next := *cfg
	next.Coordinator = api.BaseURL()
	next.Token = res.Key.Secret
	next.Email = res.Account.Email
	next.KeyID = res.Key.ID
	if err := env.SaveConfig(&next); err != nil {
		return err
	}
	if env.JSON() {
		res.Key.Secret = "" // it is in the config file; keep it off screens and logs
		return env.printJSON(res)
	}
	path, _ := env.ConfigPath()
	fmt.Fprintf(env.Stdout, "Logged in to %s as %s. API key %s saved in %s.\n",
		api.BaseURL(), res.Account.Email, res.Key.ID, path)
	return nil
}

// readPassword reads a password without echo from a terminal, else one line
// of in.
func readPassword(in io.Reader, prompt io.Writer) (string, error) {
	if f, ok := in.(*os.File); ok && isTerminal(f) {
		fmt.Fprint(prompt, "Password: ")
		pw, err := readNoEcho(f)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if pw == "" {
			return "", usagef("no password given")
		}
		return pw, nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read password from standard input: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", usagef("no password given; pass --password or write it to standard input")
	}
	return pw, nil
}

type logoutCmd struct{}

func (c *logoutCmd) Help() string {
	return `Revokes the API key saved by 'gpumarket login' and removes it from the config file.

Example:
  gpumarket logout`
}

func (c *logoutCmd) Run(ctx context.Context, env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	if cfg.Token == "" {
		fmt.Fprintln(env.Stdout, "Not logged in.")
		return nil
	}
	if cfg.KeyID != "" {
		api := apiclientFor(env, cfg)
		err := api.RevokeKey(ctx, cfg.KeyID)
		switch {
		case isCanceled(ctx, err):
			return err
		case err != nil && !market.IsKind(err, market.Unauthorized) && !market.IsKind(err, market.NotFound):
			fmt.Fprintf(env.Stderr, "warning: could not revoke key %s (%s); it stays valid until you revoke it with 'gpumarket key revoke %s'\n",
				cfg.KeyID, oneLine(err.Error()), cfg.KeyID)
		}
	}
	next := *cfg
	next.Token, next.KeyID = "", ""
	if err := env.SaveConfig(&next); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Logged out of %s.\n", dash(cfg.Coordinator))
	return nil
}

// apiclientFor is a client of the coordinator the config was saved for,
// with the config's key, whatever the flags say.
func apiclientFor(env *Env, cfg *Config) *apiclient.Client {
	u := cfg.Coordinator
	if u == "" {
		u = DefaultCoordinator
	}
	return apiclient.New(u, cfg.Token, env.hc)
}

type whoamiCmd struct{}

func (c *whoamiCmd) Help() string {
	return `Examples:
  gpumarket whoami
  gpumarket whoami -o json`
}

func (c *whoamiCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	acct, err := api.Me(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(acct)
	}
	t := newTable(env.Stdout)
	t.row("Email:", acct.Email)
	t.row("Account:", string(acct.ID))
	t.row("Roles:", roles(acct.Roles))
	t.row("Coordinator:", api.BaseURL())
	return t.flush()
}

type keyCmd struct {
	Create keyCreateCmd `cmd:"" help:"Create an API key; its secret is shown once."`
	List   keyListCmd   `cmd:"" help:"List your API keys."`
	Revoke keyRevokeCmd `cmd:"" help:"Revoke an API key."`
}

type keyCreateCmd struct {
	Name string `arg:"" help:"A name to recognise the key by, such as the machine that uses it."`
}

func (c *keyCreateCmd) Help() string {
	return `Examples:
  gpumarket key create ci-runner
  GPUMARKET_TOKEN=$(gpumarket key create ci -o json | jq -r .secret)`
}

func (c *keyCreateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	k, err := api.CreateKey(ctx, market.CreateKeyRequest{Name: c.Name})
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(k)
	}
	fmt.Fprintf(env.Stdout, "Created key %s (%s). Its secret is shown only now:\n%s\n", k.ID, k.Name, k.Secret)
	return nil
}

type keyListCmd struct{}

func (c *keyListCmd) Help() string {
	return `Example:
  gpumarket key list`
}

func (c *keyListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	keys, err := api.Keys(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(keys)
	}
	t := newTable(env.Stdout, "ID", "NAME", "PREFIX", "CREATED", "REVOKED")
	for _, k := range keys {
		t.row(string(k.ID), k.Name, k.Prefix, env.time(k.CreatedAt), env.timePtr(k.RevokedAt))
	}
	return t.flush()
}

type keyRevokeCmd struct {
	ID string `arg:"" help:"ID of the key (k-...), from 'gpumarket key list'."`
}

func (c *keyRevokeCmd) Help() string {
	return `Example:
  gpumarket key revoke k-0a1b2c3d4e5f`
}

func (c *keyRevokeCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	if err := api.RevokeKey(ctx, market.APIKeyID(c.ID)); err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(map[string]string{"revoked": c.ID})
	}
	fmt.Fprintf(env.Stdout, "Revoked key %s.\n", c.ID)
	return nil
}
