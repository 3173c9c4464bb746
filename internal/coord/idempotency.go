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

// idemCall is one money-moving call made under an Idempotency-Key: who
// made it, the key, and the hash of what was asked (op and request).
type idemCall struct {
	caller market.AccountID
	op     string
	key    string
	hash   string
}

func newIdemCall(caller market.AccountID, op, key string, req any) (idemCall, error) {
	switch {
	case key == "":
		return idemCall{}, market.Errorf(op, market.Invalid, "this call moves money and needs an Idempotency-Key header, so that a retry cannot move it twice")
	case len(key) > maxIdemKey:
		return idemCall{}, market.Errorf(op, market.Invalid, "the Idempotency-Key is %d bytes; use at most %d", len(key), maxIdemKey)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return idemCall{}, fmt.Errorf("%s: encode request: %w", op, err)
	}
	sum := sha256.Sum256(append([]byte(op+"\n"), body...))
	return idemCall{caller: caller, op: op, key: key, hash: hex.EncodeToString(sum[:])}, nil
}

// recordedError ends a transaction that found the key already recorded:
// the call was made before, and its answer is replayed.
type recordedError struct{ rec IdemRecord }

func (e *recordedError) Error() string { return "idempotency key " + e.rec.Key + " already recorded" }

// begin starts the call in tx: when the key is recorded it returns a
// *recordedError, and tx must end without effects.
func (c idemCall) begin(ctx context.Context, tx Tx) error {
	rec, err := tx.Idempotency(ctx, c.caller, c.key)
	switch {
	case err == nil:
		return &recordedError{rec}
	case market.IsKind(err, market.NotFound):
		return nil
	}
	return err
}

// record stores out as the call's result in tx, the transaction that made
// its effects, so that both commit or neither does.
func (c idemCall) record(ctx context.Context, tx Tx, out any, s *Service) error {
	resp, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	err = tx.InsertIdempotency(ctx, IdemRecord{Account: c.caller, Key: c.key, Op: c.op, RequestHash: c.hash, Response: resp, CreatedAt: s.now()})
	if market.IsKind(err, market.Conflict) {
		return errKeyRace
	}
	return err
}

// idempotent runs a money-moving call once per (caller, key). fn runs in
// the transaction that records the key and the result, so the transfers it
// makes and the record commit together or not at all. A later call with the
// same key and the same request (op and req, compared by hash) returns the
// stored result, errors included; with another request it is refused with
// Conflict. A call that fails for a reason a retry could fix (an internal
// or unavailable error) records nothing.
func idempotent[T any](ctx context.Context, s *Service, caller market.Account, op, key string, req any, fn func(tx Tx) (T, error)) (T, error) {
	c, err := newIdemCall(caller.ID, op, key, req)
	if err != nil {
		var zero T
		return zero, err
	}
	return once(ctx, s, c, func() (T, error) {
		var out T
		err := s.store.Tx(ctx, func(tx Tx) error {
			if err := c.begin(ctx, tx); err != nil {
				return err
			}
			var err error
			if out, err = fn(tx); err != nil {
				return err
			}
			return c.record(ctx, tx, out, s)
		})
		return out, err
	})
}

// once makes call c with attempt and settles its answer. attempt makes the
// call's effects in one transaction, or tries several (createAuto tries
// one offer per transaction); each must begin with c.begin and the one
// that takes effect must end with c.record. once replays a recorded
// answer, tries again when a concurrent call with the key won the race,
// and records a final refusal, so that a retry gets the same answer even
// if it would now succeed.
func once[T any](ctx context.Context, s *Service, c idemCall, attempt func() (T, error)) (T, error) {
	var zero T
	for try := 0; ; try++ {
		out, err := attempt()
		var rec *recordedError
		switch {
		case errors.As(err, &rec):
			return replay[T](c, rec.rec)
		case err == nil:
			return out, nil
		case errors.Is(err, errKeyRace) && try < 3:
			continue
		case !final(err):
			// A concurrent call with the key may have taken effect
			// meanwhile (and taken what this attempt wanted, as an auto
			// create finding no offer left): its answer stands.
			lerr := s.store.Tx(ctx, func(tx Tx) error { return c.begin(ctx, tx) })
			if errors.As(lerr, &rec) {
				return replay[T](c, rec.rec)
			}
			return zero, err
		}
		rerr := s.store.Tx(ctx, func(tx Tx) error {
			if err := c.begin(ctx, tx); err != nil {
				return err
			}
			return tx.InsertIdempotency(ctx, IdemRecord{Account: c.caller, Key: c.key, Op: c.op, RequestHash: c.hash,
				ErrorKind: market.KindOf(err).String(), ErrorMessage: market.Message(err), Response: []byte("null"), CreatedAt: s.now()})
		})
		switch {
		case errors.As(rerr, &rec):
			return replay[T](c, rec.rec) // recorded meanwhile: that answer stands
		case market.IsKind(rerr, market.Conflict) && try < 3:
			continue // a concurrent call recorded first: replay it
		case rerr != nil:
			return zero, errors.Join(err, fmt.Errorf("record the refusal of key %q: %w", c.key, rerr))
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

func replay[T any](c idemCall, rec IdemRecord) (T, error) {
	var out T
	if rec.RequestHash != c.hash {
		what := rec.Op
		if rec.Op == c.op {
			what = "different " + c.op
		}
		return out, market.Errorf(c.op, market.Conflict, "idempotency key %q was used for a %s request; use a new key for a new request", c.key, what)
	}
	if rec.ErrorKind != "" {
		return out, market.Errorf(c.op, market.KindFromString(rec.ErrorKind), "%s", rec.ErrorMessage)
	}
	if err := json.Unmarshal(rec.Response, &out); err != nil {
		return out, fmt.Errorf("%s: decode the stored result of key %q: %w", c.op, c.key, err)
	}
	return out, nil
}

// Instance creates. CreateInstance may try several offers, one
// transaction each (createAuto), so its key travels in the context: each
// of its transactions begins with beginCreate and the one that rents ends
// with recordCreate. Creates made without a key (deployments)
// carry none and are unaffected.

type createKey struct{}

// CreateInstanceOnce is CreateInstance under an Idempotency-Key: a retry
// with the same key and request returns the first result, errors
// included, and makes no second instance or escrow hold; the same key
// with another request is refused. The key is recorded in the
// transaction that reserves the GPUs and holds the escrow.
func (s *Service) CreateInstanceOnce(ctx context.Context, caller market.Account, key string, req market.CreateInstanceRequest) (market.Instance, error) {
	c, err := newIdemCall(caller.ID, "create instance", key, req)
	if err != nil {
		return market.Instance{}, err
	}
	ctx = context.WithValue(ctx, createKey{}, c)
	return once(ctx, s, c, func() (market.Instance, error) { return s.CreateInstance(ctx, caller, req) })
}

// beginCreate starts a create's transaction: with a recorded key it ends
// it with a *recordedError, to replay.
func beginCreate(ctx context.Context, tx Tx) error {
	if c, ok := ctx.Value(createKey{}).(idemCall); ok {
		return c.begin(ctx, tx)
	}
	return nil
}

// recordCreate records inst as the result of a create's key, in the
// transaction that made it.
func (s *Service) recordCreate(ctx context.Context, tx Tx, inst market.Instance) error {
	if c, ok := ctx.Value(createKey{}).(idemCall); ok {
		return c.record(ctx, tx, inst, s)
	}
	return nil
}
