package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// TestSystemSpotOutbidAndOnDemand: two renters outbid each other on one
// machine across clearing rounds; each loser gets the notice file and
// SIGTERM (not SIGKILL) and stops paying; an on-demand rental then takes the
// machine; every round replays and the ledger invariants hold throughout.
func TestSystemSpotOutbidAndOnDemand(t *testing.T) {
	if testing.Short() {
		t.Skip("system test: starts a coordinator and an agent")
	}
	onEachStore(t, testSpotOutbidAndOnDemand)
}

// spotScript prints "up", and on SIGTERM the notice file, then exits.
const spotScript = `trap 'echo "TERM with notice $(cat "$GPUMARKET_NOTICE_FILE")"; exit 0' TERM
echo "up on $CUDA_VISIBLE_DEVICES"; while :; do sleep 0.05; done`

func testSpotOutbidAndOnDemand(t *testing.T, db string) {
	s := startSystem(t, db)
	ctx := s.ctx
	host := s.signup(t, "host@example.com", market.RoleHost)
	alice := s.signup(t, "alice@example.com", market.RoleRenter)
	bob := s.signup(t, "bob@example.com", market.RoleRenter)
	carol := s.signup(t, "carol@example.com", market.RoleRenter)
	for i, who := range []string{"alice@example.com", "bob@example.com", "carol@example.com"} {
		must[market.Transfer](t, "deposit")(s.admin.Deposit(ctx, market.DepositRequest{Email: who, Amount: market.Tokens(100)}, "dep-"+string(rune('a'+i))))
	}
	s.startAgent(t, host, "2xRTX 4090")
	var m market.Machine
	eventually(t, "the agent's machine to register", func() (bool, error) {
		ms, err := host.Machines(ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	price, reserve, energy := market.Money(1_200_000), market.Tokens(1), market.Money(100_000)
	must[market.Machine](t, "set terms")(host.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price, SpotReservePerGPUDay: &reserve, EnergyPerKWh: &energy}))
	must[market.Machine](t, "list")(host.ListMachine(ctx, m.ID))
	snap := must[market.Snapshot](t, "snapshot")(carol.Snapshot(ctx))
	if len(snap.Machines) != 1 || snap.Machines[0].SpotGPUs != 2 || snap.Machines[0].Terms.ReservePerGPUDay != reserve {
		t.Fatalf("snapshot %+v", snap)
	}
	power := snap.Machines[0].MaxPowerW

	bid := func(c *apiclient.Client, perDay market.Money) market.Bid {
		t.Helper()
		return must[market.Bid](t, "bid")(c.CreateBid(ctx, market.CreateBidRequest{Machine: m.ID, PricePerGPUDay: perDay, PowerLimitW: power,
			NoticeSeconds: 5, Command: []string{"/bin/sh", "-c", spotScript}}))
	}
	// Self-dealing and a power limit out of range are refused, naming the limit.
	if _, err := host.CreateBid(ctx, market.CreateBidRequest{Machine: m.ID, PricePerGPUDay: reserve, PowerLimitW: power, Command: []string{"x"}}); err == nil {
		t.Error("the host's own bid was accepted")
	}
	if _, err := alice.CreateBid(ctx, market.CreateBidRequest{Machine: m.ID, PricePerGPUDay: reserve, PowerLimitW: power + 1, Command: []string{"x"}}); !market.IsKind(err, market.Invalid) || !strings.Contains(err.Error(), "maximum of") {
		t.Errorf("power above the maximum: %v", err)
	}

	instanceOf := func(c *apiclient.Client, b market.BidID) market.Instance {
		t.Helper()
		got := must[market.Bid](t, "bid")(c.Bid(ctx, b))
		if got.Instance == "" {
			t.Fatalf("bid %s (%s) has no instance", b, got.State)
		}
		return must[market.Instance](t, "instance")(c.Instance(ctx, got.Instance))
	}
	waitState := func(c *apiclient.Client, id market.InstanceID, want market.InstanceState) market.Instance {
		t.Helper()
		var got market.Instance
		eventually(t, string(id)+" to be "+string(want), func() (bool, error) {
			var err error
			got, err = c.Instance(ctx, id)
			return got.State == want, err
		})
		if got.State != want {
			t.Fatalf("instance %s is %s (%s), want %s", id, got.State, got.Reason, want)
		}
		return got
	}
	waitLogs := func(c *apiclient.Client, id market.InstanceID, want string) string {
		t.Helper()
		var out string
		eventually(t, "output "+want, func() (bool, error) {
			chunks, err := c.Logs(ctx, id, 0, 1000, 0)
			var b strings.Builder
			for _, ch := range chunks {
				b.WriteString(ch.Data)
			}
			out = b.String()
			return strings.Contains(out, want), err
		})
		return out
	}

	// Round 1: alice's bid is alone and wins both GPUs.
	ab := bid(alice, market.Tokens(15)) // 0.0104166 per GPU-minute
	s.advance(t, host, m.ID, 10*time.Minute)
	a1 := instanceOf(alice, ab.ID)
	if a1.Kind != market.Spot || len(a1.GPUs) != 2 || a1.PowerLimitW != power || a1.Escrow != 0 {
		t.Fatalf("alice's spot instance %+v", a1)
	}
	waitState(alice, a1.ID, market.InstanceRunning)
	waitLogs(alice, a1.ID, "up on ")

	// Round 2: bob bids 20% more and displaces her.
	bb := bid(bob, market.Tokens(18))
	s.advance(t, host, m.ID, 10*time.Minute)
	a1 = waitState(alice, a1.ID, market.InstancePreempted)
	if a1.Reason != "outbid" || a1.BilledMins != 10 || !a1.Settled {
		t.Errorf("alice preempted: reason %q, billed %d, settled %v; want outbid, 10 minutes", a1.Reason, a1.BilledMins, a1.Settled)
	}
	out := waitLogs(alice, a1.ID, "TERM with notice {")
	if !strings.Contains(out, `"sigkill_at"`) {
		t.Errorf("alice's notice: %q", out)
	}
	b1 := instanceOf(bob, bb.ID)
	waitState(bob, b1.ID, market.InstanceRunning)
	if got := must[market.Bid](t, "bid")(alice.Bid(ctx, ab.ID)); got.State != market.BidOutbid {
		t.Errorf("alice's bid is %s, want outbid (still in the book)", got.State)
	}

	// Round 3: alice raises her bid and wins back.
	higher := market.Tokens(25)
	must[market.Bid](t, "change")(alice.ChangeBid(ctx, ab.ID, market.BidChange{PricePerGPUDay: &higher}))
	s.advance(t, host, m.ID, 10*time.Minute)
	b1 = waitState(bob, b1.ID, market.InstancePreempted)
	if b1.BilledMins != 10 {
		t.Errorf("bob billed %d minutes, want 10", b1.BilledMins)
	}
	waitLogs(bob, b1.ID, "TERM with notice {")
	a2 := instanceOf(alice, ab.ID)
	if a2.ID == a1.ID {
		t.Fatal("alice's bid won again but has no new instance")
	}
	waitState(alice, a2.ID, market.InstanceRunning)
	s.advance(t, host, m.ID, 2*time.Minute)

	// An on-demand rental takes the machine: alice gets notice again.
	od := must[market.Instance](t, "on-demand")(carol.CreateInstance(ctx, market.CreateInstanceRequest{Machine: m.ID, GPUs: 2,
		Command: []string{"/bin/sh", "-c", "echo on-demand; exec sleep 300"}}))
	a2 = waitState(alice, a2.ID, market.InstancePreempted)
	if !strings.HasPrefix(a2.Reason, "preempted: ") || a2.BilledMins != 2 {
		t.Errorf("alice after the on-demand rental: reason %q billed %d", a2.Reason, a2.BilledMins)
	}
	waitLogs(alice, a2.ID, "TERM with notice {")
	waitState(carol, od.ID, market.InstanceRunning)
	s.advance(t, host, m.ID, 10*time.Minute) // a round with no spot GPUs
	rounds := must[[]coord.AuctionRound](t, "rounds")(carol.Rounds(ctx, apiclient.RoundQuery{Machine: m.ID}))
	if len(rounds) != 4 || rounds[0].Decision.Machines[0].Free != 0 || len(rounds[0].Decision.Machines[0].Winners) != 0 {
		t.Fatalf("%d rounds; last %+v", len(rounds), rounds[0].Decision)
	}
	for _, r := range rounds {
		if rep := must[coord.RoundReplay](t, "replay")(carol.ReplayRound(ctx, r.ID)); !rep.Match {
			t.Errorf("round %s does not replay", r.ID)
		}
	}

	// Earnings: spot minutes at the bid prices less the 2.5% fee, plus the
	// on-demand minutes less 10%.
	earn := must[market.EarningsReport](t, "earnings")(host.Earnings(ctx))
	if earn.Total <= 0 {
		t.Errorf("host earned %s", earn.Total)
	}
	s.checkLedger(t)
}
