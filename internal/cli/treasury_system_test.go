package cli

import (
	"strings"
	"testing"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestSystemMoneyCLI drives staking, withdrawals and the ledger check
// through the command line against a real coordinator.
func TestSystemMoneyCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("system test")
	}
	onEachStore(t, testMoneyCLI)
}

func testMoneyCLI(t *testing.T, db string) {
	s := startSystem(t, db)
	gm := func(cfg string, args ...string) (string, int) {
		var out, errOut strings.Builder
		code := run(s.ctx, append([]string{"--config", cfg, "--coordinator", s.co.URL}, args...), strings.NewReader(""), &out, &errOut, nil)
		return out.String() + errOut.String(), code
	}
	ok := func(cfg string, args ...string) string {
		t.Helper()
		out, code := gm(cfg, args...)
		if code != 0 {
			t.Fatalf("gpumarket %s: exit %d: %s", strings.Join(args, " "), code, out)
		}
		return out
	}
	admin, user := t.TempDir()+"/admin.json", t.TempDir()+"/user.json"
	ok(admin, "login", "--email", "admin@example.com", "--password", "admin-password")
	ok(user, "signup", "--email", "ada@example.com", "--password", "password-1", "--role", "renter", "--role", "host")
	ok(user, "login", "--email", "ada@example.com", "--password", "password-1")
	ok(admin, "wallet", "deposit", "--email", "ada@example.com", "50", "--idempotency-key", "inv-1")
	ok(admin, "wallet", "deposit", "--email", "ada@example.com", "50", "--idempotency-key", "inv-1") // a retry: once

	ok(user, "stake", "add", "20", "--idempotency-key", "st-1")
	ok(user, "stake", "add", "20", "--idempotency-key", "st-1")
	if out := ok(user, "stake", "show"); !strings.Contains(out, "Staked:              20.00 GMT") {
		t.Errorf("stake show after one stake of 20 (sent twice):\n%s", out)
	}
	if out, code := gm(user, "stake", "add", "25", "--idempotency-key", "st-1"); code != 1 || !strings.Contains(out, "different stake request") {
		t.Errorf("key reused for another amount: exit %d: %s", code, out)
	}
	if out := ok(user, "stake", "remove", "5"); !strings.Contains(out, "Unstaked 5.00 GMT") {
		t.Errorf("stake remove: %s", out)
	}
	if out := ok(user, "stake", "statement"); !strings.Contains(out, "No dividends") {
		t.Errorf("stake statement before any period ended: %s", out)
	}
	if out, code := gm(user, "wallet", "withdraw", "1"); code != 1 || !strings.Contains(out, "you can withdraw 0.00 GMT now") {
		t.Errorf("withdraw without earnings: exit %d: %s", code, out)
	}
	if out := ok(user, "earnings"); !strings.Contains(out, "Withdrawable:") {
		t.Errorf("earnings: %s", out)
	}
	out := ok(admin, "admin", "ledger", "check")
	t.Logf("gpumarket admin ledger check:\n%s", out)
	if !strings.Contains(out, "ok      each transfer's entries sum to zero") || !strings.Contains(out, "0 of 10 invariants broken") {
		t.Errorf("admin ledger check:\n%s", out)
	}
	if out, code := gm(user, "admin", "ledger", "check"); code != 1 || !strings.Contains(out, "admin role") {
		t.Errorf("ledger check by a user: exit %d: %s", code, out)
	}
	if out := ok(admin, "admin", "withdrawals", "list"); !strings.HasPrefix(out, "ID") {
		t.Errorf("withdrawals list: %s", out)
	}
	w := must[market.Wallet](t, "wallet")(s.login(t, "ada@example.com", "password-1").Wallet(s.ctx))
	if w.Available != market.Tokens(30) {
		t.Errorf("available = %s, want 30 (50 deposited once, 20 staked once)", w.Available)
	}
	s.checkLedger(t)
}
