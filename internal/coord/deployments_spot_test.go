package coord_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// bidStates maps a deployment's bids to their states, as show gives them.
func (e *env) bidStates(ref string) map[market.BidID]market.BidState {
	e.t.Helper()
	out := map[market.BidID]market.BidState{}
	for _, b := range must(e.svc.Deployment(e.ctx, e.renter, ref)).Bids {
		out[b.ID] = b.State
	}
	return out
}

func TestSpotDeploymentWinsIsOutbidAndWinsAgain(t *testing.T) {
	e, r2 := spotEnv(t)
	perDay := market.Money(14_400_000) // 0.01 per GPU-minute
	d := must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "farm", Command: []string{"render"},
		GPUsPerReplica: 1, MinReplicas: 2, MaxReplicas: 2, Spot: true, MaxPricePerDay: perDay}))

	// The first pass bids for both replicas at the machine's maximum
	// power limit; the next round they win.
	e.tick()
	v := must(e.svc.Deployment(e.ctx, e.renter, "farm"))
	if len(v.Bids) != 2 || len(v.Replicas) != 0 || v.Status.Replicas != 2 || v.Status.Ready != 0 {
		t.Fatalf("after the first pass: %d bids, %d replicas, status %+v; want 2 bids, no instances", len(v.Bids), len(v.Replicas), v.Status)
	}
	for _, b := range v.Bids {
		if b.PricePerGPUDay != perDay || b.PowerLimitW != 400 || b.GPUs != 1 || b.Machine != e.mach.ID || b.State != market.BidActive {
			t.Errorf("bid %+v; want 1 GPU at %s, 400 W, active", b, perDay)
		}
	}
	e.advance(10 * time.Minute)
	e.tick()
	e.runAll("farm")
	e.tick()
	v = must(e.svc.Deployment(e.ctx, e.renter, "farm"))
	if len(v.Replicas) != 2 || v.Status.Ready != 2 || v.Status.Pending != 0 {
		t.Fatalf("after winning: %d replicas, status %+v; want 2 ready", len(v.Replicas), v.Status)
	}
	for _, r := range v.Replicas {
		if r.Kind != market.Spot || r.Deployment != d.ID || r.DeploymentRevision != 1 || r.PowerLimitW != 400 {
			t.Errorf("replica %s: kind %s deployment %s rev %d power %d", r.ID, r.Kind, r.Deployment, r.DeploymentRevision, r.PowerLimitW)
		}
	}
	for id, st := range e.bidStates("farm") {
		if st != market.BidWinning {
			t.Errorf("bid %s is %s after winning", id, st)
		}
	}
	won := v.Replicas

	// A higher bidder takes all 4 GPUs: both replicas are preempted, their
	// bids stay in the book, and no new bids are placed.
	high := must(e.bid(r2, 4, perDay*2))
	e.advance(10 * time.Minute)
	e.tick()
	for _, r := range won {
		got := e.inst(r.ID)
		if got.State != market.InstanceStopping || got.Reason != "outbid" {
			t.Fatalf("replica %s after being outbid: %s %q", r.ID, got.State, got.Reason)
		}
		e.report(got, market.ObservedStopped)
	}
	e.tick()
	v = must(e.svc.Deployment(e.ctx, e.renter, "farm"))
	if len(v.Replicas) != 0 || len(v.Bids) != 2 || v.Status.Ready != 0 || v.Status.Replicas != 2 {
		t.Fatalf("after outbid: %d replicas, %d bids, status %+v", len(v.Replicas), len(v.Bids), v.Status)
	}
	for id, st := range e.bidStates("farm") {
		if st != market.BidOutbid {
			t.Errorf("bid %s is %s after being outbid", id, st)
		}
	}

	// The higher bidder leaves: the next round places the replicas again.
	must(e.svc.CancelBid(e.ctx, r2, high.ID))
	e.advance(10 * time.Minute)
	e.tick()
	e.runAll("farm")
	e.tick()
	v = must(e.svc.Deployment(e.ctx, e.renter, "farm"))
	if len(v.Replicas) != 2 || v.Status.Ready != 2 || len(v.Bids) != 2 {
		t.Fatalf("after winning again: %d replicas, %d bids, status %+v", len(v.Replicas), len(v.Bids), v.Status)
	}
	for _, r := range v.Replicas {
		if r.ID == won[0].ID || r.ID == won[1].ID {
			t.Errorf("replica %s is a preempted one", r.ID)
		}
	}
	if bids := history(v, "bid"); len(bids) != 2 {
		t.Errorf("history has %d bids, want 2 (the first ones, kept in the book): %q", len(bids), bids)
	}

	// Deleting cancels the bids and stops the instances.
	must(e.svc.DeleteDeployment(e.ctx, e.renter, "farm"))
	e.tick()
	for _, r := range v.Replicas {
		if got := e.inst(r.ID); got.State != market.InstanceStopping {
			t.Errorf("replica %s after delete: %s", r.ID, got.State)
		}
	}
	for _, b := range v.Bids {
		if got := must(e.svc.Bid(e.ctx, e.renter, b.ID)); got.State != market.BidCancelled {
			t.Errorf("bid %s after delete: %s", b.ID, got.State)
		}
	}
	e.check()
}

