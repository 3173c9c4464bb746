package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
	if out := ok(user, "earnings"); !strings.Contains(out, "WITHDRAWABLE") || !strings.Contains(out, "GMT") {
		t.Errorf("earnings: %s", out)
	}

	// A project token paid to ada as a host: history and earnings show its
	// asset, and it is withdrawn once settled, like the platform token.
	ok(admin, "admin", "asset", "create", "DPN")
	project := t.TempDir() + "/project.json"
	ok(project, "signup", "--email", "project@example.com", "--password", "password-1", "--role", "renter")
	ok(project, "login", "--email", "project@example.com", "--password", "password-1")
	ok(admin, "wallet", "deposit", "--email", "project@example.com", "--asset", "DPN", "300")
	ada := must[market.Account](t, "me")(s.login(t, "ada@example.com", "password-1").Me(s.ctx))
	ok(project, "wallet", "pay", "--host", string(ada.ID), "--asset", "DPN", "250")
	if out := ok(user, "wallet", "history"); !strings.Contains(out, "250.00 DPN") {
		t.Errorf("wallet history does not show the DPN payment as DPN:\n%s", out)
	}
	var hist []market.HistoryEntry
	if err := json.Unmarshal([]byte(ok(user, "wallet", "history", "-o", "json")), &hist); err != nil || len(hist) == 0 || hist[0].Asset != "DPN" || hist[len(hist)-1].Asset != market.DefaultAsset {
		t.Errorf("wallet history -o json: newest %+v, %v; want the DPN payment first, GMT last", hist, err)
	}
	if out, code := gm(user, "wallet", "withdraw", "100", "--asset", "DPN"); code != 1 || !strings.Contains(out, "you can withdraw 0.00 DPN now; 250.00 more is pending") {
		t.Errorf("withdraw of unsettled DPN: exit %d: %s", code, out)
	}
	s.clock.Advance(25 * time.Hour) // past the settlement delay
	if out := ok(user, "wallet", "withdraw", "100", "--asset", "DPN"); !strings.Contains(out, "of 100.00 DPN queued") {
		t.Errorf("withdraw DPN: %s", out)
	}
	out := ok(user, "earnings")
	t.Logf("gpumarket earnings:\n%s", out)
	if !strings.Contains(out, "DPN    150.00") {
		t.Errorf("earnings lack the DPN row (150 left, 100 being withdrawn):\n%s", out)
	}
	var earn market.EarningsReport
	if err := json.Unmarshal([]byte(ok(user, "earnings", "-o", "json")), &earn); err != nil {
		t.Fatal(err)
	}
	wantAssets := []market.AssetEarnings{{Asset: market.DefaultAsset}, {Asset: "DPN", Total: market.Tokens(150), Withdrawable: market.Tokens(150), Withdrawing: market.Tokens(100)}}
	if diff := cmp.Diff(wantAssets, earn.Assets); diff != "" {
		t.Errorf("earnings per asset (-want +got):\n%s", diff)
	}
	ws := must[[]market.Withdrawal](t, "withdrawals")(s.admin.Withdrawals(s.ctx, true, market.WithdrawalPending))
	if len(ws) != 1 || ws[0].Asset != "DPN" {
		t.Fatalf("pending withdrawals = %+v; want the DPN one", ws)
	}
	if out := ok(admin, "admin", "withdrawals", "complete", string(ws[0].ID)); !strings.Contains(out, "DPN") {
		t.Errorf("complete the DPN withdrawal: %s", out)
	}

	out = ok(admin, "admin", "ledger", "check")
	t.Logf("gpumarket admin ledger check:\n%s", out)
	if !strings.Contains(out, "ok      each transfer's entries sum to zero") || !strings.Contains(out, "0 of 12 invariants broken") {
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

// TestSystemRefundAndStatementCLI rents GPUs through a real agent, bills
// minutes, refunds two of them with `admin refund` and reads the monthly
// statement as a table, CSV and JSON.
func TestSystemRefundAndStatementCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("system test")
	}
	onEachStore(t, testRefundAndStatementCLI)
}

