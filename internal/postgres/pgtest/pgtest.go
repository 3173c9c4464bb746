// Package pgtest gives tests a Postgres database: a fresh one per test on
// the server named by GPUMARKET_TEST_POSTGRES (./scripts/test starts one).
// It is for tests only.
package pgtest

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the pgx driver for database/sql

	"github.com/gpumarket/gpumarket/internal/market"
)

// EnvURL names the variable that points the tests at a Postgres server:
// a URL (postgres://user@127.0.0.1:5432/postgres) whose user may create
// databases. ./scripts/test starts a throwaway server and sets it.
const EnvURL = "GPUMARKET_TEST_POSTGRES"

// ServerURL returns the test server's URL, or skips the test when there is
// none. In CI (CI=true) a missing server fails the test instead: CI must
// run the Postgres suite.
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	switch {
	case u != "":
		return u
	case testing.Short():
		t.Skipf("SKIPPING POSTGRES: -short, and %s is not set", EnvURL)
	case os.Getenv("CI") == "true":
		t.Fatalf("%s is not set, but CI must run the Postgres store suite: run ./scripts/test, which starts a throwaway Postgres, or set %s to a server's URL", EnvURL, EnvURL)
	default:
		t.Skipf("SKIPPING POSTGRES: %s is not set; run ./scripts/test (it starts a throwaway Postgres) or point %s at a server whose user may create databases", EnvURL, EnvURL)
	}
	return ""
}

// FreshDatabase creates an empty database on the test server, drops it when
// the test ends, and returns its URL.
func FreshDatabase(t testing.TB) string {
	t.Helper()
	server := ServerURL(t)
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s must be a postgres:// URL: %q (%v)", EnvURL, server, err)
	}
	admin, err := sql.Open("pgx", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	name := "gpumarket_test_" + strings.ToLower(market.NewID(""))
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, name)
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database on %s: %v", u.Redacted(), err)
	}
	t.Cleanup(func() {
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
