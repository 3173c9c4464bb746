package sqlite

import (
	"errors"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/gpumarket/gpumarket/internal/sqlstore"
)

// classify maps modernc.org/sqlite's extended result codes to the
// constraint violations the shared store code turns into error kinds.
func classify(err error) sqlstore.Violation {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return sqlstore.NoViolation
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return sqlstore.UniqueViolation
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return sqlstore.ForeignKeyViolation
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return sqlstore.CheckViolation
	}
	return sqlstore.NoViolation
}