func testRefundAndStatementCLI(t *testing.T, db string) {
	s := startSystem(t, db)
	ctx := s.ctx
	gm := func(cfg string, args ...string) (string, int) {
		var out, errOut strings.Builder
		code := run(ctx, append([]string{"--config", cfg, "--coordinator", s.co.URL}, args...), strings.NewReader(""), &out, &errOut, nil)
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
	host := s.signup(t, "host@example.com", market.RoleHost)
	renter := s.signup(t, "ada@example.com", market.RoleRenter)
	ok(user, "login", "--email", "ada@example.com", "--password", "password-1")
	ok(admin, "wallet", "deposit", "--email", "ada@example.com", "50", "--idempotency-key", "inv-1")

	s.startAgent(t, host, "1xRTX 4090")
	var m market.Machine
	eventually(t, "the agent's machine to register", func() (bool, error) {
		ms, err := host.Machines(ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price := market.Money(1_200_000) // 0.02 a minute
	must[market.Machine](t, "set price")(host.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(ctx, m.ID))
	inst := must[market.Instance](t, "create")(renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 1, Command: []string{"sleep", "300"}}))
	eventually(t, "the instance to run", func() (bool, error) {
		got, err := renter.Instance(ctx, inst.ID)
		return got.State == market.InstanceRunning, err
	})
	for range 5 {
		s.advance(t, host, m.ID, time.Minute)
	}

	if out, code := gm(admin, "admin", "refund", string(inst.ID), "--minutes", "1-2"); code != 2 || !strings.Contains(out, "--reason") {
		t.Errorf("refund without a reason: exit %d: %s", code, out)
	}
	if out, code := gm(admin, "admin", "refund", string(inst.ID), "--minutes", "3-1", "--reason", "x"); code != 2 || !strings.Contains(out, "FIRST-LAST") {
		t.Errorf("refund of minutes 3-1: exit %d: %s", code, out)
	}
	out := ok(admin, "admin", "refund", string(inst.ID), "--minutes", "1-2", "--reason", "host down 12:01-12:03", "--idempotency-key", "rf-1")
	if !strings.Contains(out, "0.04 GMT for 2 minutes (1 to 2)") || !strings.Contains(out, "0.036 GMT from the host") {
		t.Errorf("admin refund: %s", out)
	}
	ok(admin, "admin", "refund", string(inst.ID), "--minutes", "1-2", "--reason", "host down 12:01-12:03", "--idempotency-key", "rf-1") // a retry: once
	if out, code := gm(admin, "admin", "refund", string(inst.ID), "--minutes", "2-3", "--reason", "again"); code != 1 || !strings.Contains(out, "overlap") {
		t.Errorf("overlapping refund: exit %d: %s", code, out)
	}
	if out, code := gm(user, "admin", "refund", string(inst.ID), "--minutes", "4", "--reason", "me"); code != 1 || !strings.Contains(out, "admin") {
		t.Errorf("refund by a renter: exit %d: %s", code, out)
	}
	if out := ok(user, "wallet", "refunds"); !strings.Contains(out, "1-2") || !strings.Contains(out, "host down") {
		t.Errorf("wallet refunds: %s", out)
	}
	if out := ok(admin, "admin", "refund", "list", "-o", "json"); !strings.Contains(out, `"from_host": "0.036"`) {
		t.Errorf("admin refund list -o json: %s", out)
	}

	month := s.clock.Now().Format("2006-01")
	out = ok(user, "wallet", "statement", "--month", month)
	t.Logf("gpumarket wallet statement --month %s:\n%s", month, out)
	if !strings.Contains(out, "0-4") || !strings.Contains(out, "billed minutes") || !strings.Contains(out, "refund") {
		t.Errorf("statement table lacks the charge run 0-4 or the refund:\n%s", out)
	}
	csvOut := ok(user, "wallet", "statement", "--month", month, "--format", "csv")
	if !strings.Contains(csvOut, "month,asset,account,opening,in,out,closing") || !strings.Contains(csvOut, ",charge,GMT,user:") || !strings.Contains(csvOut, ",0,4,billed minutes") {
		t.Errorf("statement CSV:\n%s", csvOut)
	}
	var st market.WalletStatement
	if err := json.Unmarshal([]byte(ok(user, "wallet", "statement", "--month", month, "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	w := must[market.Wallet](t, "wallet")(renter.Wallet(ctx))
	for _, b := range st.Balances {
		if b.Account == market.Available(w.Account) && b.Closing != w.Available {
			t.Errorf("statement closes available at %s, the wallet shows %s", b.Closing, w.Available)
		}
	}
	if out, code := gm(user, "wallet", "statement", "--month", "11-2026"); code != 2 || !strings.Contains(out, "YYYY-MM") {
		t.Errorf("bad month: exit %d: %s", code, out)
	}
	if out := ok(admin, "admin", "ledger", "check"); !strings.Contains(out, " 0 of ") {
		t.Errorf("admin ledger check:\n%s", out)
	}
}
