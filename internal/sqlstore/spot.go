package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// holdsGPUs reports whether i keeps rows in gpu_allocations: an active
// instance does, except a spot instance on its way out (see coord.Tx).
func holdsGPUs(i market.Instance) bool {
	return i.Active() && !(i.Kind == market.Spot && i.State == market.InstanceStopping)
}

// clockRanges is the JSON of a machine's spot_clock_ranges column.
type clockRanges struct {
	CoreLock   market.ClockRange `json:"core_lock_mhz"`
	MemLock    market.ClockRange `json:"mem_lock_mhz"`
	CoreOffset market.ClockRange `json:"core_offset_mhz"`
	MemOffset  market.ClockRange `json:"mem_offset_mhz"`
}

func clockRangesOf(t market.SpotTerms) clockRanges {
	return clockRanges{t.CoreLockMHz, t.MemLockMHz, t.CoreOffsetMHz, t.MemOffsetMHz}
}

// Bids.

func bidArgs(b market.Bid) ([]any, error) {
	clocks, err := toJSON(storedClocks{b.Clocks, b.GPUClocks})
	if err != nil {
		return nil, err
	}
	command, err := toJSON(b.Command)
	if err != nil {
		return nil, err
	}
	env, err := toJSON(b.Env)
	if err != nil {
		return nil, err
	}
	var expires sql.NullInt64
	if !b.ExpiresAt.IsZero() {
		expires = sql.NullInt64{Int64: micros(b.ExpiresAt), Valid: true}
	}
	return []any{b.ID, b.Seq, b.Bidder, b.Machine, b.GPUs, int64(b.PricePerGPUDay), b.PowerLimitW, clocks,
		b.Image, command, env, b.Webhook, b.NoticeSeconds, string(b.State), b.State.Open(),
		micros(b.CreatedAt), expires, b.Instance}, nil
}

func scanBid(s scanner) (market.Bid, error) {
	var b market.Bid
	var clocks, command, env string
	var price, created int64
	var open bool
	var expires sql.NullInt64
	err := s.Scan(&b.ID, &b.Seq, &b.Bidder, &b.Machine, &b.GPUs, &price, &b.PowerLimitW, &clocks,
		&b.Image, &command, &env, &b.Webhook, &b.NoticeSeconds, &b.State, &open, &created, &expires, &b.Instance)
	if err != nil {
		return b, err
	}
	var sc storedClocks
	for _, f := range []struct {
		s string
		v any
	}{{clocks, &sc}, {command, &b.Command}, {env, &b.Env}} {
		if err := json.Unmarshal([]byte(f.s), f.v); err != nil {
			return b, fmt.Errorf("decode bid %s: %w", b.ID, err)
		}
	}
	b.Clocks, b.GPUClocks = sc.Clocks, sc.GPU

	b.PricePerGPUDay = market.Money(price)
	b.CreatedAt = fromMicros(created)
	if expires.Valid {
		b.ExpiresAt = fromMicros(expires.Int64)
	}
	return b, nil
}

// missingBidRef names the bidder or machine a bid refers to that does not
// exist, after a foreign key violation.
func (t *sqlTx) missingBidRef(ctx context.Context, op string, b market.Bid) error {
	if ok, err := t.exists(ctx, qMachineExists, b.Machine); err == nil && !ok {
		return market.Errorf(op, market.NotFound, "machine %s not found", b.Machine)
	}
	return market.Errorf(op, market.NotFound, "account %s not found", b.Bidder)
}

func (t *sqlTx) InsertBid(ctx context.Context, b market.Bid) (market.Bid, error) {
	const op = "insert bid"
	if ok, err := t.exists(ctx, qBidExists, b.ID); err != nil {
		return market.Bid{}, fmt.Errorf("%s %s: %w", op, b.ID, err)
	} else if ok {
		return market.Bid{}, market.Errorf(op, market.Conflict, "bid %s already exists", b.ID)
	}
	var fk bool
	err := t.atomic(ctx, func() error {
		if err := t.tx.QueryRowContext(ctx, qNextCounter, counterBid).Scan(&b.Seq); err != nil {
			return fmt.Errorf("%s %s: next seq: %w", op, b.ID, err)
		}
		args, err := bidArgs(b)
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, b.ID, err)
		}
		_, err = t.tx.ExecContext(ctx, qInsertBid, args...)
		switch t.classify(err) {
		case UniqueViolation:
			return market.Errorf(op, market.Conflict, "bid %s already exists", b.ID)
		case ForeignKeyViolation:
			fk = true
			return err
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, b.ID, err)
		}
		return nil
	})
	if fk {
		return market.Bid{}, t.missingBidRef(ctx, op, b)
	}
	if err != nil {
		return market.Bid{}, err
	}
	b.CreatedAt = fromMicros(micros(b.CreatedAt))
	if !b.ExpiresAt.IsZero() {
		b.ExpiresAt = fromMicros(micros(b.ExpiresAt))
	}
	return b, nil
}

