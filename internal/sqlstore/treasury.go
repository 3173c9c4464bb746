package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Withdrawals, stake removals, dividend statements and idempotency records
// (migration 0004), and the ledger queries they need.

const (
	// $1 account, $2 from, $3 to (0 = none), then the kinds. The entries'
	// own kind and time (migration 0018) bound what is read to the
	// account's entries of those kinds in the window, through
	// transfer_entries_account_kind_at; the transfer is joined for its
	// asset only. The CAST keeps Postgres from taking $3 for an int4 (from
	// "$3 <= 0").
	qFlowPrefix = `SELECT COALESCE(SUM(e.amount), 0) FROM transfer_entries e JOIN transfers t ON t.seq = e.transfer_seq
WHERE e.account = $1 AND e.at >= $2 AND (CAST($3 AS BIGINT) <= 0 OR e.at < $3) AND e.kind IN ` // + ($4, ...)
	// qFlowsPrefix is qFlowPrefix for the accounts of an array ($1,
	// Postgres), summed per account. flowsPerStmt bounds the array. Fewer,
	// larger statements: with 100 accounts each, Postgres planned every
	// statement as a hash join over all the window's transfers (2,000
	// renters' spending: 342 ms, against 66-93 ms with one statement).
	flowsPerStmt = 5000
	qFlowsPrefix = `SELECT e.account, COALESCE(SUM(e.amount), 0) FROM transfer_entries e JOIN transfers t ON t.seq = e.transfer_seq
WHERE e.account = ANY($1::text[]) AND e.at >= $2 AND (CAST($3 AS BIGINT) <= 0 OR e.at < $3) AND e.kind IN `
	// $1 the fee account, $2 from, $3 to (0 = none), $4 the platform
	// token (fees are taken in it): the window's fee entries, through
	// transfer_entries_account_kind_at as for Flow.
	qFeesByDay = `SELECT e.at / 86400000000 AS day, CAST(SUM(e.amount) AS BIGINT)
FROM transfer_entries e JOIN transfers t ON t.seq = e.transfer_seq
WHERE e.account = $1 AND e.at >= $2 AND (CAST($3 AS BIGINT) <= 0 OR e.at < $3)
  AND e.kind IN ('charge', 'charges', 'refund') AND t.asset = $4
GROUP BY e.at / 86400000000
ORDER BY day`
	qTransfersByKindPrefix = `SELECT ` + transferJoinColumns + `
FROM transfers t JOIN transfer_entries e ON e.transfer_seq = t.seq
WHERE t.at < $1 AND t.kind <> 'charge' AND t.kind <> 'charges' AND t.kind IN ` // + ($2, ...) + qTransfersByKindOrder
	qTransfersByKindOrder = ` ORDER BY t.seq, e.idx`

	idemColumns        = `account_id, idem_key, op, request_hash, error_kind, error_message, response, created_at`
	qInsertIdempotency = `INSERT INTO idempotency_keys (` + idemColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	qIdempotency       = `SELECT ` + idemColumns + ` FROM idempotency_keys WHERE account_id = $1 AND idem_key = $2`
	qIdempotencies     = `SELECT ` + idemColumns + ` FROM idempotency_keys` // + WHERE (account_id = ... AND idem_key = ...) OR ...

	withdrawalColumns = `id, account_id, asset, amount, state, reason, created_at, decided_at, decided_by`
	qInsertWithdrawal = `INSERT INTO withdrawals (` + withdrawalColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	qUpdateWithdrawal = `UPDATE withdrawals SET account_id = $2, asset = $3, amount = $4, state = $5, reason = $6, created_at = $7, decided_at = $8, decided_by = $9 WHERE id = $1`
	qWithdrawal       = `SELECT ` + withdrawalColumns + ` FROM withdrawals WHERE id = $1`
	qWithdrawals      = `SELECT ` + withdrawalColumns + ` FROM withdrawals` // + filter + order
	qWithdrawalsOrder = ` ORDER BY created_at, id`

	unstakeColumns = `id, account_id, amount, at, release_at, released`
	qInsertUnstake = `INSERT INTO unstakes (` + unstakeColumns + `) VALUES ($1, $2, $3, $4, $5, $6)`
	qUpdateUnstake = `UPDATE unstakes SET account_id = $2, amount = $3, at = $4, release_at = $5, released = $6 WHERE id = $1`
	qUnstakes      = `SELECT ` + unstakeColumns + ` FROM unstakes` // + filter + order
	qUnstakesOrder = ` ORDER BY at, id`

	qInsertStatement = `INSERT INTO dividend_statements (period, asset, statement, at) VALUES ($1, $2, $3, $4)`
	qStatementExists = `SELECT period FROM dividend_statements WHERE period = $1`
	qStatement       = `SELECT statement FROM dividend_statements WHERE period = $1`
	qStatements      = `SELECT statement FROM dividend_statements ORDER BY period DESC LIMIT $1`
)

