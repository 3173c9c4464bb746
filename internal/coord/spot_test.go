package coord_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// spotEnv is newEnv with spot terms on the machine (reserve 1 token per
// GPU-day, energy 0.10 per kWh, at most 400 W, core locks 300-2500 MHz)
// and a second renter with 100 tokens.
func spotEnv(t *testing.T) (*env, market.Account) {
	e := newEnv(t)
	reserve, energy, maxW := market.Tokens(1), market.Money(100_000), 400
	must(e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{SpotReservePerGPUDay: &reserve, EnergyPerKWh: &energy, MaxPowerW: &maxW}))
	r2 := e.account("renter2@example.com", market.RoleRenter)
	e.deposit(r2, market.Tokens(100))
	return e, r2
}

func (e *env) bid(who market.Account, gpus int, perDay market.Money) (market.Bid, error) {
	return e.svc.CreateBid(e.ctx, who, market.CreateBidRequest{Machine: e.mach.ID, GPUs: gpus, PricePerGPUDay: perDay,
		PowerLimitW: 300, NoticeSeconds: 30, Command: []string{"sleep", "600"}})
}

// spotInstance returns the active spot instance of a bid.
func (e *env) spotInstance(b market.BidID) market.Instance {
	e.t.Helper()
	got := must(e.svc.Bid(e.ctx, e.admin, b))
	if got.Instance == "" {
		e.t.Fatalf("bid %s (%s) has no instance", b, got.State)
	}
	return e.inst(got.Instance)
}

func TestBidBadInput(t *testing.T) {
	e, _ := spotEnv(t)
	base := func() market.CreateBidRequest {
		return market.CreateBidRequest{Machine: e.mach.ID, GPUs: 1, PricePerGPUDay: market.Tokens(2), PowerLimitW: 300, Command: []string{"x"}}
	}
	for _, tc := range []struct {
		name string
		who  market.Account
		edit func(r *market.CreateBidRequest)
		kind market.Kind
		msg  string
	}{
		{"unknown machine", e.renter, func(r *market.CreateBidRequest) { r.Machine = "m-nope" }, market.NotFound, "not found"},
		{"no power limit", e.renter, func(r *market.CreateBidRequest) { r.PowerLimitW = 0 }, market.Invalid, "power limit per GPU is required"},
		{"power below card minimum", e.renter, func(r *market.CreateBidRequest) { r.PowerLimitW = 100 }, market.Invalid, "below this machine's minimum of 150 W"},
		{"power above host maximum", e.renter, func(r *market.CreateBidRequest) { r.PowerLimitW = 420 }, market.Invalid, "above this machine's maximum of 400 W"},
		{"clock outside range", e.renter, func(r *market.CreateBidRequest) { r.CoreLockMHz = 1500 }, market.Invalid, "allows no core clock lock"},
		{"below reserve", e.renter, func(r *market.CreateBidRequest) { r.PricePerGPUDay = 500_000 }, market.Invalid, "below this machine's reserve of 1"},
		{"zero price", e.renter, func(r *market.CreateBidRequest) { r.PricePerGPUDay = 0 }, market.Invalid, "above zero"},
		{"too many GPUs", e.renter, func(r *market.CreateBidRequest) { r.GPUs = 5 }, market.Invalid, "has 4"},
		{"negative GPUs", e.renter, func(r *market.CreateBidRequest) { r.GPUs = -1 }, market.Invalid, "must not be negative"},
		{"notice too long", e.renter, func(r *market.CreateBidRequest) { r.NoticeSeconds = 3600 }, market.Invalid, "maximum of 5m0s"},
		{"no command", e.renter, func(r *market.CreateBidRequest) { r.Command = nil }, market.Invalid, "give a command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := base()
			tc.edit(&req)
			_, err := e.svc.CreateBid(e.ctx, tc.who, req)
			wantKind(t, err, tc.kind, tc.msg)
		})
	}
	t.Run("self-dealing", func(t *testing.T) {
		both := e.account("both@example.com", market.RoleRenter, market.RoleHost)
		own := e.machine(both, "fp-both", 2)
		req := base()
		req.Machine = own.ID
		_, err := e.svc.CreateBid(e.ctx, both, req)
		wantKind(t, err, market.Forbidden, "hosts cannot bid on their own machines")
	})
	t.Run("per-renter cap", func(t *testing.T) {
		for range coord.DefaultMaxBids - len(must(e.svc.Bids(e.ctx, e.renter))) {
			must(e.svc.CreateBid(e.ctx, e.renter, base()))
		}
		_, err := e.svc.CreateBid(e.ctx, e.renter, base())
		wantKind(t, err, market.Conflict, "the limit per renter is 20")
	})
}

