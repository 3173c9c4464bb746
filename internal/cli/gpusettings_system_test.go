package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestSystemInstanceGPUSettings rents GPUs on demand from the CLI with a
// power limit and a core clock lock per GPU: the coordinator refuses values
// outside the machine's ranges, saying the range, and the agent applies
// the accepted ones to the (simulated) cards before the workload starts,
// as their readings show, and resets them after it ends.
func TestSystemInstanceGPUSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and an agent")
	}
	s := startSystem(t, t.TempDir()+"/gm.db")
	host := s.signup(t, "host@example.com", market.RoleHost)
	s.startAgent(t, host, "2xRTX 4090") // cards of 150-450 W
	var m market.Machine
	eventually(t, "registration", func() (bool, error) {
		ms, err := host.Machines(s.ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price := market.Tokens(1)
	must[market.Machine](t, "terms")(host.UpdateMachine(s.ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price,
		CoreLockMHz: &market.ClockRange{Min: 300, Max: 2500}}))
	must[market.Machine](t, "list")(host.ListMachine(s.ctx, m.ID))

	gm, ok := cliUser(t, s.ctx, s.co.URL)
	ok("signup", "--email", "renter@example.com", "--password", "password-1")
	ok("login", "--email", "renter@example.com", "--password", "password-1")
	must[market.Transfer](t, "deposit")(s.admin.Deposit(s.ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(5)}, "d"))

	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--power-limit", "500"}, "power limit 500 W is above this machine's maximum of 450 W; it allows 150 to 450 W"},
		{[]string{"--core-lock", "1800,2600"}, "GPU 2 of the instance: core clock lock 2600 MHz is outside this machine's allowed range of 300 to 2500 MHz"},
		{[]string{"--core-lock", "1800,1900", "--mem-lock", "1,2,3"}, "--core-lock has 2 values but another clock flag has 3"},
	} {
		args := append(append([]string{"instance", "create", string(m.ID), "--gpus", "2"}, tc.flags...), "--", "sleep", "300")
		if _, errOut, code := gm(args...); code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("instance create %s: exit %d, %q; want an error saying %q", strings.Join(tc.flags, " "), code, errOut, tc.want)
		}
	}

	out := ok("-o", "json", "instance", "create", string(m.ID), "--gpus", "2", "--power-limit", "300", "--core-lock", "1800,1950", "--", "sleep", "300")
	var inst market.Instance
	if err := json.Unmarshal([]byte(out), &inst); err != nil {
		t.Fatalf("instance create output %q: %v", out, err)
	}
	if inst.PowerLimitW != 300 || len(inst.GPUClocks) != 2 || inst.GPUClocks[1].CoreLockMHz != 1950 {
		t.Errorf("created instance %+v, want 300 W and core locks 1800 and 1950 MHz", inst)
	}
	// A busy simulated card reports its enforced limit and locked clock.
	applied := func(r market.MetricsReport) bool {
		if len(r.Latest) != 2 {
			return false
		}
		for i, g := range r.Latest {
			if g.PowerLimitW != 300 || g.CoreMHz != []int{1800, 1950}[i] {
				return false
			}
		}
		return true
	}
	var rep market.MetricsReport
	eventually(t, "the settings on the cards", func() (bool, error) {
		var err error
		rep, err = host.MachineMetrics(s.ctx, m.ID, time.Hour)
		return applied(rep), err
	})
	ok("instance", "stop", string(inst.ID))
	eventually(t, "the cards back at their defaults", func() (bool, error) {
		r, err := host.MachineMetrics(s.ctx, m.ID, time.Hour)
		if err != nil || len(r.Latest) != 2 {
			return false, err
		}
		return r.Latest[0].PowerLimitW == 450 && r.Latest[1].PowerLimitW == 450, nil
	})
}
