package market

import (
	"errors"
	"fmt"
)

// Kind classifies an error so that edges (HTTP, CLI) can react to it without
// looking at strings. The list is append-only.
type Kind uint8

// Error kinds.
const (
	KindOther Kind = iota
	NotFound
	Invalid
	Conflict
	Unauthorized
	Forbidden
	InsufficientFunds
	Unavailable
	Internal
)

var kindNames = [...]string{
	KindOther:         "other",
	NotFound:          "not_found",
	Invalid:           "invalid",
	Conflict:          "conflict",
	Unauthorized:      "unauthorized",
	Forbidden:         "forbidden",
	InsufficientFunds: "insufficient_funds",
	Unavailable:       "unavailable",
	Internal:          "internal",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// KindFromString is the inverse of Kind.String; unknown names give KindOther.
func KindFromString(s string) Kind {
	for k, n := range kindNames {
		if n == s {
			return Kind(k)
		}
	}
	return KindOther
}

// Error is the one error type of gpumarket. Op names the operation that
// failed ("create instance"), Kind classifies it, Err carries the cause or a
// user-facing message.
type Error struct {
	Op   string
	Kind Kind
	Err  error
}

func (e *Error) Error() string {
	switch {
	case e.Op == "":
		return e.Err.Error()
	case e.Err == nil:
		return e.Op + ": " + e.Kind.String()
	default:
		return e.Op + ": " + e.Err.Error()
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted message. The message is what a
// user sees, so it should say what was wrong and how to fix it.
func Errorf(op string, kind Kind, format string, args ...any) error {
	return &Error{Op: op, Kind: kind, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the kind of the outermost *Error in err's chain that has a
// kind other than KindOther, or Internal when there is none.
func KindOf(err error) Kind {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return Internal
		}
		if e.Kind != KindOther {
			return e.Kind
		}
		err = e.Err
	}
	return Internal
}

// IsKind reports whether err has kind k.
func IsKind(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// Message returns the user-facing text of err without the chain of Op
// prefixes, for errors whose kind is not Internal.
func Message(err error) string {
	var e *Error
	for errors.As(err, &e) {
		if e.Err == nil {
			return e.Kind.String()
		}
		var inner *Error
		if !errors.As(e.Err, &inner) {
			return e.Err.Error()
		}
		err = e.Err
	}
	return err.Error()
}
