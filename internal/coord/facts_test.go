package coord_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// bulkMachines inserts n listed machines of the host through the store,
// more than one read of a facts pass covers, each with a history that
// gives it its own reliability: listed two hours ago, every third offline
// for i minutes of the last hour, every fifth with an instance the host
// lost and two that ended well, every seventh a passed check with measured
// rates. The coordinator's offer index is then rebuilt, as at its start.
func bulkMachines(e *vEnv, n int) []market.MachineID {
	e.t.Helper()
	now := e.clock.Now()
	var ids []market.MachineID
	err := e.store.Tx(e.ctx, func(tx coord.Tx) error {
		for i := range n {
			m := market.Machine{ID: market.MachineID(fmt.Sprintf("m-bulk%04d", i)), Owner: e.host.ID,
				Hardware: market.Hardware{Fingerprint: fmt.Sprintf("fp-bulk-%d", i), Hostname: "box", Runner: "process", CPUCores: 8, RAMMiB: 32768,
					GPUs: []market.GPU{{Index: 0, UUID: fmt.Sprintf("GPU-bulk-%d", i), Model: "RTX 4090", VRAMMiB: 24564}}},
				Listed: true, Online: true, Status: market.MachineListed, PricePerGPUHour: 500_000, LastSeenAt: now, CreatedAt: now.Add(-3 * time.Hour)}
			if err := tx.InsertMachine(e.ctx, m); err != nil {
				return err
			}
			evs := []market.Event{{At: now.Add(-3 * time.Hour), Type: "machine.registered", Machine: m.ID, Message: "registered"},
				{At: now.Add(-2 * time.Hour), Type: "machine.listed", Machine: m.ID, Message: "listed"}}
			if i%3 == 0 {
				evs = append(evs, market.Event{At: now.Add(-time.Hour), Type: "machine.offline", Machine: m.ID, Message: "no heartbeat"},
					market.Event{At: now.Add(time.Duration(i%60-60) * time.Minute), Type: "machine.online", Machine: m.ID, Message: "heartbeats resumed"})
			}
			if i%5 == 0 {
				for k, typ := range []string{"instance.failed", "instance.stopped", "instance.stopped"} {
					evs = append(evs, market.Event{At: now.Add(time.Duration(k-90) * time.Minute), Type: typ, Machine: m.ID,
						Instance: market.InstanceID(fmt.Sprintf("i-bulk%04d-%d", i, k)), Message: map[bool]string{true: "host lost contact", false: "stopped by the renter"}[k == 0]})
				}
			}
			for _, ev := range evs {
				if err := tx.AppendEvent(e.ctx, ev); err != nil {
					return err
				}
			}
			if i%7 == 0 { // a passed check that measured i+8 trillion multiply-adds a second on average
				c := market.Check{ID: market.CheckID(fmt.Sprintf("c-bulk%04d", i)), Machine: m.ID, Owner: e.host.ID, Cause: "requested",
					State: market.CheckPassed, CreatedAt: now.Add(-time.Hour), FinishedAt: ptr(now.Add(-time.Hour)), Nonce: "n", Secret: "s",
					GPUs: []market.CheckGPU{{Index: 0, UUID: fmt.Sprintf("GPU-bulk-%d", i), Model: "RTX 4090", Rate: float64(i+7) * 1e12, Passed: true},
						{Index: 1, UUID: "GPU-gone", Model: "RTX 4090", Rate: float64(i+9) * 1e12, Passed: true}}}
				if err := tx.InsertCheck(e.ctx, c); err != nil {
					return err
				}
			}
			ids = append(ids, m.ID)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	// Written behind the coordinator's back: it loads them as gpumarket
	// serve does at start, before Run.
	if err := e.svc.RebuildIndex(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// A pass over more machines than one read covers gives every machine the
// facts that its own verification (MachineVerification, which reads one
// machine in a transaction of its own) shows: reliability, verified flag,
// bond per GPU.
func TestFactsPassMatchesEachMachine(t *testing.T) {
	e := newVEnv(t, nil) // registering starts a check
	must(e.svc.Deposit(e.ctx, e.admin, "dep-h", market.DepositRequest{Account: e.host.ID, Amount: market.Tokens(100)}))
	verified := e.register(e.host, fakeHW(t, "fp-v", "2xRTX 4090"))
	if c := must(e.answer(e.host, verified.ID)); c.State != market.CheckPassed {
		t.Fatalf("check %s, want passed", c.State)
	}
	bonded := e.register(e.host, fakeHW(t, "fp-b", "2xRTX 4090"))
	must(e.svc.SetBond(e.ctx, e.host, bonded.ID, market.BondRequest{PerGPU: market.Tokens(10)}))
	ids := append(bulkMachines(e, 300), verified.ID, bonded.ID)

	n := must(e.svc.RefreshFactsPass(e.ctx))
	if n != len(ids) {
		t.Fatalf("the pass covered %d machines, want %d", n, len(ids))
	}
	scores := map[int64]bool{}
	for _, id := range ids {
		v := must(e.svc.MachineVerification(e.ctx, e.admin, id))
		want, got := int64(v.Reliability.Score*1e6), e.svc.OfferFacts(id)
		if got.ReliabilityPPM != want || got.Verified != (v.Verified && !v.Unverified) || got.BondPerGPU != v.Bond.PerGPU ||
			got.PerfScoreMilli != int64(v.PerfScore*1000) {
			t.Fatalf("machine %s: facts %+v, its verification says reliability %d ppm, verified %v (unverified %v), bond per GPU %s, perf score %g",
				id, got, want, v.Verified, v.Unverified, v.Bond.PerGPU, v.PerfScore)
		}
		scores[got.ReliabilityPPM] = true
	}
	if f := e.svc.OfferFacts(verified.ID); !f.Verified {
		t.Errorf("the machine that passed its check is not verified in the index: %+v", f)
	}
	// Fake GPUs run the CPU path, far below a point (10^12 multiply-adds a
	// second): the index holds milli-points, so only the verification
	// shows it.
	if v := must(e.svc.MachineVerification(e.ctx, e.admin, verified.ID)); v.PerfScore <= 0 {
		t.Errorf("the machine that passed its check has perf_score %g, want its measured rate", v.PerfScore)
	}
	if f := e.svc.OfferFacts(bonded.ID); f.BondPerGPU != market.Tokens(10) {
		t.Errorf("bonded machine: %+v, want 10 tokens per GPU", f)
	}
	if len(scores) < 10 {
		t.Errorf("the bulk machines have %d distinct reliabilities, want their histories told apart", len(scores))
	}
	if f := e.svc.OfferFacts(ids[14]); f.PerfScoreMilli != 22_000 || !f.Verified {
		t.Errorf("facts of the machine whose check measured 21 and 23 trillion multiply-adds a second: %+v, want verified with perf_score 22", f)
	}
}

// A coordinator computes every machine's facts as soon as it runs, not a
// few hundred per background tick.
func TestRunKeepsFactsFromTheStart(t *testing.T) {
	e := newVEnv(t, func(c *coord.Config) { c.RequireVerification = false })
	ids := bulkMachines(e, 600)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx, time.Hour) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := 0
		for _, id := range ids {
			if e.svc.OfferFacts(id).ReliabilityPPM == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d machines still have no reliability in the offer index 20 s after the coordinator started", missing, len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A busy machine's reliability counts the downtime of its listing, and
// every instance end and check verdict of its window, even when thousands
// of instance events came after the listing: the events that tell whether
// it was online and listed are read apart from the newest ones, and the
// outcomes are counted by the store. The machine was listed 10 days ago,
// offline for a day 5 days ago, then ran 3,000 short instances (9,000
// events) in its last day, one in ten lost by the host; 50 more ended 12
// days ago, before the window (it starts at the registration), and three
// checks ended in it.
func TestReliabilityOfABusyMachine(t *testing.T) {
	e := newVEnv(t, func(c *coord.Config) { c.RequireVerification = false })
	now := e.clock.Now()
	id := market.MachineID("m-busy")
	err := e.store.Tx(e.ctx, func(tx coord.Tx) error {
		m := market.Machine{ID: id, Owner: e.host.ID,
			Hardware: market.Hardware{Fingerprint: "fp-busy", Hostname: "box", Runner: "process", CPUCores: 8, RAMMiB: 32768,
				GPUs: []market.GPU{{Index: 0, UUID: "GPU-busy-0", Model: "RTX 4090", VRAMMiB: 24564}}},
			Listed: true, Online: true, Status: market.MachineListed, PricePerGPUHour: 500_000, LastSeenAt: now, CreatedAt: now.Add(-10 * 24 * time.Hour)}
		if err := tx.InsertMachine(e.ctx, m); err != nil {
			return err
		}
		evs := []market.Event{
			{At: now.Add(-10 * 24 * time.Hour), Type: "machine.registered", Machine: id, Message: "registered"},
			{At: now.Add(-10*24*time.Hour + time.Minute), Type: "machine.listed", Machine: id, Message: "listed"},
			{At: now.Add(-5 * 24 * time.Hour), Type: "machine.offline", Machine: id, Message: "no heartbeat"},
			{At: now.Add(-4 * 24 * time.Hour), Type: "machine.online", Machine: id, Message: "heartbeats resumed"},
			{At: now.Add(-3 * 24 * time.Hour), Type: "machine.verified", Machine: id, Message: "check c-1 passed"},
			{At: now.Add(-2 * 24 * time.Hour), Type: "machine.verify_failed", Machine: id, Message: "check c-2 failed: wrong answer"},
			{At: now.Add(-30 * time.Hour), Type: "machine.verified", Machine: id, Message: "check c-3 passed"},
		}
		for k := range 50 {
			evs = append(evs, market.Event{At: now.Add(-12*24*time.Hour + time.Duration(k)*time.Minute), Type: "instance.stopped", Machine: id,
				Instance: market.InstanceID(fmt.Sprintf("i-old%04d", k)), Message: "stopped by the renter"})
		}
		for k := range 3000 {
			at := now.Add(-24*time.Hour + time.Duration(k)*28*time.Second)
			inst := market.InstanceID(fmt.Sprintf("i-busy%04d", k))
			end, why := "instance.stopped", "stopped by the renter"
			if k%10 == 0 {
				end, why = "instance.failed", "host lost contact"
			}
			for j, typ := range []string{"instance.created", "instance.running", end} {
				evs = append(evs, market.Event{At: at.Add(time.Duration(j) * time.Second), Type: typ, Machine: id, Instance: inst, Message: why})
			}
		}
		for _, ev := range evs {
			if err := tx.AppendEvent(e.ctx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := must(e.svc.MachineVerification(e.ctx, e.admin, id)).Reliability
	// Listed for 10 days less a minute, online all of it but one day.
	listed := 10*24*time.Hour - time.Minute
	if want := float64(listed-24*time.Hour) / float64(listed); r.Coverage < want-0.001 || r.Coverage > want+0.001 {
		t.Errorf("coverage %.4f (listed %d s, online %d s), want %.4f", r.Coverage, r.ListedSecs, r.OnlineSecs, want)
	}
	if r.Completed != 2700 || r.HostFaults != 300 || r.RenterFaults != 0 || r.ChecksPassed != 2 || r.ChecksFailed != 1 {
		t.Errorf("counted %d completed, %d host faults, %d renter faults, %d checks passed, %d failed; want 2700, 300, 0, 2, 1",
			r.Completed, r.HostFaults, r.RenterFaults, r.ChecksPassed, r.ChecksFailed)
	}
	if want := 0.9; r.FaultFactor != want {
		t.Errorf("fault factor %.4f, want %.4f", r.FaultFactor, want)
	}
	if err := e.svc.RebuildIndex(e.ctx); err != nil { // written behind its back, as at a start
		t.Fatal(err)
	}
	must(e.svc.RefreshFactsPass(e.ctx))
	if got, want := e.svc.OfferFacts(id).ReliabilityPPM, int64(r.Score*1e6); got != want {
		t.Errorf("the index has reliability %d ppm, the machine's verification %d", got, want)
	}
}

// A verdict or a bond set through one replica reaches the other's offer
// index when it follows the changes, not at its next pass.
func TestFactsThroughAnotherReplica(t *testing.T) {
	e := newVEnv(t, nil) // registering starts a check
	must(e.svc.Deposit(e.ctx, e.admin, "dep-h", market.DepositRequest{Account: e.host.ID, Amount: market.Tokens(100)}))
	m := e.register(e.host, fakeHW(t, "fp-1", "2xRTX 4090"))
	other := coord.New(coord.Config{Store: e.store, Clock: e.clock, RealClock: e.real, Passwords: plainPasswords{}, RequireVerification: true, AllowFakeGPUs: true})
	if err := other.RebuildIndex(e.ctx); err != nil {
		t.Fatal(err)
	}
	must(other.FollowOnce(e.ctx))
	if f := other.OfferFacts(m.ID); f.Verified || f.BondPerGPU != 0 {
		t.Fatalf("facts before the check and the bond: %+v", f)
	}
	if c := must(e.answer(e.host, m.ID)); c.State != market.CheckPassed {
		t.Fatalf("check %s, want passed", c.State)
	}
	must(e.svc.SetBond(e.ctx, e.host, m.ID, market.BondRequest{PerGPU: market.Tokens(10)}))
	must(other.FollowOnce(e.ctx))
	if f := other.OfferFacts(m.ID); !f.Verified || f.BondPerGPU != market.Tokens(10) {
		t.Errorf("the other replica's facts after following: %+v, want verified with 10 tokens of bond per GPU", f)
	}
}

// A machine has its facts as soon as it registers, on the coordinator it
// registered with and on another when that one follows the change, rather
// than at their next pass, up to 5 minutes later: until then a search for
// reliable machines left it out.
func TestFactsOfANewMachine(t *testing.T) {
	e := newVEnv(t, func(c *coord.Config) { c.RequireVerification = false })
	other := coord.New(coord.Config{Store: e.store, Clock: e.clock, RealClock: e.real, Passwords: plainPasswords{}, AllowFakeGPUs: true})
	if err := other.RebuildIndex(e.ctx); err != nil {
		t.Fatal(err)
	}
	m := e.register(e.host, fakeHW(t, "fp-new", "2xRTX 4090"))
	if f := e.svc.OfferFacts(m.ID); f.ReliabilityPPM != 1_000_000 {
		t.Errorf("facts right after registering: %+v, want reliability 1 (no history yet)", f)
	}
	must(other.FollowOnce(e.ctx))
	if f := other.OfferFacts(m.ID); f.ReliabilityPPM != 1_000_000 {
		t.Errorf("the other replica's facts after following the registration: %+v, want reliability 1", f)
	}
}
