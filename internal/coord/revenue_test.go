package coord_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestRevenuePerDay(t *testing.T) {
	e := newEnv(t)
	e.earn(1, 10*time.Minute) // Jan 2: 0.10 charged, 0.01 of it the fee
	e.advance(24 * time.Hour)
	e.earn(2, 10*time.Minute) // Jan 3: 0.20 charged
	got := must(e.svc.Revenue(e.ctx, e.admin, 4))
	want := []market.DayRevenue{{Day: "2025-12-31"}, {Day: "2026-01-01"}, {Day: "2026-01-02", Fees: 10_000}, {Day: "2026-01-03", Fees: 20_000}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Revenue mismatch (-want +got):\n%s", d)
	}
	if got := must(e.svc.Revenue(e.ctx, e.admin, 1)); len(got) != 1 || got[0] != want[3] {
		t.Errorf("Revenue of today = %+v, want %+v", got, want[3:])
	}

	_, err := e.svc.Revenue(e.ctx, e.renter, 30)
	wantKind(t, err, market.Forbidden, "renter")
	for _, days := range []int{0, -1, 367} {
		_, err := e.svc.Revenue(e.ctx, e.admin, days)
		wantKind(t, err, market.Invalid, "days")
	}
}