func TestSpotRoundsOutbidPreemptAndBill(t *testing.T) {
	e, r2 := spotEnv(t)
	// 14.4 tokens per GPU-day = 0.01 per GPU-minute.
	b1 := must(e.bid(e.renter, 4, market.Money(14_400_000)))
	if b1.GPUs != 4 || b1.State != market.BidActive || b1.Seq == 0 {
		t.Fatalf("bid = %+v", b1)
	}
	e.tick() // 03:00: first round
	inst1 := e.spotInstance(b1.ID)
	if inst1.Kind != market.Spot || len(inst1.GPUs) != 4 || inst1.PowerLimitW != 300 || inst1.GraceSeconds != 30 || inst1.Escrow != 0 {
		t.Fatalf("spot instance %+v", inst1)
	}
	ds := must(e.svc.Desired(e.ctx, e.host, e.mach.ID, 0, 0))
	if len(ds.Assignments) != 1 || ds.Assignments[0].PowerLimitW != 300 || ds.Assignments[0].NoticeSeconds != 30 {
		t.Fatalf("desired %+v", ds)
	}
	e.report(inst1, market.ObservedRunning)
	e.advance(5 * time.Minute)
	e.tick() // same interval: no new round, 5 minutes billed
	if got := e.inst(inst1.ID); got.BilledMins != 5 || got.Charged != 200_000 {
		t.Errorf("after 5 minutes: billed %d charged %s, want 5 and 0.2", got.BilledMins, got.Charged)
	}
	host := e.wallet(e.host)
	if host.Earnings != 195_000 { // 2.5% fee
		t.Errorf("host earnings %s, want 0.195", host.Earnings)
	}
	rounds := must(e.svc.Rounds(e.ctx, coord.RoundFilter{Machine: e.mach.ID}))
	if len(rounds) != 1 {
		t.Fatalf("%d rounds after one interval", len(rounds))
	}

	// A 4% better bid does not displace the winner (increment 5%).
	b2 := must(e.bid(r2, 4, market.Money(14_976_000)))
	e.advance(5 * time.Minute)
	e.tick() // 03:10
	if got := must(e.svc.Bid(e.ctx, r2, b2.ID)); got.State != market.BidActive {
		t.Errorf("4%% better bid is %s, want active", got.State)
	}
	// 20% better displaces it.
	two := market.Money(17_280_000)
	must(e.svc.ChangeBid(e.ctx, r2, b2.ID, market.BidChange{PricePerGPUDay: &two}))
	e.advance(10 * time.Minute)
	e.tick() // 03:20
	lost := e.inst(inst1.ID)
	if lost.State != market.InstanceStopping || lost.Reason != "outbid" || lost.BilledMins != 20 {
		t.Fatalf("outbid instance: %s %q billed %d", lost.State, lost.Reason, lost.BilledMins)
	}
	if got := must(e.svc.Bid(e.ctx, e.renter, b1.ID)); got.State != market.BidOutbid {
		t.Errorf("loser bid is %s, want outbid", got.State)
	}
	inst2 := e.spotInstance(b2.ID)
	if inst2.State != market.InstancePending || len(inst2.GPUs) != 4 {
		t.Fatalf("winner instance %+v", inst2)
	}
	e.report(lost, market.ObservedStopped)
	if got := e.inst(inst1.ID); got.State != market.InstancePreempted || !got.Settled || got.BilledMins != 20 {
		t.Errorf("preempted instance: %s settled %v billed %d", got.State, got.Settled, got.BilledMins)
	}
	e.report(inst2, market.ObservedRunning)
	e.advance(3 * time.Minute)
	e.tick()
	if got := e.inst(inst2.ID); got.BilledMins != 3 || got.Charged != 3*48_000 {
		t.Errorf("winner billed %d charged %s", got.BilledMins, got.Charged)
	}

	// Replay reproduces every round.
	rounds = must(e.svc.Rounds(e.ctx, coord.RoundFilter{}))
	if len(rounds) != 3 {
		t.Fatalf("%d rounds, want 3", len(rounds))
	}
	for _, r := range rounds {
		if rep := must(e.svc.ReplayRound(e.ctx, r.ID)); !rep.Match {
			t.Errorf("round %s does not replay", r.ID)
		}
	}

	// Spot work does not hide GPUs from on-demand renters: a rental would
	// preempt it.
	if offers := must(e.svc.Offers(e.ctx, market.OfferFilter{Query: "num_gpus>=4"})); len(offers) != 1 {
		t.Errorf("with spot work on all 4 GPUs, on-demand offers = %+v, want the machine with 4 free", offers)
	}
	// An on-demand rental preempts the spot instance.
	od := must(e.create(2))
	if offers := must(e.svc.Offers(e.ctx, market.OfferFilter{})); len(offers) != 1 || offers[0].FreeGPUs != 2 {
		t.Errorf("after an on-demand rental of 2: offers %+v, want 2 free", offers)
	}
	if got := e.inst(inst2.ID); got.State != market.InstanceStopping || got.Reason != "preempted: an on-demand rental needs the GPUs" {
		t.Fatalf("spot after on-demand create: %s %q", got.State, got.Reason)
	}
	e.report(e.inst(inst2.ID), market.ObservedStopped)
	e.report(od, market.ObservedRunning)
	// The next round offers the 2 GPUs left; both 4-GPU bids no longer fit.
	e.advance(10 * time.Minute)
	e.tick()
	last := must(e.svc.Rounds(e.ctx, coord.RoundFilter{Limit: 1}))[0]
	if md := last.Decision.Machines[0]; md.Free != 2 || len(md.Winners) != 0 {
		t.Errorf("round after on-demand: free %d winners %+v", md.Free, md.Winners)
	}

	// Cancel takes the bid out of the book.
	if got := must(e.svc.CancelBid(e.ctx, e.renter, b1.ID)); got.State != market.BidCancelled {
		t.Errorf("cancelled bid is %s", got.State)
	}
	snap := must(e.svc.Snapshot(e.ctx))
	if len(snap.Machines) != 1 || snap.Machines[0].SpotGPUs != 2 || len(snap.Machines[0].Bids) != 1 || snap.Machines[0].MaxPowerW != 400 {
		t.Errorf("snapshot %+v", snap)
	}
	e.check()
}

