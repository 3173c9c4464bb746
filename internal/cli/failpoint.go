package cli

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// failpointEnv names a file through which a test can stall this
// coordinator inside a transaction, so that it can be killed at a known
// point: in the middle of billing or of a spot round, with the writes made
// but not committed. It is fault injection for crash tests, off unless the
// variable is set; the file is read only by transactions that charge a
// minute or record a round.
const failpointEnv = "GPUMARKET_FAILPOINT_FILE"

// failpointStall is how long an armed failpoint holds its transaction open:
// long enough for the test to see the log line and kill the process.
const failpointStall = time.Minute

// failpointStore wraps a Store: when the file holds "charge" and a
// transaction has charged a minute, or "round" and it has recorded an
// auction round, it logs "failpoint: stalling" at warn level, empties the
// file (so it fires once) and sleeps before letting the transaction commit.
type failpointStore struct {
	coord.Store
	file string
	log  *slog.Logger
}

func (s *failpointStore) Tx(ctx context.Context, fn func(tx coord.Tx) error) error {
	return s.Store.Tx(ctx, func(tx coord.Tx) error {
		w := &failpointTx{Tx: tx}
		if err := fn(w); err != nil {
			return err
		}
		if w.hit != "" {
			s.maybeStall(ctx, w.hit)
		}
		return nil
	})
}

func (s *failpointStore) maybeStall(ctx context.Context, hit string) {
	b, err := os.ReadFile(s.file)
	if err != nil || strings.TrimSpace(string(b)) != hit {
		return
	}
	if err := os.WriteFile(s.file, nil, 0o600); err != nil {
		s.log.Error("failpoint: disarm", "file", s.file, "err", err)
	}
	s.log.Warn("failpoint: stalling", "in", hit, "for", failpointStall)
	select {
	case <-ctx.Done():
	case <-time.After(failpointStall):
	}
}

// failpointTx notes what a transaction did that a failpoint can stall on.
type failpointTx struct {
	coord.Tx
	hit string
}

func (t *failpointTx) ApplyTransfer(ctx context.Context, tr market.Transfer) (market.Transfer, error) {
	got, err := t.Tx.ApplyTransfer(ctx, tr)
	if err == nil && tr.Kind == market.TransferCharge {
		t.hit = "charge"
	}
	return got, err
}

// ApplyCharges is how the billing tick charges minutes in batches.
func (t *failpointTx) ApplyCharges(ctx context.Context, tr market.Transfer, cs []market.MinuteCharge) (market.Transfer, error) {
	got, err := t.Tx.ApplyCharges(ctx, tr, cs)
	if err == nil {
		t.hit = "charge"
	}
	return got, err
}

func (t *failpointTx) InsertRound(ctx context.Context, r coord.RoundRecord) (coord.RoundRecord, error) {
	got, err := t.Tx.InsertRound(ctx, r)
	if err == nil {
		t.hit = "round"
	}
	return got, err
}
