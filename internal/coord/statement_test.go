package coord_test

import (
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestStatement checks a month's statement against the wallet: charges
// folded into minute ranges, the refund and the deposit listed, opening
// plus movements equal to closing, closing equal to the balances.
func TestStatement(t *testing.T) {
	e := newEnvConfig(t, shortMoney) // the clock starts 2026-01-02 03:00 UTC
	inst := e.earn(1, 7*time.Minute) // 7 minutes at 0.01, billed tick by tick
	must(e.svc.Refund(e.ctx, e.admin, "rf", market.RefundRequest{Instance: inst.ID, FromMinute: 2, ToMinute: 4, Reason: "host down"}))
	e.deposit(e.renter, market.Tokens(5))

	if _, err := e.svc.Statement(e.ctx, e.renter, "2026-1"); !market.IsKind(err, market.Invalid) {
		t.Errorf("bad month: %v", err)
	}
	dec := must(e.svc.Statement(e.ctx, e.renter, "2025-12"))
	if len(dec.Lines) != 0 || len(dec.Balances) != 0 {
		t.Errorf("statement of a month before any transfer: %+v", dec)
	}
	st := must(e.svc.Statement(e.ctx, e.renter, "2026-01"))
	var charges, refunds, deposits int
	for _, l := range st.Lines {
		switch l.Kind {
		case market.TransferCharge:
			charges++
			if l.Instance != inst.ID || l.FromMinute != 0 || l.ToMinute != 7 || l.Amount != -70_000 {
				t.Errorf("charge line %+v; want minutes 0-6 of %s for -0.07", l, inst.ID)
			}
		case market.TransferRefund:
			refunds++
			if l.Amount != 20_000 || l.Reason == "" {
				t.Errorf("refund line %+v", l)
			}
		case market.TransferDeposit:
			deposits++
		}
	}
	if charges != 1 || refunds != 1 || deposits != 2 {
		t.Errorf("lines: %d charge runs, %d refunds, %d deposits; want 1, 1, 2:\n%+v", charges, refunds, deposits, st.Lines)
	}
	w := e.wallet(e.renter)
	for _, b := range st.Balances {
		if b.Opening != 0 || b.Opening+b.In-b.Out != b.Closing {
			t.Errorf("balance %+v does not add up", b)
		}
		if b.Account == market.Available(e.renter.ID) && b.Closing != w.Available {
			t.Errorf("closing available %s, wallet says %s", b.Closing, w.Available)
		}
	}
	// The next month opens where January closed.
	feb := must(e.svc.Statement(e.ctx, e.renter, "2026-02"))
	for _, b := range feb.Balances {
		if b.Account == market.Available(e.renter.ID) && (b.Opening != w.Available || b.Closing != w.Available) {
			t.Errorf("February available %+v; want opening and closing %s", b, w.Available)
		}
	}
	host := must(e.svc.Statement(e.ctx, e.host, "2026-01"))
	for _, l := range host.Lines {
		if l.Kind == market.TransferCharge && (l.Account != market.Earnings(e.host.ID) || l.Amount != 63_000) {
			t.Errorf("host's charge line %+v; want 0.063 earned", l)
		}
	}
}