func (t *sqlTx) Flow(ctx context.Context, f coord.FlowFilter) (market.Money, error) {
	cond, args := flowCond(f, []any{f.Account})
	var v int64
	if err := t.tx.QueryRowContext(ctx, qFlowPrefix+cond, args...).Scan(&v); err != nil {
		return 0, fmt.Errorf("flow of %s: %w", f.Account, err)
	}
	return market.Money(v), nil
}

// flowCond is the rest of a flow query's condition after qFlowPrefix's
// (from $2, to $3, then the kinds and the asset), and its arguments after
// args (the account, $1).
func flowCond(f coord.FlowFilter, args []any) (string, []any) {
	var to int64
	if !f.To.IsZero() {
		to = micros(f.To)
	}
	args = append(args, micros(f.From), to)
	var ph []string
	for _, k := range append([]market.TransferKind{f.Kind}, f.Kinds...) {
		args = append(args, string(k))
		ph = append(ph, "$"+strconv.Itoa(len(args)))
	}
	cond := "(" + strings.Join(ph, ", ") + ")"
	if f.Asset != "" {
		args = append(args, string(f.Asset))
		cond += " AND t.asset = $" + strconv.Itoa(len(args))
	}
	return cond, args
}

// FlowsOf sums, per account of accounts, what Flow sums for f.Account. On
// Postgres (more than one row per statement) a statement sums up to
// flowsPerStmt accounts, given as one array; elsewhere each is its own, as
// BalancesOf's.
func (t *sqlTx) FlowsOf(ctx context.Context, f coord.FlowFilter, accounts []market.LedgerAccount) (map[market.LedgerAccount]market.Money, error) {
	out := make(map[market.LedgerAccount]market.Money, len(accounts))
	if t.rowsPerStmt == 1 {
		for _, a := range accounts {
			f.Account = a
			v, err := t.Flow(ctx, f)
			if err != nil {
				return nil, err
			}
			if v != 0 {
				out[a] = v
			}
		}
		return out, nil
	}
	for chunk := range slices.Chunk(accounts, flowsPerStmt) {
		// $1 is the array of accounts: one statement text for any number.
		list := make([]string, len(chunk))
		for i, a := range chunk {
			list[i] = string(a)
		}
		cond, args := flowCond(f, []any{list})
		rows, err := t.tx.QueryContext(ctx, qFlowsPrefix+cond+" GROUP BY e.account", args...)
		if err != nil {
			return nil, fmt.Errorf("flows of %d accounts: %w", len(chunk), err)
		}
		type sum struct {
			account string
			amount  int64
		}
		sums, err := collect(rows, func(r scanner) (sum, error) {
			var s sum
			return s, r.Scan(&s.account, &s.amount)
		})
		if err != nil {
			return nil, fmt.Errorf("flows of %d accounts: %w", len(chunk), err)
		}
		for _, s := range sums {
			if s.amount != 0 {
				out[market.LedgerAccount(s.account)] = market.Money(s.amount)
			}
		}
	}
	return out, nil
}

func (t *sqlTx) FeesByDay(ctx context.Context, from, to time.Time) ([]coord.DayFlow, error) {
	var end int64
	if !to.IsZero() {
		end = micros(to)
	}
	rows, err := t.tx.QueryContext(ctx, qFeesByDay, market.FeesAccount, micros(from), end, market.DefaultAsset)
	if err != nil {
		return nil, fmt.Errorf("fees by day: %w", err)
	}
	out, err := collect(rows, func(r scanner) (coord.DayFlow, error) {
		var day, amount int64
		err := r.Scan(&day, &amount)
		return coord.DayFlow{Day: fromMicros(day * int64(24*time.Hour/time.Microsecond)), Amount: market.Money(amount)}, err
	})
	if err != nil {
		return nil, fmt.Errorf("fees by day: %w", err)
	}
	return out, nil
}

func (t *sqlTx) TransfersByKind(ctx context.Context, kinds []market.TransferKind, until time.Time) ([]market.Transfer, error) {
	if len(kinds) == 0 {
		return nil, nil
	}
	args := []any{micros(until)}
	ph := make([]string, len(kinds))
	for i, k := range kinds {
		args = append(args, string(k))
		ph[i] = "$" + strconv.Itoa(i+2)
	}
	rows, err := t.tx.QueryContext(ctx, qTransfersByKindPrefix+"("+strings.Join(ph, ", ")+")"+qTransfersByKindOrder, args...)
	if err != nil {
		return nil, fmt.Errorf("transfers by kind: %w", err)
	}
	got, err := collect(rows, scanTransferRow)
	if err != nil {
		return nil, fmt.Errorf("transfers by kind: %w", err)
	}
	return groupTransfers(got), nil
}

