package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/gpu/fake"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// End-to-end verification over real HTTP: a coordinator that requires
// verification, the real agent (honest), and hand-rolled agents that lie.

func verifying(c *coordinatorConfig) { c.RequireVerification, c.AllowFakeGPUs = true, true }

// gmAs runs the gpumarket CLI against s as the user whose config file is cfg.
func (s *system) gmAs(cfg string, args ...string) (string, string, int) {
	var out, errOut strings.Builder
	code := run(s.ctx, append([]string{"--config", cfg, "--coordinator", s.co.URL}, args...), strings.NewReader(""), &out, &errOut, nil)
	return out.String(), errOut.String(), code
}

// spoofer is an agent that talks the agent API by hand, so it can lie.
type spoofer struct {
	t    *testing.T
	s    *system
	host *apiclient.Client
	hw   market.Hardware
	m    market.Machine
}

func newSpoofer(t *testing.T, s *system, host *apiclient.Client, fp, spec string) *spoofer {
	t.Helper()
	gpus, err := fake.Parse(spec, fp)
	if err != nil {
		t.Fatal(err)
	}
	return &spoofer{t: t, s: s, host: host, hw: market.Hardware{Fingerprint: fp, Hostname: fp, Runner: "process", CPUCores: 4, RAMMiB: 8192, GPUs: gpus}}
}

func (a *spoofer) register() error {
	m, err := a.host.Register(a.s.ctx, a.hw)
	a.m = m
	return err
}

// challenge fetches the desired state and returns its challenge.
func (a *spoofer) challenge() market.Challenge {
	a.t.Helper()
	ds, err := a.host.Desired(a.s.ctx, a.m.ID, -1, 0)
	if err != nil {
		a.t.Fatal(err)
	}
	if ds.Challenge == nil {
		a.t.Fatal("no challenge in the desired state")
	}
	return *ds.Challenge
}

type answer struct {
	ch   market.Challenge
	sols map[string]*verify.Solution
}

func (a *spoofer) solve(ch market.Challenge) answer {
	a.t.Helper()
	ans := answer{ch: ch, sols: map[string]*verify.Solution{}}
	for _, g := range ch.GPUs {
		sol, err := verify.CPUSolver{}.Solve(a.s.ctx, verify.TaskOf(ch.Nonce, g))
		if err != nil {
			a.t.Fatal(err)
		}
		ans.sols[g.UUID] = sol
	}
	return ans
}

func (ans answer) commit() market.ChallengeCommit {
	var cm market.ChallengeCommit
	for _, g := range ans.ch.GPUs {
		cm.Roots = append(cm.Roots, market.GPURoot{UUID: g.UUID, Root: ans.sols[g.UUID].Root()})
	}
	return cm
}

func (ans answer) proofs(t *testing.T, samples market.ChallengeSamples) market.ChallengeProofs {
	var pr market.ChallengeProofs
	for _, g := range samples.GPUs {
		gp := market.GPUProofs{UUID: g.UUID}
		for _, tile := range g.Tiles {
			p, err := ans.sols[g.UUID].Prove(tile)
			if err != nil {
				t.Fatal(err)
			}
			gp.Proofs = append(gp.Proofs, p)
		}
		pr.GPUs = append(pr.GPUs, gp)
	}
	return pr
}

// respond commits ans to check and proves it, with edit applied to the
// proofs first; it returns the finished check or the commitment's error.
func (a *spoofer) respond(check market.CheckID, ans answer, edit func(*market.ChallengeProofs)) (market.Check, error) {
	samples, err := a.host.CommitChallenge(a.s.ctx, a.m.ID, check, ans.commit())
	if err != nil {
		return market.Check{}, err
	}
	pr := ans.proofs(a.t, samples)
	if edit != nil {
		edit(&pr)
	}
	return a.host.ProveChallenge(a.s.ctx, a.m.ID, check, pr)
}

