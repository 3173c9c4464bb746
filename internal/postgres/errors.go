package postgres

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gpumarket/gpumarket/internal/sqlstore"
)

// SQLSTATE codes this store acts on
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeCheckViolation       = "23514"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// classify maps Postgres's SQLSTATE codes to the constraint violations the
// shared store code turns into error kinds.
func classify(err error) sqlstore.Violation {
	var e *pgconn.PgError
	if !errors.As(err, &e) {
		return sqlstore.NoViolation
	}
	switch e.Code {
	case codeUniqueViolation:
		return sqlstore.UniqueViolation
	case codeForeignKeyViolation:
		return sqlstore.ForeignKeyViolation
	case codeCheckViolation:
		return sqlstore.CheckViolation
	}
	return sqlstore.NoViolation
}

// retryable reports whether err failed a transaction only because it
// collided with another one, so that running it again may succeed.
func retryable(err error) bool {
	var e *pgconn.PgError
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == codeSerializationFailure || e.Code == codeDeadlockDetected
}