func (t *sqlTx) UpdateBid(ctx context.Context, b market.Bid) error {
	const op = "update bid"
	args, err := bidArgs(b)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, b.ID, err)
	}
	args = append(args[:1], args[2:]...) // no seq
	var fk bool
	err = t.atomic(ctx, func() error {
		res, err := t.tx.ExecContext(ctx, qUpdateBid, args...)
		if t.classify(err) == ForeignKeyViolation {
			fk = true
			return err
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, b.ID, err)
		}
		return mustAffect(res, market.Errorf(op, market.NotFound, "bid %s not found", b.ID))
	})
	if fk {
		return t.missingBidRef(ctx, op, b)
	}
	return err
}

func (t *sqlTx) Bid(ctx context.Context, id market.BidID) (market.Bid, error) {
	b, err := scanBid(t.tx.QueryRowContext(ctx, qBid, id))
	if errors.Is(err, sql.ErrNoRows) {
		return b, market.Errorf("get bid", market.NotFound, "bid %s not found", id)
	}
	if err != nil {
		return b, fmt.Errorf("get bid %s: %w", id, err)
	}
	return b, nil
}

func (t *sqlTx) Bids(ctx context.Context, f coord.BidFilter) ([]market.Bid, error) {
	var w where
	if f.Bidder != "" {
		w.add("bidder_id = ?", f.Bidder)
	}
	if f.Machine != "" {
		w.add("machine_id = ?", f.Machine)
	}
	if f.OpenOnly {
		w.as("in_book = TRUE") // bids_book's condition
	}
	rows, err := t.tx.QueryContext(ctx, qBids+w.sql()+qBidsOrder, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list bids: %w", err)
	}
	return collect(rows, scanBid)
}

// Auction rounds.

func scanRound(s scanner) (coord.RoundRecord, error) {
	var r coord.RoundRecord
	var at int64
	var input, decision string
	if err := s.Scan(&r.ID, &r.Seq, &r.Machine, &at, &input, &decision); err != nil {
		return r, err
	}
	r.At = fromMicros(at)
	r.Input, r.Decision = []byte(input), []byte(decision)
	return r, nil
}

func (t *sqlTx) InsertRound(ctx context.Context, r coord.RoundRecord) (coord.RoundRecord, error) {
	const op = "insert round"
	if ok, err := t.exists(ctx, qRoundExists, r.ID); err != nil {
		return coord.RoundRecord{}, fmt.Errorf("%s %s: %w", op, r.ID, err)
	} else if ok {
		return coord.RoundRecord{}, market.Errorf(op, market.Conflict, "round %s already exists", r.ID)
	}
	err := t.atomic(ctx, func() error {
		if err := t.tx.QueryRowContext(ctx, qNextCounter, counterRound).Scan(&r.Seq); err != nil {
			return fmt.Errorf("%s %s: next seq: %w", op, r.ID, err)
		}
		// TEXT, not bytes: the JSON is UTF-8 and stays readable in the database.
		_, err := t.tx.ExecContext(ctx, qInsertRound, r.ID, r.Seq, r.Machine, micros(r.At), string(r.Input), string(r.Decision))
		switch t.classify(err) {
		case UniqueViolation:
			return market.Errorf(op, market.Conflict, "round %s already exists", r.ID)
		case ForeignKeyViolation:
			return market.Errorf(op, market.NotFound, "machine %s not found", r.Machine)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, r.ID, err)
		}
		return nil
	})
	if err != nil {
		return coord.RoundRecord{}, err
	}
	r.At = fromMicros(micros(r.At))
	return r, nil
}

func (t *sqlTx) Round(ctx context.Context, id market.RoundID) (coord.RoundRecord, error) {
	r, err := scanRound(t.tx.QueryRowContext(ctx, qRound, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, market.Errorf("get round", market.NotFound, "auction round %s not found", id)
	}
	if err != nil {
		return r, fmt.Errorf("get round %s: %w", id, err)
	}
	return r, nil
}

func (t *sqlTx) Rounds(ctx context.Context, f coord.RoundFilter) ([]coord.RoundRecord, error) {
	var w where
	if f.Machine != "" {
		w.add("machine_id = ?", f.Machine)
	}
	if f.Before > 0 {
		w.add("seq < ?", f.Before)
	}
	q := qRounds + w.sql() + qRoundsOrder
	if f.Limit > 0 {
		w.args = append(w.args, f.Limit)
		q += " LIMIT $" + strconv.Itoa(len(w.args))
	}
	rows, err := t.tx.QueryContext(ctx, q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list rounds: %w", err)
	}
	return collect(rows, scanRound)
}

// storedClocks is what the clocks column holds: the one-value settings,
// flattened as before, and the optional per-GPU list.
type storedClocks struct {
	market.Clocks
	GPU []market.Clocks `json:"gpu,omitempty"`
}
