package coord_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// TestPoolRewardTermsAndHostMembership: a pool's reward needs an asset,
// a positive rate and a funding account; hosts put their machines only in
// open pools, and leave only open pools.
func TestPoolRewardTermsAndHostMembership(t *testing.T) {
	e := newEnv(t)
	must(e.svc.CreateAsset(e.ctx, e.admin, market.CreateAssetRequest{Name: "DPN"}))
	project := e.account("project@example.com", market.RoleRenter)
	for _, tc := range []struct {
		name string
		rw   market.PoolReward
		kind market.Kind
		msg  string
	}{
		{"unknown asset", market.PoolReward{Asset: "NOPE", PerGPUHour: market.Tokens(2), From: "project@example.com"}, market.NotFound, "no asset NOPE"},
		{"zero rate", market.PoolReward{Asset: "DPN", From: "project@example.com"}, market.Invalid, "above zero"},
		{"no funder", market.PoolReward{Asset: "DPN", PerGPUHour: market.Tokens(2)}, market.Invalid, "funding account"},
		{"unknown funder", market.PoolReward{Asset: "DPN", PerGPUHour: market.Tokens(2), From: "nobody@example.com"}, market.Invalid, "nobody@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "depin", ShareBP: 4500, Reward: &tc.rw})
			wantKind(t, err, tc.kind, tc.msg)
		})
	}
	p := must(e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "depin", ShareBP: 4500,
		Reward: &market.PoolReward{Asset: "DPN", PerGPUHour: market.Tokens(2), From: "Project@example.com"}}))
	if p.Reward.From != project.ID {
		t.Errorf("funding account = %q, want the project's %q", p.Reward.From, project.ID)
	}

	join := func(pool string) error {
		_, err := e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{Pool: &pool})
		return err
	}
	wantKind(t, join("depin"), market.Forbidden, "not open to hosts")
	wantKind(t, join("nope"), market.Invalid, "not found")
	must(e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "depin", ShareBP: 4500, Open: true, Reward: p.Reward}))
	if err := join("depin"); err != nil {
		t.Fatalf("joining an open pool: %v", err)
	}
	if err := join("none"); err != nil {
		t.Fatalf("leaving an open pool: %v", err)
	}
	must(e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "closed", ShareBP: 1000}))
	if err := e.svc.AssignPool(e.ctx, e.admin, "closed", []market.MachineID{e.mach.ID}); err != nil {
		t.Fatal(err)
	}
	wantKind(t, join("depin"), market.Forbidden, "ask an operator")
	wantKind(t, join("none"), market.Forbidden, "ask an operator")
}

