package coord_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// chainSource is a deposit source over a list of deposits, as a watcher
// over a chain's blocks would report them: the cursor is the index of the
// next deposit; rewind makes it report everything again (a restart).
type chainSource struct {
	deposits []coord.ExternalDeposit
}

func (c *chainSource) Name() string { return "testchain" }

func (c *chainSource) Poll(_ context.Context, cursor string) ([]coord.ExternalDeposit, string, error) {
	i := 0
	if cursor != "" {
		i, _ = strconv.Atoi(cursor)
	}
	return c.deposits[i:], strconv.Itoa(len(c.deposits)), nil
}

func TestDepositSourceCreditsEachDepositOnce(t *testing.T) {
	e := newEnvConfig(t, shortMoney)
	src := &chainSource{deposits: []coord.ExternalDeposit{
		{Ref: "0xaa:0", Account: e.renter.ID, Amount: market.Tokens(3)},
		{Ref: "0xbb:1", Account: "a-unknown", Amount: market.Tokens(4)}, // skipped, logged
		{Ref: "0xcc:0", Account: e.host.ID, Amount: market.Tokens(5)},
	}}
	before := e.wallet(e.renter).Available
	cursor, n, err := e.svc.PollDeposits(e.ctx, src, "")
	if err != nil || n != 2 || cursor != "3" {
		t.Fatalf("first poll: cursor %q, %d credited, %v; want 3, 2", cursor, n, err)
	}
	src.deposits = append(src.deposits, coord.ExternalDeposit{Ref: "0xdd:0", Account: e.renter.ID, Amount: market.Tokens(1)})
	if cursor, n, err = e.svc.PollDeposits(e.ctx, src, cursor); err != nil || n != 1 || cursor != "4" {
		t.Fatalf("second poll: cursor %q, %d credited, %v; want 4, 1", cursor, n, err)
	}
	// A restart re-reads from the start: nothing is credited twice.
	if _, n, err = e.svc.PollDeposits(e.ctx, src, ""); err != nil || n != 0 {
		t.Fatalf("poll after a restart: %d credited, %v; want 0", n, err)
	}
	if got := e.wallet(e.renter).Available - before; got != market.Tokens(4) {
		t.Errorf("renter credited %s, want 4 (3 + 1, once each)", got)
	}
	// The same reference with another amount is refused, not credited.
	_, err = e.svc.CreditDeposit(e.ctx, coord.ExternalDeposit{Source: "testchain", Ref: "0xaa:0", Account: e.renter.ID, Amount: market.Tokens(30)})
	wantKind(t, err, market.Conflict, "other amounts")
	_, err = e.svc.CreditDeposit(e.ctx, coord.ExternalDeposit{Source: "bad:name", Ref: "x", Account: e.renter.ID, Amount: 1})
	wantKind(t, err, market.Invalid, "source name")
	e.check()
}