func TestSpotBidderWhoCannotPayIsInfeasible(t *testing.T) {
	e, _ := spotEnv(t)
	poor := e.account("poor@example.com", market.RoleRenter)
	e.deposit(poor, 10_000) // 0.01: not 10 minutes of 1.44 per GPU-day x 4
	b := must(e.bid(poor, 4, market.Money(1_440_000)))
	e.tick()
	r := must(e.svc.Rounds(e.ctx, coord.RoundFilter{}))[0]
	if c := r.Decision.Machines[0].Candidates[0]; c.Bid != b.ID || c.Drop != "cannot_pay" {
		t.Errorf("candidate %+v, want dropped as cannot_pay", c)
	}
}

func TestPreemptionWebhook(t *testing.T) {
	got := make(chan coord.WebhookNotice, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n coord.WebhookNotice
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		got <- n
	}))
	defer hook.Close()
	e, r2 := spotEnv(t)
	b1 := must(e.svc.CreateBid(e.ctx, e.renter, market.CreateBidRequest{Machine: e.mach.ID, GPUs: 4, PricePerGPUDay: market.Tokens(2),
		PowerLimitW: 300, NoticeSeconds: 45, Webhook: hook.URL, Command: []string{"sleep", "600"}}))
	e.tick()
	inst1 := e.spotInstance(b1.ID)
	e.report(inst1, market.ObservedRunning)
	must(e.bid(r2, 4, market.Tokens(3)))
	e.advance(10 * time.Minute)
	e.tick() // the round preempts b1's instance; the next tick sends the webhook
	e.tick()
	e.svc.WaitWebhooks()
	select {
	case n := <-got:
		if n.Bid != b1.ID || n.Instance != inst1.ID || n.Reason != "outbid" || n.NoticeSeconds != 45 || n.Type != "instance.preempted" {
			t.Errorf("webhook = %+v", n)
		}
	default:
		t.Fatal("no webhook was posted")
	}
	e.tick()
	e.svc.WaitWebhooks()
	if len(got) != 0 {
		t.Errorf("a webhook was sent twice")
	}
}

