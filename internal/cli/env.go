package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Env is what every command shares: the streams, the global flags, the
// config file and a client, the last two built on first use so that commands
// that need neither (serve, agent, --help) never touch them.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	globals *Globals

	loc        *time.Location // for printing times
	followWait time.Duration  // long-poll wait of logs -f
	hc         *http.Client   // nil: apiclient's default

	cfg    *Config
	cfgErr error
	client *apiclient.Client
}

// Config is the CLI's config file. It holds a secret, so it is written
// with mode 0600.
type Config struct {
	Coordinator string          `json:"coordinator,omitempty"`
	Token       string          `json:"token,omitempty"`
	Email       string          `json:"email,omitempty"`
	KeyID       market.APIKeyID `json:"key_id,omitempty"`
}

// JSON reports whether output is -o json.
func (e *Env) JSON() bool { return e.globals.Output == "json" }

// ConfigPath returns the config file's path: --config, else
// os.UserConfigDir()/gpumarket/config.json.
func (e *Env) ConfigPath() (string, error) {
	if e.globals.ConfigPath != "" {
		return e.globals.ConfigPath, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("cannot find your config directory (%v); pass --config PATH", err)
	}
	return filepath.Join(dir, "gpumarket", "config.json"), nil
}

func defaultConfigHelp() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "$XDG_CONFIG_HOME/gpumarket/config.json"
	}
	return filepath.Join(dir, "gpumarket", "config.json")
}

// Config loads the config file once. A missing file is an empty config.
func (e *Env) Config() (*Config, error) {
	if e.cfg != nil || e.cfgErr != nil {
		return e.cfg, e.cfgErr
	}
	e.cfg, e.cfgErr = e.loadConfig()
	return e.cfg, e.cfgErr
}

func (e *Env) loadConfig() (*Config, error) {
	path, err := e.ConfigPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("config file %s is not valid JSON (%v); fix or delete it", path, err)
	}
	return &c, nil
}

// SaveConfig writes c atomically with mode 0600 and makes it the loaded config.
func (e *Env) SaveConfig(c *Config) error {
	path, err := e.ConfigPath()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	f, err := os.CreateTemp(dir, ".config-*.json") // created with mode 0600
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	e.cfg, e.cfgErr = c, nil
	return nil
}

// Coordinator returns the coordinator URL: --coordinator or GPUMARKET_URL,
// else the config file's, else DefaultCoordinator.
func (e *Env) Coordinator() (string, error) {
	u := e.globals.Coordinator
	if u == "" {
		cfg, err := e.Config()
		if err != nil {
			return "", err
		}
		u = cfg.Coordinator
	}
	if u == "" {
		u = DefaultCoordinator
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return "", usagef("coordinator URL %q is not valid; write it like %s", u, DefaultCoordinator)
	}
	return u, nil
}

// Token returns the API key secret: --token or GPUMARKET_TOKEN, else the
// config file's when it was saved for the same coordinator (so a stored
// secret is never sent to another server).
func (e *Env) Token() (string, error) {
	if e.globals.Token != "" {
		return e.globals.Token, nil
	}
	cfg, err := e.Config()
	if err != nil {
		return "", err
	}
	u, err := e.Coordinator()
	if err != nil {
		return "", err
	}
	if cfg.Coordinator != "" && cfg.Coordinator != u {
		return "", nil
	}
	return cfg.Token, nil
}

// Client returns the client of the coordinator, built on first use.
func (e *Env) Client() (*apiclient.Client, error) {
	if e.client != nil {
		return e.client, nil
	}
	u, err := e.Coordinator()
	if err != nil {
		return nil, err
	}
	tok, err := e.Token()
	if err != nil {
		return nil, err
	}
	e.client = apiclient.New(u, tok, e.hc)
	return e.client, nil
}