func (t *sqlTx) InsertIdempotency(ctx context.Context, r coord.IdemRecord) error {
	const op = "record idempotency key"
	if t.keeping() {
		t.goOn()
		t.kept.records = append(t.kept.records, r)
		return nil
	}
	conflict := market.Errorf(op, market.Conflict, "idempotency key %q was already used", r.Key)
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertIdempotency, r.Account, r.Key, r.Op, r.RequestHash, r.ErrorKind, r.ErrorMessage, string(r.Response), micros(r.CreatedAt))
		if t.classify(err) == UniqueViolation {
			return conflict
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	})
}

func scanIdempotency(s scanner) (coord.IdemRecord, error) {
	var r coord.IdemRecord
	var resp string
	var created int64
	err := s.Scan(&r.Account, &r.Key, &r.Op, &r.RequestHash, &r.ErrorKind, &r.ErrorMessage, &resp, &created)
	r.Response = []byte(resp)
	r.CreatedAt = fromMicros(created)
	return r, err
}

func (t *sqlTx) Idempotency(ctx context.Context, account market.AccountID, key string) (coord.IdemRecord, error) {
	r, err := scanIdempotency(t.tx.QueryRowContext(ctx, qIdempotency, account, key))
	if err == sql.ErrNoRows {
		return r, market.Errorf("get idempotency key", market.NotFound, "no call recorded with key %q", key)
	}
	if err != nil {
		return r, fmt.Errorf("get idempotency key: %w", err)
	}
	return r, nil
}

// IdempotencyOf reads the records of keys' accounts with keys' keys, and
// keeps those of keys.
func (t *sqlTx) IdempotencyOf(ctx context.Context, keys []coord.IdemKey) (map[coord.IdemKey]coord.IdemRecord, error) {
	out := make(map[coord.IdemKey]coord.IdemRecord, len(keys))
	for chunk := range slices.Chunk(keys, inList/2) {
		pairs := make([][2]string, len(chunk))
		for i, k := range chunk {
			pairs[i] = [2]string{string(k.Account), k.Key}
		}
		var w where
		w.pairs("account_id", "idem_key", pairs)
		rows, err := t.tx.QueryContext(ctx, qIdempotencies+w.sql(), w.args...)
		if err != nil {
			return nil, fmt.Errorf("get idempotency keys: %w", err)
		}
		rs, err := collect(rows, scanIdempotency)
		if err != nil {
			return nil, fmt.Errorf("get idempotency keys: %w", err)
		}
		for _, r := range rs {
			out[coord.IdemKey{Account: r.Account, Key: r.Key}] = r
		}
	}
	return out, nil
}

// Withdrawals.

func withdrawalArgs(w market.Withdrawal) []any {
	return []any{w.ID, w.Account, string(w.Asset), int64(w.Amount), string(w.State), w.Reason, micros(w.CreatedAt), nullMicros(w.DecidedAt), w.DecidedBy}
}

func scanWithdrawal(s scanner) (market.Withdrawal, error) {
	var w market.Withdrawal
	var amount, created int64
	var decided sql.NullInt64
	err := s.Scan(&w.ID, &w.Account, &w.Asset, &amount, &w.State, &w.Reason, &created, &decided, &w.DecidedBy)
	w.Amount = market.Money(amount)
	w.CreatedAt = fromMicros(created)
	w.DecidedAt = fromNullMicros(decided)
	return w, err
}

func (t *sqlTx) InsertWithdrawal(ctx context.Context, w market.Withdrawal) error {
	_, err := t.tx.ExecContext(ctx, qInsertWithdrawal, withdrawalArgs(w)...)
	if t.classify(err) == UniqueViolation {
		return market.Errorf("insert withdrawal", market.Conflict, "withdrawal %s exists", w.ID)
	}
	if err != nil {
		return fmt.Errorf("insert withdrawal %s: %w", w.ID, err)
	}
	return nil
}

func (t *sqlTx) UpdateWithdrawal(ctx context.Context, w market.Withdrawal) error {
	res, err := t.tx.ExecContext(ctx, qUpdateWithdrawal, withdrawalArgs(w)...)
	if err != nil {
		return fmt.Errorf("update withdrawal %s: %w", w.ID, err)
	}
	return mustAffect(res, market.Errorf("update withdrawal", market.NotFound, "no withdrawal %s", w.ID))
}

