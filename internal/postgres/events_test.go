package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Events are numbered after commit (sqlstore/events.go). Writers that
// commit in any order, and a reader that follows the feed by number while
// they do: the reader sees every event exactly once, the numbers have no
// gaps, and the events of one transaction are numbered together in the
// order it appended them.
func TestEventsFollowedByNumberWhileWritersCommit(t *testing.T) {
	db := openFresh(t)
	defer db.Close()
	ctx := t.Context()
	const writers, txs = 8, 40

	var seen []market.Event
	var last int64
	follow := func() error {
		return db.Tx(ctx, func(tx coord.Tx) error {
			evs, err := tx.Events(ctx, coord.EventFilter{AfterSeq: last})
			if err != nil {
				return err
			}
			slices.Reverse(evs) // oldest first
			for _, e := range evs {
				if e.Seq != last+1 {
					return fmt.Errorf("after event %d the feed gave %d: a gap, or one given twice", last, e.Seq)
				}
				last = e.Seq
				seen = append(seen, e)
			}
			return nil
		})
	}

	done := make(chan struct{})
	followErr := make(chan error, 1)
	go func() {
		for {
			if err := follow(); err != nil {
				followErr <- err
				return
			}
			select {
			case <-done:
				followErr <- follow() // the last ones
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for k := range txs {
				err := db.Tx(ctx, func(tx coord.Tx) error {
					for part := range 2 {
						if err := tx.AppendEvent(ctx, market.Event{At: time.Now(), Type: "test.write",
							Account: market.AccountID(fmt.Sprintf("a-%d", w)), Message: fmt.Sprintf("%d/%d", k, part)}); err != nil {
							return err
						}
						// Hold the transaction open a while, so that
						// later ones commit first.
						time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
					}
					return nil
				})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if err := <-followErr; err != nil {
		t.Fatal(err)
	}
	if len(seen) != writers*txs*2 {
		t.Fatalf("the reader saw %d events, want %d", len(seen), writers*txs*2)
	}
	// One transaction's two events are neighbours, in order; each
	// writer's transactions come in the order they committed.
	next := map[market.AccountID]int{}
	for i := 0; i < len(seen); i += 2 {
		a, b := seen[i], seen[i+1]
		k := next[a.Account]
		if a.Account != b.Account || a.Message != fmt.Sprintf("%d/0", k) || b.Message != fmt.Sprintf("%d/1", k) {
			t.Fatalf("events %d and %d are %s %q and %s %q; want %s's transaction %d, parts 0 and 1", a.Seq, b.Seq, a.Account, a.Message, b.Account, b.Message, a.Account, k)
		}
		next[a.Account] = k + 1
	}
}

// Events left pending by a process that stopped between commit and
// numbering are numbered by the sweep of another.
func TestSweepNumbersEventsLeftPending(t *testing.T) {
	db := openFresh(t)
	defer db.Close()
	ctx := t.Context()
	if _, err := db.db.ExecContext(ctx, `INSERT INTO events_pending (txid, n, at, type, account_id, machine_id, instance_id, message)
VALUES (1, 1, 0, 'test.left', '', '', '', 'left by a process that stopped')`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * sweepEvery)
	for {
		var evs []market.Event
		if err := db.Tx(ctx, func(tx coord.Tx) error {
			var err error
			evs, err = tx.Events(ctx, coord.EventFilter{Type: "test.left"})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(evs) == 1 {
			if evs[0].Seq != 1 {
				t.Errorf("numbered %d, want 1 (the first event)", evs[0].Seq)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pending event was not numbered within %s", 10*sweepEvery)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A transaction's events are listed once its Tx returns, without waiting
// for the sweep.
func TestEventsListedWhenTxReturns(t *testing.T) {
	db := openFresh(t)
	defer db.Close()
	ctx := context.Background()
	for k := range 20 {
		if err := db.Tx(ctx, func(tx coord.Tx) error {
			return tx.AppendEvent(ctx, market.Event{At: time.Now(), Type: "test.now", Message: fmt.Sprint(k)})
		}); err != nil {
			t.Fatal(err)
		}
		var evs []market.Event
		if err := db.Tx(ctx, func(tx coord.Tx) error {
			var err error
			evs, err = tx.Events(ctx, coord.EventFilter{Type: "test.now", Limit: 1})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Message != fmt.Sprint(k) || evs[0].Seq != int64(k+1) {
			t.Fatalf("after transaction %d the newest event is %+v, want message %d numbered %d", k, evs, k, k+1)
		}
	}
}