// TestPoolRewardsPerMinute: a 2-GPU instance on a machine of a pool paying
// 2 DPN per GPU-hour earns its host exactly 4 DPN in 60 minutes, each
// minute once, beside the platform token's charges; when the funding
// account runs dry rewards stop (never a negative balance) with an event
// and the pool shows it; funded again, they resume. The ledger check holds
// after every step.
func TestPoolRewardsPerMinute(t *testing.T) {
	e := newEnv(t)
	must(e.svc.CreateAsset(e.ctx, e.admin, market.CreateAssetRequest{Name: "DPN"}))
	project := e.account("project@example.com", market.RoleRenter)
	fund := func(amt market.Money) {
		must(e.svc.Deposit(e.ctx, e.admin, market.NewID("dep-"), market.DepositRequest{Account: project.ID, Asset: "DPN", Amount: amt}))
	}
	fund(market.Tokens(5))
	must(e.svc.PutPool(e.ctx, e.admin, market.Pool{Name: "depin", ShareBP: 4500, Open: true,
		Reward: &market.PoolReward{Asset: "DPN", PerGPUHour: market.Tokens(2), From: "project@example.com"}}))
	depin := "depin"
	must(e.svc.UpdateMachine(e.ctx, e.host, e.mach.ID, market.MachineUpdate{Pool: &depin}))
	e.check()

	inst := must(e.create(2))
	e.advance(5 * time.Second)
	if rej := e.report(inst, market.ObservedRunning); rej != nil {
		t.Fatalf("running report rejected: %v", rej)
	}
	dpn := func(a market.Account) (avail, earned market.Money) {
		for _, b := range e.wallet(a).Assets {
			if b.Asset == "DPN" {
				return b.Available, b.Earnings
			}
		}
		return 0, 0
	}
	pool := func() market.PoolReward {
		for _, p := range must(e.svc.Pools(e.ctx, e.admin)) {
			if p.Name == "depin" {
				return *p.Reward
			}
		}
		t.Fatal("pool depin not listed")
		return market.PoolReward{}
	}
	step := func(name string, d time.Duration, wantEarned, wantFunds market.Money, stopped bool) {
		t.Helper()
		e.advance(d)
		e.tick()
		e.tick() // a second pass at the same time rewards nothing more
		_, hostEarned := dpn(e.host)
		funds, _ := dpn(project)
		rw := pool()
		if hostEarned != wantEarned || funds != wantFunds || rw.Paid != wantEarned || (rw.Stopped != "") != stopped {
			t.Fatalf("%s: host earned %s DPN, funding account %s, pool paid %s, stopped %q; want %s earned, %s left, paid %s, stopped %v",
				name, hostEarned, funds, rw.Paid, rw.Stopped, wantEarned, wantFunds, wantEarned, stopped)
		}
	}
	// Spread like billing: any 60 minutes from a whole hour pay the
	// hourly rate exactly, 2 DPN per GPU.
	step("first 7 minutes", 7*time.Minute, 466_666, market.Tokens(5)-466_666, false)
	step("first hour", 53*time.Minute, market.Tokens(4), market.Tokens(1), false)
	// 15 more minutes take the last 1 DPN exactly; the 16th cannot be paid.
	step("funds run out", 20*time.Minute, market.Tokens(5), 0, true)
	if rw := pool(); !strings.Contains(rw.Stopped, "deposit DPN") {
		t.Errorf("stopped = %q; want it to say what to do", rw.Stopped)
	}
	evs := must(e.svc.Events(e.ctx, project, coord.EventFilter{}))
	found := false
	for _, ev := range evs {
		found = found || (ev.Type == "pool.rewards_stopped" && ev.Account == project.ID)
	}
	if !found {
		t.Errorf("no pool.rewards_stopped event for the funding account among %d events", len(evs))
	}
	if got := e.inst(inst.ID); got.BilledMins != 80 {
		t.Fatalf("billed %d minutes, want 80: billing goes on without rewards", got.BilledMins)
	}
	step("still dry", 2*time.Minute, market.Tokens(5), 0, true)

	// Funded again, the next minutes billed are rewarded; those billed
	// while dry are not owed.
	fund(market.Tokens(1))
	step("resumed", 3*time.Minute, market.Tokens(5)+200_000, market.Tokens(1)-200_000, false)

	// The last, partial minute is charged when the instance settles, one
	// instance at a time: rewarded as well.
	e.advance(30 * time.Second)
	stopped := must(e.svc.StopInstance(e.ctx, e.renter, inst.ID))
	e.advance(time.Minute)
	e.tick()
	if rej := e.report(stopped, market.ObservedStopped); rej != nil {
		t.Fatalf("stopped report rejected: %v", rej)
	}
	e.tick()
	if got := e.inst(inst.ID); !got.Settled || got.BilledMins != 86 {
		t.Fatalf("after stop: settled %v, billed %d minutes; want settled, 86", got.Settled, got.BilledMins)
	}
	if _, earned := dpn(e.host); earned != market.Tokens(5)+200_000+66_667 {
		t.Errorf("after the last minute: host earned %s DPN, want 5.266667", earned)
	}

	var rs []market.RewardMinute
	err := e.store.Tx(e.ctx, func(tx coord.Tx) error {
		var err error
		rs, err = tx.RewardMinutes(e.ctx, inst.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var sum market.Money
	for i, r := range rs {
		sum += r.Amount
		if i > 0 && r.Minute <= rs[i-1].Minute {
			t.Fatalf("minute %d rewarded after minute %d", r.Minute, rs[i-1].Minute)
		}
		if r.Host != e.host.ID || r.Pool != "depin" {
			t.Fatalf("reward %+v, want host %s in pool depin", r, e.host.ID)
		}
	}
	if len(rs) != 60+15+3+1 || sum != market.Tokens(5)+266_667 || rs[75].Minute != 82 {
		t.Errorf("%d minutes rewarded, %s in all; want 79 minutes (0..74, 82..85), 5.266667 DPN", len(rs), sum)
	}

	// A minute rewarded before cannot be rewarded again: nothing is written.
	err = e.store.Tx(e.ctx, func(tx coord.Tx) error {
		again := rs[0]
		_, err := tx.ApplyPoolRewards(e.ctx, market.Transfer{ID: "t-again", Key: "pool_rewards:again", Kind: market.TransferPoolRewards, Asset: "DPN", At: again.At,
			Entries: []market.Entry{{Account: market.Available(project.ID), Amount: -again.Amount}, {Account: market.Earnings(e.host.ID), Amount: again.Amount}}},
			[]market.RewardMinute{again})
		return err
	})
	wantKind(t, err, market.Conflict, "already rewarded")
	e.check()

	// The platform token's billing is what it would be without the pool.
	if got := e.inst(inst.ID); e.wallet(e.host).Earnings != got.Charged-got.Charged/10 {
		t.Errorf("host platform earnings %s, want %s less the 10%% fee", e.wallet(e.host).Earnings, got.Charged)
	}
}
