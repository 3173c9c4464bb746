package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestSystemPoolRewards: an admin creates a project token and a pool open
// to hosts that pays it; a host offers its machine to the pool with the
// CLI; an hour of a 2-GPU rental on it earns the host 2 DPN per GPU from
// the project's account, beside the platform token, and admin pool list
// shows what was paid, and that rewards stopped once the project ran dry.
func TestSystemPoolRewards(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and an agent")
	}
	onEachStore(t, testPoolRewards)
}

func testPoolRewards(t *testing.T, db string) {
	s := startSystem(t, db)
	ctx := s.ctx
	host := s.signup(t, "host@example.com", market.RoleHost)
	agent := s.startDeployAgent(t, host, "eu", "fra")
	renter := s.signup(t, "renter@example.com", market.RoleRenter)
	s.signup(t, "project@example.com", market.RoleRenter)
	must[market.Transfer](t, "deposit")(s.admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(100)}, "d-1"))

	gm := func(cfg string) func(args ...string) (string, string, int) {
		return func(args ...string) (string, string, int) {
			var out, errOut strings.Builder
			code := run(ctx, append([]string{"--config", cfg, "--coordinator", s.co.URL}, args...), strings.NewReader(""), &out, &errOut, nil)
			return out.String(), errOut.String(), code
		}
	}
	okAs := func(cli func(args ...string) (string, string, int)) func(args ...string) string {
		return func(args ...string) string {
			t.Helper()
			out, errOut, code := cli(args...)
			if code != 0 {
				t.Fatalf("gpumarket %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
			}
			return out
		}
	}
	adminCLI, hostCLI := gm(t.TempDir()+"/admin.json"), gm(t.TempDir()+"/host.json")
	admin, hostOK := okAs(adminCLI), okAs(hostCLI)
	admin("login", "--email", "admin@example.com", "--password", "admin-password")
	hostOK("login", "--email", "host@example.com", "--password", "password-1")

	admin("admin", "asset", "create", "DPN")
	must[market.Transfer](t, "fund the project")(s.admin.Deposit(ctx, market.DepositRequest{Email: "project@example.com", Asset: "DPN", Amount: market.Tokens(5)}, "d-2"))
	if _, errOut, code := adminCLI("admin", "pool", "create", "depin", "--share", "45%", "--reward-asset", "DPN"); code != 2 || !strings.Contains(errOut, "together") {
		t.Errorf("half a reward: exit %d, %q", code, errOut)
	}
	admin("admin", "pool", "create", "depin", "--share", "45%", "--reward-asset", "DPN", "--reward-per-gpu-hour", "2", "--reward-from", "project@example.com")

	m := string(agent.machine)
	if _, errOut, code := hostCLI("machine", "set", m, "--pool", "depin"); code == 0 || !strings.Contains(errOut, "not open to hosts") {
		t.Fatalf("joining a closed pool: exit %d, %q", code, errOut)
	}
	admin("admin", "pool", "set", "depin", "--open")
	if out := hostOK("machine", "set", m, "--pool", "depin"); !strings.Contains(out, "is in pool depin") {
		t.Errorf("machine set --pool: %q", out)
	}

	inst := must[market.Instance](t, "create")(renter.CreateInstance(ctx, market.CreateInstanceRequest{Machine: agent.machine, GPUs: 2,
		Command: []string{"/bin/sh", "-c", "while :; do sleep 1; done"}}))
	eventually(t, "the instance to run", func() (bool, error) {
		i, err := renter.Instance(ctx, inst.ID)
		return i.State == market.InstanceRunning, err
	})
	live := []*deployAgent{agent}
	s.tickFresh(t, host, time.Hour, live)

	dpnEarned := func() market.Money {
		var w market.Wallet
		if err := json.Unmarshal([]byte(hostOK("wallet", "show", "-o", "json")), &w); err != nil {
			t.Fatal(err)
		}
		for _, a := range w.Assets {
			if a.Asset == "DPN" {
				return a.Earnings
			}
		}
		return 0
	}
	if got := dpnEarned(); got != market.Tokens(4) {
		t.Fatalf("after an hour of 2 GPUs: host earned %s DPN, want 4", got)
	}
	var ps []market.PoolUsage
	if err := json.Unmarshal([]byte(admin("admin", "pool", "list", "-o", "json")), &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Reward == nil || ps[0].Reward.Paid != market.Tokens(4) || ps[0].Reward.Stopped != "" || !ps[0].Open || ps[0].Machines != 1 {
		t.Fatalf("admin pool list -o json = %+v; want depin, open, 1 machine, 4 DPN paid", ps)
	}

	// The project has 1 DPN left: 15 minutes; then rewards stop.
	s.tickFresh(t, host, 30*time.Minute, live)
	if got := dpnEarned(); got != market.Tokens(5) {
		t.Errorf("after the project ran dry: host earned %s DPN, want 5", got)
	}
	out := admin("admin", "pool", "list")
	if !strings.Contains(out, "5.00 DPN (stopped)") || !strings.Contains(out, "Rewards of pool depin stopped") {
		t.Errorf("admin pool list does not show the stop:\n%s", out)
	}
	if out := admin("admin", "pool", "show", "depin"); !strings.Contains(out, "Rewards stopped") {
		t.Errorf("admin pool show:\n%s", out)
	}
}