func TestPublishedClockRanges(t *testing.T) {
	e, _ := spotEnv(t)
	locks := market.ClockRange{Min: 500, Max: 1800}
	must(e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{CoreLockMHz: &locks}))
	req := market.CreateBidRequest{Machine: e.mach.ID, GPUs: 1, PricePerGPUDay: market.Tokens(2), PowerLimitW: 300, Command: []string{"x"},
		Clocks: market.Clocks{CoreLockMHz: 2000}}
	_, err := e.svc.CreateBid(e.ctx, e.renter, req)
	wantKind(t, err, market.Invalid, "core clock lock")
	req.Clocks.CoreLockMHz = 1700
	must(e.svc.CreateBid(e.ctx, e.renter, req))
	req.Clocks = market.Clocks{MemOffsetMHz: 100} // no offsets published
	_, err = e.svc.CreateBid(e.ctx, e.renter, req)
	wantKind(t, err, market.Invalid, "memory clock offset")
	// One setting per GPU.
	req.Clocks, req.GPUs = market.Clocks{}, 2
	req.GPUClocks = []market.Clocks{{CoreLockMHz: 1700}}
	_, err = e.svc.CreateBid(e.ctx, e.renter, req)
	wantKind(t, err, market.Invalid, "clock settings for 1 GPUs but asks for 2")
	req.GPUClocks = []market.Clocks{{CoreLockMHz: 1700}, {CoreLockMHz: 1900}}
	_, err = e.svc.CreateBid(e.ctx, e.renter, req)
	wantKind(t, err, market.Invalid, "GPU 2 of the bid: core clock lock 1900 MHz")
	req.GPUClocks = []market.Clocks{{CoreLockMHz: 1700}, {CoreLockMHz: 600}}
	perGPU := must(e.svc.CreateBid(e.ctx, e.renter, req))
	if got := must(e.svc.Bid(e.ctx, e.renter, perGPU.ID)); len(got.GPUClocks) != 2 || got.GPUClocks[1].CoreLockMHz != 600 {
		t.Fatalf("stored per-GPU clocks: %+v", got.GPUClocks)
	}
	e.tick()
	inst := e.spotInstance(perGPU.ID)
	ds := must(e.svc.Desired(e.ctx, e.host, e.mach.ID, 0, 0))
	var as market.Assignment
	for _, a := range ds.Assignments {
		if a.Instance == inst.ID {
			as = a
		}
	}
	if len(inst.GPUClocks) != 2 || len(as.GPUClocks) != 2 || as.GPUClocks[1].CoreLockMHz != 600 {
		t.Fatalf("per-GPU clocks did not reach the instance and the agent: %+v / %+v", inst.GPUClocks, ds.Assignments)
	}
	bad := market.ClockRange{Min: 10, Max: 5}
	_, err = e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{MemLockMHz: &bad})
	wantKind(t, err, market.Invalid, "min <= max")
}
