package coord_test

import (
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

func TestMinutesOverlapping(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name         string
		since, until time.Duration // after start
		from, to     int64
	}{
		{"whole minutes", 2 * time.Minute, 5 * time.Minute, 2, 5},
		{"partial minutes at both ends", 2*time.Minute + 10*time.Second, 4*time.Minute + 1*time.Second, 2, 5},
		{"inside one minute", 30 * time.Second, 40 * time.Second, 0, 1},
		{"from before the start", -time.Hour, 90 * time.Second, 0, 2},
		{"ends before the start", -time.Hour, -time.Minute, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, to := coord.MinutesOverlapping(start, start.Add(tc.since), start.Add(tc.until))
			if from != tc.from || to != tc.to {
				t.Errorf("got minutes [%d, %d), want [%d, %d)", from, to, tc.from, tc.to)
			}
		})
	}
}

// TestRefunds refunds a renter for minutes of an instance: from the host's
// unsettled earnings first, the platform's fees for the rest, never more
// than there is, each minute once.
func TestRefunds(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	inst := e.earn(1, 10*time.Minute) // 10 minutes at 0.01: the host earned 0.09, fees 0.01
	before := e.wallet(e.renter)
	req := func(from, to int64, reason string) market.RefundRequest {
		return market.RefundRequest{Instance: inst.ID, FromMinute: from, ToMinute: to, Reason: reason}
	}
	first := must(e.svc.Refund(e.ctx, e.admin, "rf-1", req(2, 5, "host down")))
	if first.Minutes != 3 || first.Amount != 30_000 || first.FromHost != 27_000 || first.FromPlatform != 3_000 || first.Host != e.host.ID {
		t.Fatalf("refund of minutes 2-4 = %+v; want 3 minutes, 0.03 = 0.027 from the host + 0.003 from the platform", first)
	}
	if got := e.wallet(e.renter).Available - before.Available; got != 30_000 {
		t.Errorf("renter's available rose by %s, want 0.03", got)
	}
	e.check()

	for _, tc := range []struct {
		name   string
		caller market.Account
		key    string
		req    market.RefundRequest
		kind   market.Kind
		msg    string
	}{
		{"not an admin", e.renter, "rf-x", req(6, 7, "x"), market.Forbidden, "admin"},
		{"no reason", e.admin, "rf-2", req(6, 7, " "), market.Invalid, "say why"},
		{"no minute", e.admin, "rf-3", req(6, 6, "x"), market.Invalid, "name no minute"},
		{"overlaps a refund", e.admin, "rf-4", req(4, 7, "again"), market.Conflict, "overlap refund " + string(first.ID)},
		{"minutes never charged", e.admin, "rf-5", req(100, 110, "x"), market.Invalid, "no charged minute"},
		{"unknown instance", e.admin, "rf-6", market.RefundRequest{Instance: "i-nope", FromMinute: 0, ToMinute: 1, Reason: "x"}, market.NotFound, ""},
		{"same key, other minutes", e.admin, "rf-1", req(6, 7, "host down"), market.Conflict, "different refund"},
		{"minutes and times", e.admin, "rf-7", market.RefundRequest{Instance: inst.ID, FromMinute: 1, ToMinute: 2, Since: ptr(e.clock.Now()), Until: ptr(e.clock.Now()), Reason: "x"}, market.Invalid, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Refund(e.ctx, tc.caller, tc.key, tc.req)
			wantKind(t, err, tc.kind, tc.msg)
			e.check()
		})
	}
	again := must(e.svc.Refund(e.ctx, e.admin, "rf-1", req(2, 5, "host down")))
	if again.ID != first.ID {
		t.Errorf("replayed refund %s, want the first, %s", again.ID, first.ID)
	}

	// Once the earnings settled, they are not taken back; the platform
	// would pay alone, but holds only 0.007 of fees (0.01 collected, 0.003
	// refunded), less than one minute: no money is made up.
	e.advance(31 * time.Minute)
	_, err := e.svc.Refund(e.ctx, e.admin, "rf-8", req(5, 8, "settled"))
	wantKind(t, err, market.InsufficientFunds, "only 0.007")
	_, err = e.svc.Refund(e.ctx, e.admin, "rf-9", req(5, 6, "settled"))
	wantKind(t, err, market.InsufficientFunds, "only 0.007")
	if r := must(e.svc.Earnings(e.ctx, e.host)); r.Total != 90_000-27_000 || r.Pending != 0 || r.Withdrawable != r.Total {
		t.Errorf("host earnings after the first refund settled: %+v", r)
	}
	e.check()

	// New unsettled earnings of the host (another rental) pay first again.
	inst2 := e.earn(1, 20*time.Minute)
	late := must(e.svc.Refund(e.ctx, e.admin, "rf-10", req(5, 6, "late claim")))
	if late.FromHost != 9_000 || late.FromPlatform != 1_000 {
		t.Errorf("refund with unsettled earnings = %+v; want 0.009 from the host, 0.001 from the platform", late)
	}
	r := must(e.svc.Earnings(e.ctx, e.host))
	if r.Pending != 180_000-9_000 || r.Withdrawable != 90_000-27_000 {
		t.Errorf("host earnings: pending %s withdrawable %s; want 0.171 and 0.063", r.Pending, r.Withdrawable)
	}

	// The coordinator's own downtime refunds: by time, idempotent by range.
	since := inst2.StartedAt.Add(3*time.Minute + 20*time.Second)
	down := market.RefundRequest{Instance: inst2.ID, Since: &since, Until: ptr(since.Add(2 * time.Minute)), Reason: "host missed heartbeats"}
	d1 := must(e.svc.RefundDowntime(e.ctx, down))
	d2 := must(e.svc.RefundDowntime(e.ctx, down))
	if d1.ID != d2.ID || d1.FromMinute != 3 || d1.ToMinute != 6 || d1.By != "" || d1.FromHost != 27_000 {
		t.Errorf("downtime refunds %+v and %+v; want one refund of minutes 3-5 from the host", d1, d2)
	}
	longer := down
	longer.Until = ptr(since.Add(4 * time.Minute)) // the host stayed down longer: minutes 3-7
	d3 := must(e.svc.RefundDowntime(e.ctx, longer))
	if d3.ID == d1.ID || d3.FromMinute != 6 || d3.ToMinute != 8 {
		t.Errorf("growing downtime refund = %+v; want a new refund of minutes 6-7", d3)
	}
	rs := must(e.svc.Refunds(e.ctx, e.renter, false, ""))
	if len(rs) != 4 {
		t.Errorf("renter sees %d refunds, want 4", len(rs))
	}
	if _, err := e.svc.Refunds(e.ctx, e.renter, true, ""); !market.IsKind(err, market.Forbidden) {
		t.Errorf("renter listing all refunds: %v", err)
	}
	e.check()
}

func ptr[T any](v T) *T { return &v }