func TestSpotDeploymentSpec(t *testing.T) {
	e, _ := spotEnv(t)
	spec := func(f func(*market.DeploymentSpec)) market.DeploymentSpec {
		s := market.DeploymentSpec{Name: "farm", Command: []string{"render"}, GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 1}
		f(&s)
		return s
	}
	_, err := e.svc.CreateDeployment(e.ctx, e.renter, spec(func(s *market.DeploymentSpec) { s.Spot = true }))
	wantKind(t, err, market.Invalid, "max-price-per-day")
	_, err = e.svc.CreateDeployment(e.ctx, e.renter, spec(func(s *market.DeploymentSpec) { s.PowerLimitW = 300 }))
	wantKind(t, err, market.Invalid, "--spot")
	// Without --spot the price stays an on-demand cap.
	d := must(e.svc.CreateDeployment(e.ctx, e.renter, spec(func(s *market.DeploymentSpec) { s.MaxPricePerDay = market.Tokens(100) })))
	e.tick()
	if reps := e.replicas(string(d.ID)); len(reps) != 1 || reps[0].Kind == market.Spot {
		t.Errorf("on-demand replicas with a price cap: %+v", reps)
	}
}

func TestSpotDeploymentCannotSwitch(t *testing.T) {
	e, _ := spotEnv(t)
	spec := market.DeploymentSpec{Name: "farm", Command: []string{"render"}, GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 1,
		Spot: true, MaxPricePerDay: market.Tokens(10)}
	must(e.svc.CreateDeployment(e.ctx, e.renter, spec))
	spec.Spot = false
	_, err := e.svc.UpdateDeployment(e.ctx, e.renter, "farm", spec)
	wantKind(t, err, market.Invalid, "spot and on-demand")
}

// A spot replica outbid on its machine for MoveBidAfter moves: its bid is
// cancelled and a new one placed on another machine, which it wins.
func TestSpotDeploymentBidMovesToAnotherMachine(t *testing.T) {
	e, r2 := spotEnv(t)
	other := e.machine(e.host, "fp-2", 4)
	reserve, energy, maxW := market.Tokens(1), market.Money(100_000), 400
	must(e.svc.UpdateMachine(e.ctx, e.host, other.ID, market.MachineUpdate{SpotReservePerGPUDay: &reserve, EnergyPerKWh: &energy, MaxPowerW: &maxW}))
	// pass moves the clock a minute, both machines heartbeating, and runs
	// the leader's tick. Spot rounds clear every 10 minutes, and a bid
	// moves after 3 rounds without winning.
	pass := func() {
		t.Helper()
		for _, m := range []market.MachineID{e.mach.ID, other.ID} {
			must(e.svc.Report(e.ctx, e.host, m, market.Report{}))
		}
		e.clock.Advance(time.Minute)
		for _, m := range []market.MachineID{e.mach.ID, other.ID} {
			must(e.svc.Report(e.ctx, e.host, m, market.Report{}))
		}
		e.tick()
	}
	perDay := market.Money(14_400_000)
	must(e.svc.CreateDeployment(e.ctx, e.renter, market.DeploymentSpec{Name: "farm", Command: []string{"render"},
		GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 1, Spot: true, MaxPricePerDay: perDay}))
	e.tick()
	v := must(e.svc.Deployment(e.ctx, e.renter, "farm"))
	if len(v.Bids) != 1 {
		t.Fatalf("%d bids after the first pass, want 1", len(v.Bids))
	}
	first := v.Bids[0]
	// Another renter outbids it for every GPU of that machine.
	must(e.svc.CreateBid(e.ctx, r2, market.CreateBidRequest{Machine: first.Machine, GPUs: 4, PricePerGPUDay: perDay * 3,
		PowerLimitW: 300, NoticeSeconds: 30, Command: []string{"sleep", "600"}}))
	var moved market.Bid
	for i := 0; moved.ID == ""; i++ {
		if i == 35 {
			t.Fatalf("the bid did not move in 35 minutes: %+v", must(e.svc.Deployment(e.ctx, e.renter, "farm")))
		}
		pass()
		for _, b := range must(e.svc.Deployment(e.ctx, e.renter, "farm")).Bids {
			if b.ID != first.ID {
				moved = b
			}
		}
	}
	if moved.Machine == first.Machine {
		t.Errorf("the bid moved to the machine it lost on, %s", moved.Machine)
	}
	if got := must(e.svc.Bid(e.ctx, e.renter, first.ID)); got.State != market.BidCancelled {
		t.Errorf("the first bid is %s after the move, want cancelled", got.State)
	}
	// It wins on the other machine and runs there.
	var rep market.Instance
	for i := 0; rep.ID == ""; i++ {
		if i == 12 {
			t.Fatalf("the moved bid did not win in 12 minutes: %+v", must(e.svc.Deployment(e.ctx, e.renter, "farm")))
		}
		pass()
		if reps := e.replicas("farm"); len(reps) == 1 {
			rep = reps[0]
		}
	}
	if rep.Machine != moved.Machine || rep.Bid != moved.ID || rep.Kind != market.Spot {
		t.Errorf("replica %+v; want the spot instance of bid %s on %s", rep, moved.ID, moved.Machine)
	}
	v = must(e.svc.Deployment(e.ctx, e.renter, "farm"))
	if bids := history(v, "bid"); len(bids) != 2 || !strings.Contains(bids[0], "bidding on another machine") {
		t.Errorf("bid history %q, want the move with its reason", bids)
	}
}