func (t *sqlTx) Withdrawal(ctx context.Context, id market.WithdrawalID) (market.Withdrawal, error) {
	w, err := scanWithdrawal(t.tx.QueryRowContext(ctx, qWithdrawal, id))
	if err == sql.ErrNoRows {
		return w, market.Errorf("get withdrawal", market.NotFound, "no withdrawal %s", id)
	}
	if err != nil {
		return w, fmt.Errorf("get withdrawal %s: %w", id, err)
	}
	return w, nil
}

func (t *sqlTx) Withdrawals(ctx context.Context, f coord.WithdrawalFilter) ([]market.Withdrawal, error) {
	var w where
	if f.Account != "" {
		w.add("account_id = ?", f.Account)
	}
	if f.State != "" {
		w.add("state = ?", string(f.State))
	}
	rows, err := t.tx.QueryContext(ctx, qWithdrawals+w.sql()+qWithdrawalsOrder, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list withdrawals: %w", err)
	}
	return collect(rows, scanWithdrawal)
}

// Stake removals.

func scanUnstake(s scanner) (market.Unstake, error) {
	var u market.Unstake
	var amount, at, release int64
	err := s.Scan(&u.ID, &u.Account, &amount, &at, &release, &u.Released)
	u.Amount = market.Money(amount)
	u.At = fromMicros(at)
	u.ReleaseAt = fromMicros(release)
	return u, err
}

func (t *sqlTx) InsertUnstake(ctx context.Context, u market.Unstake) error {
	_, err := t.tx.ExecContext(ctx, qInsertUnstake, u.ID, u.Account, int64(u.Amount), micros(u.At), micros(u.ReleaseAt), u.Released)
	if t.classify(err) == UniqueViolation {
		return market.Errorf("insert unstake", market.Conflict, "unstake %s exists", u.ID)
	}
	if err != nil {
		return fmt.Errorf("insert unstake %s: %w", u.ID, err)
	}
	return nil
}

func (t *sqlTx) UpdateUnstake(ctx context.Context, u market.Unstake) error {
	res, err := t.tx.ExecContext(ctx, qUpdateUnstake, u.ID, u.Account, int64(u.Amount), micros(u.At), micros(u.ReleaseAt), u.Released)
	if err != nil {
		return fmt.Errorf("update unstake %s: %w", u.ID, err)
	}
	return mustAffect(res, market.Errorf("update unstake", market.NotFound, "no unstake %s", u.ID))
}

func (t *sqlTx) Unstakes(ctx context.Context, f coord.UnstakeFilter) ([]market.Unstake, error) {
	var w where
	if f.Account != "" {
		w.add("account_id = ?", f.Account)
	}
	if f.Unreleased {
		w.add("released = ?", false)
	}
	if f.DueBy != nil {
		w.add("release_at <= ?", micros(*f.DueBy))
	}
	rows, err := t.tx.QueryContext(ctx, qUnstakes+w.sql()+qUnstakesOrder, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list unstakes: %w", err)
	}
	return collect(rows, scanUnstake)
}

// Dividend statements.

func (t *sqlTx) InsertStatement(ctx context.Context, st market.DividendStatement) error {
	const op = "insert dividend statement"
	conflict := market.Errorf(op, market.Conflict, "period %d already has a statement", st.Period)
	if ok, err := t.exists(ctx, qStatementExists, st.Period); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if ok {
		return conflict
	}
	js, err := toJSON(st)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertStatement, st.Period, string(st.Asset), js, micros(st.At))
		if t.classify(err) == UniqueViolation {
			return conflict
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	})
}

func scanStatement(s scanner) (market.DividendStatement, error) {
	var st market.DividendStatement
	var js string
	if err := s.Scan(&js); err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		return st, fmt.Errorf("decode dividend statement: %w", err)
	}
	return st, nil
}

func (t *sqlTx) Statement(ctx context.Context, period int64) (market.DividendStatement, error) {
	st, err := scanStatement(t.tx.QueryRowContext(ctx, qStatement, period))
	if err == sql.ErrNoRows {
		return st, market.Errorf("get dividend statement", market.NotFound, "no dividend statement for period %d", period)
	}
	if err != nil {
		return st, fmt.Errorf("get dividend statement %d: %w", period, err)
	}
	return st, nil
}

func (t *sqlTx) Statements(ctx context.Context, limit int) ([]market.DividendStatement, error) {
	rows, err := t.tx.QueryContext(ctx, qStatements, limitOf(limit))
	if err != nil {
		return nil, fmt.Errorf("list dividend statements: %w", err)
	}
	return collect(rows, scanStatement)
}