// waitVerified waits until a machine's latest check passed and it is not
// held off the market.
func waitVerified(t *testing.T, s *system, c *apiclient.Client, id market.MachineID) {
	t.Helper()
	eventually(t, "machine "+string(id)+" to pass verification", func() (bool, error) {
		v, err := c.MachineVerification(s.ctx, id)
		return v.Verified && !v.Unverified, err
	})
}

func wantFailed(t *testing.T, what string, c market.Check, err error, substr string) {
	t.Helper()
	msg := c.Failure
	if err != nil {
		msg = err.Error()
	} else if c.State != market.CheckFailed {
		t.Fatalf("%s: check %s is %s, want failed", what, c.ID, c.State)
	}
	if !strings.Contains(msg, substr) {
		t.Fatalf("%s: %q does not say %q", what, msg, substr)
	}
}

// TestSystemVerifyHonestAgent: the real agent passes its first check and
// every check asked for with machine verify; machine show prints them
// with the reliability terms.
func TestSystemVerifyHonestAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and an agent")
	}
	s := startSystem(t, t.TempDir()+"/gm.db", verifying)
	host := s.signup(t, "host@example.com", market.RoleHost)
	renter := s.signup(t, "renter@example.com", market.RoleRenter)
	s.startAgent(t, host, "2xRTX 4090")
	var m market.Machine
	eventually(t, "registration", func() (bool, error) {
		ms, err := host.Machines(s.ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price := market.Money(500_000)
	must[market.Machine](t, "price")(host.UpdateMachine(s.ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(s.ctx, m.ID))
	waitVerified(t, s, host, m.ID)
	if got := must[market.Machine](t, "machine")(host.Machine(s.ctx, m.ID)); got.Status != market.MachineListed {
		t.Fatalf("status %s after passing", got.Status)
	}
	// The verdict is committed before the coordinator refreshes the offer
	// index (afterCheck), so a search may come in between: the machine is
	// on offer once the refresh lands.
	var offers []market.Offer
	eventually(t, "the verified machine on offer", func() (bool, error) {
		var err error
		offers, err = renter.Offers(s.ctx, market.OfferFilter{})
		return len(offers) == 1, err
	})
	if t.Failed() {
		t.Fatalf("verified machine not on offer: %v", offers)
	}

	hostCfg := t.TempDir() + "/host.json"
	if _, errOut, code := s.gmAs(hostCfg, "login", "--email", "host@example.com", "--password", "password-1"); code != 0 {
		t.Fatal(errOut)
	}
	// An honest agent passes every time.
	for i := range 5 {
		out, errOut, code := s.gmAs(hostCfg, "-o", "json", "machine", "verify", string(m.ID), "--wait", "10s")
		var c market.Check
		if code != 0 || json.Unmarshal([]byte(out), &c) != nil {
			t.Fatalf("machine verify: exit %d %s%s", code, out, errOut)
		}
		if c.State != market.CheckPassed || c.Cause != market.CheckRequested || len(c.GPUs) != 2 || c.GPUs[1].Rate <= 0 {
			t.Fatalf("check %d: %+v", i, c)
		}
	}
	// A bond, through the CLI and the ledger.
	must[market.Transfer](t, "deposit")(s.admin.Deposit(s.ctx, market.DepositRequest{Email: "host@example.com", Amount: market.Tokens(20)}, "host-dep"))
	if out, errOut, code := s.gmAs(hostCfg, "machine", "bond", string(m.ID), "--per-gpu", "5"); code != 0 || !strings.Contains(out, "10.00") {
		t.Fatalf("machine bond: exit %d %s%s", code, out, errOut)
	}
	if _, errOut, code := s.gmAs(hostCfg, "machine", "bond", string(m.ID), "--per-gpu", "50"); code == 0 || !strings.Contains(errOut, "deposit first") {
		t.Errorf("a bond beyond the balance: exit %d %q", code, errOut)
	}
	s.checkLedger(t)
	out, errOut, code := s.gmAs(hostCfg, "machine", "show", string(m.ID))
	if code != 0 {
		t.Fatal(errOut)
	}
	for _, want := range []string{"Bond:", "5.00 GMT per GPU", "Verification:", "verified (the latest check passed)", "Reliability:", "fault factor:", "formula:", "requested", "registered", "passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("machine show lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = s.gmAs(hostCfg, "-o", "json", "machine", "show", string(m.ID))
	var shown struct {
		ID           market.MachineID           `json:"id"`
		Verification market.MachineVerification `json:"verification"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil || shown.ID != m.ID || len(shown.Verification.Checks) != 6 || shown.Verification.Reliability.Score <= 0 {
		t.Fatalf("machine show -o json: %v %+v", err, shown)
	}
	if strings.Contains(out, `"secret"`) {
		t.Error("a check's secret is shown")
	}
	// A renter sees a listed machine's evidence too (it is public).
	if v, err := renter.MachineVerification(s.ctx, m.ID); err != nil || len(v.Checks) != 6 {
		t.Errorf("renter's view: %v, %d checks", err, len(v.Checks))
	}
	// Bad input: an unknown machine.
	if _, errOut, code := s.gmAs(hostCfg, "machine", "verify", "m-nope"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Errorf("verify of an unknown machine: exit %d %q", code, errOut)
	}
}

// TestSystemVerifySpoofers: each way of lying fails verification.
func TestSystemVerifySpoofers(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator")
	}
	t.Run("lies about the model", func(t *testing.T) {
		t.Parallel()
		s := startSystem(t, t.TempDir()+"/gm.db", verifying)
		host := s.signup(t, "host@example.com", market.RoleHost)
		// An impossible report is refused at registration.
		a := newSpoofer(t, s, host, "fp-liar", "H100")
		a.hw.GPUs[0].VRAMMiB = 24564
		err := a.register()
		if market.KindOf(err) != market.Invalid || !strings.Contains(err.Error(), "24564 MiB of memory, but a NVIDIA H100 80GB HBM3 has 81559 MiB") {
			t.Fatalf("register: %v", err)
		}
		// A consistent lie (a real-looking H100 UUID) gets an H100's task,
		// which a CPU cannot do in time: committing late fails.
		a = newSpoofer(t, s, host, "fp-liar2", "H100")
		a.hw.GPUs[0].UUID = "GPU-4d1c7a52-0b1e-4f3a-9c2d-77aa01b2c3d4"
		if err := a.register(); err != nil {
			t.Fatal(err)
		}
		ch := a.challenge()
		if _, err := (verify.CPUSolver{}).Solve(s.ctx, verify.TaskOf(ch.Nonce, ch.GPUs[0])); err == nil {
			t.Fatal("the CPU solver accepted an H100-sized task")
		}
		// Cheap garbage instead of work fails at the proofs.
		garbage := make([]verify.Digest, ch.GPUs[0].Tiles)
		sol, err := verify.NewSolution(verify.TaskOf(ch.Nonce, ch.GPUs[0]), garbage)
		if err != nil {
			t.Fatal(err)
		}
		c, err := a.respond(ch.Check, answer{ch: ch, sols: map[string]*verify.Solution{ch.GPUs[0].UUID: sol}}, nil)
		// Either too fast for an H100 or, if the tree took long enough to
		// build, a proof that does not match its root.
		if err == nil && c.State != market.CheckFailed {
			t.Fatalf("garbage H100 answer passed: %+v", c)
		}
		if got := must[market.Machine](t, "machine")(host.Machine(s.ctx, a.m.ID)); got.Status == market.MachineListed || !got.Unverified {
			t.Errorf("liar's machine: %s", got.Status)
		}
	})
	t.Run("reuses another machine's UUIDs", func(t *testing.T) {
		t.Parallel()
		s := startSystem(t, t.TempDir()+"/gm.db", verifying)
		host := s.signup(t, "host@example.com", market.RoleHost)
		thief := s.signup(t, "thief@example.com", market.RoleHost)
		honest := newSpoofer(t, s, host, "fp-honest", "2xRTX 4090")
		if err := honest.register(); err != nil {
			t.Fatal(err)
		}
		a := newSpoofer(t, s, thief, "fp-thief", "2xRTX 4090")
		a.hw.GPUs[1].UUID = honest.hw.GPUs[0].UUID
		err := a.register()
		if market.KindOf(err) != market.Conflict || !strings.Contains(err.Error(), honest.hw.GPUs[0].UUID) || !strings.Contains(err.Error(), "flagged for review") {
			t.Fatalf("register with a taken UUID: %v", err)
		}
		if m := must[market.Machine](t, "machine")(s.admin.Machine(s.ctx, honest.m.ID)); !strings.Contains(m.Review, "also reported") {
			t.Errorf("first machine not flagged: %q", m.Review)
		}
	})
	t.Run("replays an old answer", func(t *testing.T) {
		t.Parallel()
		s := startSystem(t, t.TempDir()+"/gm.db", verifying)
		host := s.signup(t, "host@example.com", market.RoleHost)
		a := newSpoofer(t, s, host, "fp-replay", "RTX 4090")
		if err := a.register(); err != nil {
			t.Fatal(err)
		}
		old := a.solve(a.challenge())
		if c, err := a.respond(old.ch.Check, old, nil); err != nil || c.State != market.CheckPassed {
			t.Fatalf("first, honest answer: %v %+v", err, c)
		}
		_, err := a.host.CommitChallenge(s.ctx, a.m.ID, old.ch.Check, old.commit())
		wantFailed(t, "the same check again", market.Check{}, err, "is over")
		c := must[market.Check](t, "verify")(host.VerifyMachine(s.ctx, a.m.ID))
		if ch := a.challenge(); ch.Check != c.ID || ch.Nonce == old.ch.Nonce {
			t.Fatalf("new challenge %+v", ch)
		}
		c, err = a.respond(c.ID, old, nil)
		wantFailed(t, "old answer to a new check", c, err, "not that of the product")
	})
	t.Run("answers too slowly", func(t *testing.T) {
		t.Parallel()
		s := startSystem(t, t.TempDir()+"/gm.db", verifying)
		host := s.signup(t, "host@example.com", market.RoleHost)
		a := newSpoofer(t, s, host, "fp-slow", "RTX 4090")
		if err := a.register(); err != nil {
			t.Fatal(err)
		}
		ans := a.solve(a.challenge())
		// The fake envelope allows work/min_rate + grace, about 4.1 s.
		time.Sleep(time.Until(ans.ch.Deadline) + 200*time.Millisecond)
		c, err := a.respond(ans.ch.Check, ans, nil)
		wantFailed(t, "late answer", c, err, "must answer within")
		v := must[market.MachineVerification](t, "verification")(host.MachineVerification(s.ctx, a.m.ID))
		if v.Checks[0].GPUs[0].ElapsedMS < 4000 || !v.Unverified {
			t.Errorf("evidence %+v", v.Checks[0].GPUs[0])
		}
	})
	t.Run("returns a wrong part", func(t *testing.T) {
		t.Parallel()
		s := startSystem(t, t.TempDir()+"/gm.db", verifying)
		host := s.signup(t, "host@example.com", market.RoleHost)
		a := newSpoofer(t, s, host, "fp-wrong", "2xRTX 3090")
		if err := a.register(); err != nil {
			t.Fatal(err)
		}
		ans := a.solve(a.challenge())
		c, err := a.respond(ans.ch.Check, ans, func(pr *market.ChallengeProofs) {
			p := &pr.GPUs[0].Proofs[1]
			p.Group[8*(p.Tile%(len(p.Group)/8))+3] ^= 0x80
		})
		wantFailed(t, "wrong part", c, err, "GPU 0: tile")
		hostCfg := t.TempDir() + "/host.json"
		if _, errOut, code := s.gmAs(hostCfg, "login", "--email", "host@example.com", "--password", "password-1"); code != 0 {
			t.Fatal(errOut)
		}
		out, _, code := s.gmAs(hostCfg, "machine", "show", string(a.m.ID))
		if code != 0 || !strings.Contains(out, "held off the market") || !strings.Contains(out, "not that of the product") {
			t.Errorf("machine show does not give the evidence:\n%s", out)
		}
	})
}
