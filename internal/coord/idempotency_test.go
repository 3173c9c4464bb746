package coord_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestCreateInstanceOnce: a create holds one hour in escrow, so it is a
// money call like the others: a retry with the same key returns the first
// answer (errors included) and makes no second instance or hold; the same
// key with another request is refused.
func TestCreateInstanceOnce(t *testing.T) {
	e := newEnv(t)
	req := market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 2, Command: []string{"sleep", "60"}}
	escrow := func() market.Money { return e.wallet(e.renter).Escrow }

	t.Run("retry returns the first instance", func(t *testing.T) {
		first := must(e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-1", req))
		held := escrow()
		again := must(e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-1", req))
		if diff := cmp.Diff(first, again); diff != "" {
			t.Errorf("replay (-first +again):\n%s", diff)
		}
		if got := escrow(); got != held || held != market.Tokens(1)+200_000 {
			t.Errorf("escrow %s after the replay, %s before; want 1.2 once", got, held)
		}
		insts := must(e.svc.Instances(e.ctx, e.renter, false))
		if len(insts) != 1 {
			t.Errorf("%d instances, want 1", len(insts))
		}
		e.check()
	})
	t.Run("same key, other request", func(t *testing.T) {
		other := req
		other.GPUs = 1
		_, err := e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-1", other)
		wantKind(t, err, market.Conflict, "use a new key")
		_, err = e.svc.Withdraw(e.ctx, e.renter, "k-1", market.WithdrawRequest{Amount: market.Tokens(1)})
		wantKind(t, err, market.Conflict, "was used for a create instance request")
	})
	t.Run("a refusal is replayed", func(t *testing.T) {
		// 2 GPUs are left: asking for 3 is refused, and stays refused for
		// that key once they are free.
		big := req
		big.GPUs = 3
		_, err := e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-big", big)
		wantKind(t, err, market.Conflict, "")
		insts := must(e.svc.Instances(e.ctx, e.renter, false))
		e.report(insts[0], market.ObservedRunning)
		stopped := must(e.svc.StopInstance(e.ctx, e.renter, insts[0].ID))
		e.report(stopped, market.ObservedStopped)
		e.tick()
		_, again := e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-big", big)
		wantKind(t, again, market.Conflict, market.Message(err))
		must(e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-big-2", big)) // a new key tries again
		e.check()
	})
	t.Run("validation errors are answers too", func(t *testing.T) {
		bad := market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 0, Command: []string{"x"}}
		_, err := e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-bad", bad)
		wantKind(t, err, market.Invalid, "")
		_, err = e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-bad", bad)
		wantKind(t, err, market.Invalid, "")
	})
	t.Run("no key", func(t *testing.T) {
		_, err := e.svc.CreateInstanceOnce(e.ctx, e.renter, "", req)
		wantKind(t, err, market.Invalid, "needs an Idempotency-Key")
	})
	t.Run("auto create replayed after the offer is gone", func(t *testing.T) {
		auto := market.CreateInstanceRequest{Auto: "gpu_name=RTX_4090", GPUs: 1, Command: []string{"x"}}
		first := must(e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-auto", auto))
		// Fill the machine: a retry finds no offer, yet answers as the
		// first call did.
		for {
			if _, err := e.create(1); err != nil {
				break
			}
		}
		again := must(e.svc.CreateInstanceOnce(e.ctx, e.renter, "k-auto", auto))
		if again.ID != first.ID {
			t.Errorf("auto replay made %s, first %s", again.ID, first.ID)
		}
		e.check()
	})
}
