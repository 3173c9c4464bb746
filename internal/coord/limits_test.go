package coord_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// TestSpendCapRefusesRentalsAboveIt: the machine costs 0.60 per GPU-hour.
func TestSpendCapRefusesRentalsAboveIt(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	_, err := e.svc.SetSpendLimits(e.ctx, e.renter, market.SpendLimits{MaxPerHour: -1})
	wantKind(t, err, market.Invalid, "negative")
	_, err = e.svc.SetSpendLimits(e.ctx, e.renter, market.SpendLimits{Webhook: "ftp://x"})
	wantKind(t, err, market.Invalid, "http")
	st := must(e.svc.SetSpendLimits(e.ctx, e.renter, market.SpendLimits{MaxPerHour: 1_500_000})) // 1.50 per hour
	if st.Limits.MaxPerHour != 1_500_000 || st.RatePerHour != 0 {
		t.Fatalf("status = %+v", st)
	}
	for _, tc := range []struct {
		name string
		gpus int
		ok   bool
	}{
		{"two GPUs: 1.20 of 1.50", 2, true},
		{"one more: 1.80 of 1.50", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.create(tc.gpus)
			if tc.ok && err != nil {
				t.Fatalf("create: %v", err)
			}
			if !tc.ok {
				wantKind(t, err, market.Conflict, "above your cap of 1.50 per hour")
			}
		})
	}
	if st := must(e.svc.SpendStatus(e.ctx, e.renter)); st.RatePerHour != 1_200_000 {
		t.Errorf("rate = %s, want 1.20", st.RatePerHour)
	}
	// A spot bid counts what it would cost per hour: 12 per GPU-day is 0.50 an hour.
	_, err = e.svc.CreateBid(e.ctx, e.renter, market.CreateBidRequest{Machine: e.mach.ID, GPUs: 1, PricePerGPUDay: market.Tokens(12), PowerLimitW: 300, Command: []string{"sleep", "1"}})
	wantKind(t, err, market.Conflict, "above your cap")
	must(e.svc.SetSpendLimits(e.ctx, e.renter, market.SpendLimits{})) // no cap
	if _, err := e.create(1); err != nil {
		t.Errorf("create with no cap: %v", err)
	}
	e.check()
}

// TestSpendAlertRaisesAnEventAndAWebhookOncePerHour: two GPUs cost 0.02 a
// minute; the alert is at 0.10 spent in an hour.
func TestSpendAlertRaisesAnEventAndAWebhookOncePerHour(t *testing.T) {
	var mu sync.Mutex
	var got []market.SpendAlert
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a market.SpendAlert
		json.NewDecoder(r.Body).Decode(&a)
		mu.Lock()
		got = append(got, a)
		mu.Unlock()
	}))
	defer hook.Close()
	e := newEnvConfig(t, func(c *coord.Config) { shortMoney(c); c.WebhookClient = hook.Client() })
	must(e.svc.SetSpendLimits(e.ctx, e.renter, market.SpendLimits{AlertAt: 100_000, Webhook: hook.URL}))
	inst := must(e.create(2))
	e.report(inst, market.ObservedRunning)
	alerts := func() int {
		evs := must(e.svc.Events(e.ctx, e.renter, coord.EventFilter{}))
		n := 0
		for _, ev := range evs {
			if ev.Type == "wallet.spend_alert" {
				n++
			}
		}
		return n
	}
	e.run(4 * time.Minute) // 0.08 spent
	if n := alerts(); n != 0 {
		t.Fatalf("%d alerts after 0.08 spent, want 0", n)
	}
	e.run(2 * time.Minute) // 0.12
	if n := alerts(); n != 1 {
		t.Fatalf("%d alerts after 0.12 spent, want 1", n)
	}
	e.run(30 * time.Minute) // still above, but alerted within the hour
	if n := alerts(); n != 1 {
		t.Errorf("%d alerts within the hour, want 1", n)
	}
	e.run(31 * time.Minute)
	if n := alerts(); n != 2 {
		t.Errorf("%d alerts after an hour, want 2", n)
	}
	e.svc.WaitWebhooks()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Account != e.renter.ID || got[0].SpentLastHour < 100_000 || got[0].Type != "wallet.spend_alert" {
		t.Errorf("webhooks received: %+v", got)
	}
}

// The background tick reads the spending of every renter with an alert
// together, and alerts each renter at its own threshold: two renters past
// theirs are alerted, one below its threshold and one that spent nothing
// are not.
func TestSpendAlertsOfManyRenters(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	renters := []market.Account{e.renter, e.account("r2@example.com", market.RoleRenter), e.account("r3@example.com", market.RoleRenter), e.account("r4@example.com", market.RoleRenter)}
	// 0.60 per GPU-hour: each renter of a GPU spends 0.01 a minute.
	for i, alertAt := range []market.Money{50_000, 1_000_000, 30_000, 10_000} {
		r := renters[i]
		if i > 0 {
			e.deposit(r, market.Tokens(10))
		}
		must(e.svc.SetSpendLimits(e.ctx, r, market.SpendLimits{AlertAt: alertAt}))
		if i == 3 {
			continue // spends nothing
		}
		inst := must(e.svc.CreateInstance(e.ctx, r, market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"sleep", "60"}}))
		e.report(inst, market.ObservedRunning)
	}
	e.run(6 * time.Minute)
	for i, want := range []int{1, 0, 1, 0} {
		n := 0
		for _, ev := range must(e.svc.Events(e.ctx, renters[i], coord.EventFilter{})) {
			if ev.Type == "wallet.spend_alert" {
				n++
			}
		}
		if n != want {
			st := must(e.svc.SpendStatus(e.ctx, renters[i]))
			t.Errorf("renter %d (alert at %s, spent %s in the last hour): %d alerts, want %d", i, st.Limits.AlertAt, st.SpentLastHour, n, want)
		}
	}
}

// TestBillingRacesSpending runs billing ticks while 50 goroutines spend the
// same renter's balance: the batched charges and the spending never take
// it below zero, and every invariant holds after.
func TestBillingRacesSpending(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	spender := e.renter
	for range 4 {
		inst := must(e.create(1))
		e.report(inst, market.ObservedRunning)
	}
	w := e.wallet(spender)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			e.clock.Advance(time.Minute)
			if err := e.svc.Tick(e.ctx); err != nil {
				t.Errorf("tick: %v", err)
				return
			}
		}
	})
	for i := range 50 {
		wg.Go(func() {
			_, err := e.svc.AddStake(e.ctx, spender, fmt.Sprintf("race-%d", i), market.StakeRequest{Amount: w.Available / 40})
			if err != nil && !market.IsKind(err, market.InsufficientFunds) {
				t.Errorf("stake %d: %v", i, err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(done)
	wg.Wait()
	if got := e.wallet(spender); got.Available < 0 || got.Escrow < 0 {
		t.Errorf("renter's balances went negative: %+v", got)
	}
	e.check()
}
