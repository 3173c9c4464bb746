package coord

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gpumarket/gpumarket/internal/market"
)

// errKeyRace says another call recorded the same idempotency key between
// our lookup and our insert; the caller looks again and replays it.
var errKeyRace = errors.New("idempotency key recorded concurrently")

// maxIdemKey is the longest Idempotency-Key accepted.
const maxIdemKey = 200

// idempotent runs a money-moving call once per (caller, key). fn runs in
// the transaction that records the key and the result, so the transfers it
// makes and the record commit together or not at all. A later call with the
// same key and the same request (op and req, compared by hash) returns the
// stored result, errors included; with another request it is refused with
// Conflict. A call that fails for a reason a retry could fix (an internal
// or unavailable error) records nothing.
func idempotent[T any](ctx context.Context, s *Service, caller market.Account, op, key string, req any, fn func(tx Tx) (T, error)) (T, error) {
	var zero T
	switch {
	case key == "":
		return zero, market.Errorf(op, market.Invalid, "this call moves money and needs an Idempotency-Key header, so that a retry cannot move it twice")
	case len(key) > maxIdemKey:
		return zero, market.Errorf(op, market.Invalid, "the Idempotency-Key is %d bytes; use at most %d", len(key), maxIdemKey)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return zero, fmt.Errorf("%s: encode request: %w", op, err)
	}
	sum := sha256.Sum256(append([]byte(op+"\n"), body...))
	hash := hex.EncodeToString(sum[:])
	for attempt := 0; ; attempt++ {
		var out T
		var stored *IdemRecord
		err := s.store.Tx(ctx, func(tx Tx) error {
			rec, err := tx.Idempotency(ctx, caller.ID, key)
			if err == nil {
				stored = &rec
				return nil
			}
			if !market.IsKind(err, market.NotFound) {
				return err
			}
			if out, err = fn(tx); err != nil {
				return err
			}
			resp, err := json.Marshal(out)
			if err != nil {
				return fmt.Errorf("encode result: %w", err)
			}
			err = tx.InsertIdempotency(ctx, IdemRecord{Account: caller.ID, Key: key, Op: op, RequestHash: hash, Response: resp, CreatedAt: s.now()})
			if market.IsKind(err, market.Conflict) {
				return errKeyRace
			}
			return err
		})
		switch {
		case stored != nil:
			return replay[T](op, key, hash, *stored)
		case err == nil:
			return out, nil
		case errors.Is(err, errKeyRace) && attempt < 3:
			continue
		case !final(err):
			return zero, err
		}
		// Record the refusal, so that a retry gets the same answer even
		// if it would now succeed.
		rerr := s.store.Tx(ctx, func(tx Tx) error {
			return tx.InsertIdempotency(ctx, IdemRecord{Account: caller.ID, Key: key, Op: op, RequestHash: hash,
				ErrorKind: market.KindOf(err).String(), ErrorMessage: market.Message(err), Response: []byte("null"), CreatedAt: s.now()})
		})
		if market.IsKind(rerr, market.Conflict) && attempt < 3 {
			continue // a concurrent call recorded first: replay it
		}
		if rerr != nil {
			return zero, errors.Join(err, fmt.Errorf("record the refusal of key %q: %w", key, rerr))
		}
		return zero, err
	}
}

// final reports whether err is an answer to the request rather than an
// accident: it is recorded and replayed.
func final(err error) bool {
	switch market.KindOf(err) {
	case market.Invalid, market.NotFound, market.Conflict, market.Forbidden, market.InsufficientFunds:
		return true
	}
	return false
}

func replay[T any](op, key, hash string, rec IdemRecord) (T, error) {
	var out T
	if rec.RequestHash != hash {
		what := rec.Op
		if rec.Op == op {
			what = "different " + op
		}
		return out, market.Errorf(op, market.Conflict, "idempotency key %q was used for a %s request; use a new key for a new request", key, what)
	}
	if rec.ErrorKind != "" {
		return out, market.Errorf(op, market.KindFromString(rec.ErrorKind), "%s", rec.ErrorMessage)
	}
	if err := json.Unmarshal(rec.Response, &out); err != nil {
		return out, fmt.Errorf("%s: decode the stored result of key %q: %w", op, key, err)
	}
	return out, nil
}
