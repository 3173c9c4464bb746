package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Batched billing (issue 7): the billing tick charges a minute of every
// running instance, which at 100,000 instances is 100,000 transfers a
// minute. ApplyTransfers writes a batch of them in one go: one counter
// update for all their sequence numbers, the transfers and entries with
// prepared statements reused row after row (SQLite) or many rows per
// statement (Postgres, where each statement is a round trip; see
// RunTxRows), and one balance change per account and asset for the net of
// the whole batch. Every statement is SQL both databases accept: multi-row
// VALUES, ON CONFLICT upserts, UPDATE ... FROM (VALUES ...), whose columns
// both name column1, column2, ... (with CASTs, so that Postgres knows the
// parameters' types).

const (
	qBumpCounter = `INSERT INTO counters (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value
RETURNING value`
	qInsertTransfersPrefix = `INSERT INTO transfers (` + transferColumns + `) VALUES `
	qInsertEntriesPrefix   = `INSERT INTO transfer_entries (transfer_seq, idx, account, owner_id, amount, at, kind) VALUES `
	qAddBalancesPrefix     = `INSERT INTO balances (account, asset, amount) VALUES `
	qAddBalancesSuffix     = ` ON CONFLICT (account, asset) DO UPDATE SET amount = balances.amount + excluded.amount`
	qSubBalanceOne         = `UPDATE balances SET amount = amount + $3 WHERE account = $1 AND asset = $2`
	qSubBalancesPrefix     = `UPDATE balances SET amount = balances.amount + v.column3 FROM (VALUES `
	qSubBalancesSuffix     = `) AS v WHERE balances.account = v.column1 AND balances.asset = v.column2`
	qBalancesOfPrefix      = `SELECT account, amount FROM balances WHERE asset = $1 AND account IN `

	// The partial index instances_unsettled (migration 0007) covers
	// settled = FALSE; SQLite uses it only when the query says so literally.
	qBillable = `SELECT i.id, i.renter_id, m.owner_id, i.kind, i.state, i.price_per_hour, i.price_per_day,
i.escrow, i.started_at, i.stop_at, i.billed_minutes, i.charged,
COALESCE(mp.pool, ''), CASE WHEN mp.pool IS NULL THEN '' ELSE i.gpus END
FROM instances i JOIN machines m ON m.id = i.machine_id LEFT JOIN machine_pools mp ON mp.machine_id = i.machine_id
WHERE i.settled = FALSE AND i.started_at IS NOT NULL AND i.id > $1
ORDER BY i.id LIMIT $2`
	qRecordBillingOne    = `UPDATE instances SET billed_minutes = $3, charged = $4, escrow = $5 WHERE id = $1 AND billed_minutes = $2`
	qRecordBillingPrefix = `UPDATE instances SET billed_minutes = v.column3, charged = v.column4, escrow = v.column5 FROM (VALUES `
	qRecordBillingSuffix = `) AS v WHERE instances.id = v.column1 AND instances.billed_minutes = v.column2`
)

// rowWrite is a statement that writes one row per group of cols
// parameters: one is its form for a single row, many(k) for k rows.
type rowWrite struct {
	one  string
	many func(k int) string
	cols int
}

// valuesWrite is the rowWrite prefix VALUES (...), ... suffix, with each
// column's placeholder wrapped in CAST(... AS cast[c]) when cast is given.
func valuesWrite(prefix, suffix string, cols int, cast []string) rowWrite {
	many := func(k int) string { return prefix + valuesList(k, cols, 1, cast) + suffix }
	return rowWrite{one: many(1), many: many, cols: cols}
}

// writeRows runs w for n rows, t.rowsPerStmt rows per statement, each
// statement prepared once and reused; row appends the values of row i to
// args. It returns the rows affected and the first error as the driver
// gave it, for the caller to classify.
func (t *sqlTx) writeRows(ctx context.Context, w rowWrite, n int, row func(i int, args []any) []any) (int64, error) {
	// The rows run without ctx's cancellation: modernc's SQLite starts a
	// goroutine per statement to watch a cancellable context, which costs
	// more than the row. Cancelling ctx still ends the transaction (its
	// statements then fail), between rows rather than in one.
	ctx = context.WithoutCancel(ctx)
	stmts := map[int]*sql.Stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	var affected int64
	args := make([]any, 0, w.cols*min(n, t.rowsPerStmt))
	for start := 0; start < n; start += t.rowsPerStmt {
		k := min(t.rowsPerStmt, n-start)
		st := stmts[k]
		if st == nil {
			q := w.one
			if k > 1 {
				q = w.many(k)
			}
			var err error
			if st, err = t.tx.PrepareContext(ctx, q); err != nil {
				return affected, err
			}
			stmts[k] = st
		}
		args = args[:0]
		for i := start; i < start+k; i++ {
			args = row(i, args)
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return affected, err
		}
		a, err := res.RowsAffected()
		if err != nil {
			return affected, err
		}
		affected += a
	}
	return affected, nil
}

// valuesList returns "($k, $k+1, ...), (...)" for rows rows of cols
// columns, numbering from first; cast, when not nil, wraps column c's
// placeholder in CAST(... AS cast[c]).
func valuesList(rows, cols, first int, cast []string) string {
	var b strings.Builder
	n := first
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			if cast != nil {
				b.WriteString("CAST($" + strconv.Itoa(n) + " AS " + cast[c] + ")")
			} else {
				b.WriteString("$" + strconv.Itoa(n))
			}
			n++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// balanceKey is one account in one asset.
type balanceKey struct {
	account market.LedgerAccount
	asset   market.Asset
}

func (t *sqlTx) ApplyTransfers(ctx context.Context, ts []market.Transfer) ([]market.Transfer, error) {
	const op = "apply transfers"
	if len(ts) == 0 {
		return nil, nil
	}
	out := make([]market.Transfer, len(ts))
	net := map[balanceKey]market.Money{}
	var order []balanceKey
	keys := make(map[string]bool, len(ts))
	for i, tr := range ts {
		n, err := checkTransfer(op, tr)
		if err != nil {
			return nil, err
		}
		if keys[tr.Key] {
			return nil, market.Errorf(op, market.Conflict, "transfer key %q appears twice in one batch", tr.Key)
		}
		keys[tr.Key] = true
		for _, e := range n {
			k := balanceKey{e.Account, tr.Asset}
			if _, ok := net[k]; !ok {
				order = append(order, k)
			}
			s := net[k] + e.Amount
			if (e.Amount > 0 && s < net[k]) || (e.Amount < 0 && s > net[k]) {
				return nil, market.Errorf(op, market.Invalid, "transfer %s: amounts overflow", tr.ID)
			}
			net[k] = s
		}
		tr.At = fromMicros(micros(tr.At))
		out[i] = tr
	}
	// Check the accounts the batch takes from before writing, for a
	// message that says how much is missing; the update checks again.
	var debits, credits []balanceKey
	byAsset := map[market.Asset][]market.LedgerAccount{}
	for _, k := range order {
		switch d := net[k]; {
		case d < 0 && !k.account.MayGoNegative():
			debits = append(debits, k)
			byAsset[k.asset] = append(byAsset[k.asset], k.account)
		case d != 0:
			credits = append(credits, k)
		}
	}
	for asset, accts := range byAsset {
		have, err := t.BalancesOf(ctx, asset, accts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		for _, a := range accts {
			if d := net[balanceKey{a, asset}]; have[a]+d < 0 {
				return nil, insufficient(op, a, asset, have[a], d)
			}
		}
	}
	err := t.atomic(ctx, func() error {
		var last int64
		if err := t.tx.QueryRowContext(ctx, qBumpCounter, counterTransfer, int64(len(out))).Scan(&last); err != nil {
			return fmt.Errorf("%s: next seq: %w", op, err)
		}
		first := last - int64(len(out)) + 1
		for i := range out {
			out[i].Seq = first + int64(i)
		}
		_, err := t.writeRows(ctx, valuesWrite(qInsertTransfersPrefix, "", 9, nil), len(out), func(i int, a []any) []any {
			tr := &out[i]
			return append(a, tr.Seq, tr.ID, tr.Key, string(tr.Kind), string(tr.Asset), tr.Instance, tr.Minute, tr.Memo, micros(tr.At))
		})
		if t.classify(err) == UniqueViolation {
			return market.Errorf(op, market.Conflict, "a transfer of the batch (%d, first %s) has an id, key or charged minute already recorded", len(out), out[0].Key)
		}
		if err != nil {
			return fmt.Errorf("%s: insert transfers: %w", op, err)
		}
		type entryRow struct {
			tr  *market.Transfer
			idx int
		}
		var entries []entryRow
		for i := range out {
			for k := range out[i].Entries {
				entries = append(entries, entryRow{&out[i], k})
			}
		}
		_, err = t.writeRows(ctx, valuesWrite(qInsertEntriesPrefix, "", entryCols, nil), len(entries), func(i int, a []any) []any {
			return appendEntry(a, entries[i].tr, entries[i].idx)
		})
		if err != nil {
			return fmt.Errorf("%s: insert entries: %w", op, err)
		}
		_, err = t.writeRows(ctx, valuesWrite(qAddBalancesPrefix, qAddBalancesSuffix, 3, nil), len(credits), func(i int, a []any) []any {
			k := credits[i]
			return append(a, k.account, string(k.asset), int64(net[k]))
		})
		if err != nil {
			return fmt.Errorf("%s: credit balances: %w", op, err)
		}
		sub := valuesWrite(qSubBalancesPrefix, qSubBalancesSuffix, 3, []string{"TEXT", "TEXT", "BIGINT"})
		sub.one = qSubBalanceOne
		n, err := t.writeRows(ctx, sub, len(debits), func(i int, a []any) []any {
			k := debits[i]
			return append(a, k.account, string(k.asset), int64(net[k]))
		})
		switch {
		case t.classify(err) == CheckViolation:
			return market.Errorf(op, market.InsufficientFunds, "an account of the batch no longer holds what it pays (another transfer spent it); deposit more tokens")
		case err != nil:
			return fmt.Errorf("%s: debit balances: %w", op, err)
		case n != int64(len(debits)):
			return market.Errorf(op, market.InsufficientFunds, "%d of %d accounts the batch pays from hold nothing; deposit more tokens", int64(len(debits))-n, len(debits))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t *sqlTx) BalancesOf(ctx context.Context, asset market.Asset, accounts []market.LedgerAccount) (map[market.LedgerAccount]market.Money, error) {
	out := make(map[market.LedgerAccount]market.Money, len(accounts))
	if len(accounts) == 0 {
		return out, nil
	}
	if t.rowsPerStmt == 1 {
		ctx := context.WithoutCancel(ctx) // see writeRows
		st, err := t.tx.PrepareContext(ctx, qBalance)
		if err != nil {
			return nil, fmt.Errorf("balances: %w", err)
		}
		defer st.Close()
		for _, a := range accounts {
			var v int64
			switch err := st.QueryRowContext(ctx, a, string(asset)).Scan(&v); {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return nil, fmt.Errorf("balance of %s: %w", a, err)
			default:
				out[a] = market.Money(v)
			}
		}
		return out, nil
	}
	for chunk := range slices.Chunk(accounts, min(t.rowsPerStmt, inList)) {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, string(asset))
		ph := make([]string, len(chunk))
		for i, a := range chunk {
			ph[i] = "$" + strconv.Itoa(i+2)
			args = append(args, a)
		}
		rows, err := t.tx.QueryContext(ctx, qBalancesOfPrefix+"("+strings.Join(ph, ", ")+")", args...)
		if err != nil {
			return nil, fmt.Errorf("balances: %w", err)
		}
		for rows.Next() {
			var a market.LedgerAccount
			var v int64
			if err := rows.Scan(&a, &v); err != nil {
				rows.Close()
				return nil, fmt.Errorf("balances: %w", err)
			}
			out[a] = market.Money(v)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("balances: %w", err)
		}
	}
	return out, nil
}

func (t *sqlTx) BillableInstances(ctx context.Context, after market.InstanceID, limit int) ([]coord.BillingRow, error) {
	rows, err := t.tx.QueryContext(ctx, qBillable, after, limitOf(limit))
	if err != nil {
		return nil, fmt.Errorf("billable instances: %w", err)
	}
	defer rows.Close()
	out := make([]coord.BillingRow, 0, min(limitOf(limit), 10_000))
	for rows.Next() {
		var r coord.BillingRow
		var id, renter, host, kind, state string // plain strings scan without reflection
		var price, perDay, escrow, charged int64
		var started, stopAt sql.NullInt64
		var gpus string
		if err := rows.Scan(&id, &renter, &host, &kind, &state, &price, &perDay, &escrow, &started, &stopAt, &r.BilledMins, &charged, &r.Pool, &gpus); err != nil {
			return nil, fmt.Errorf("billable instances: %w", err)
		}
		if r.Pool != "" {
			var idx []int
			if err := decodeJSON(gpus, &idx); err != nil {
				return nil, fmt.Errorf("billable instances: GPUs of %s: %w", id, err)
			}
			r.GPUs = len(idx)
		}
		r.ID, r.Renter, r.Host = market.InstanceID(id), market.AccountID(renter), market.AccountID(host)
		r.Kind, r.State = market.InstanceKind(kind), market.InstanceState(state)
		r.PricePerHour, r.PricePerDay, r.Escrow, r.Charged = market.Money(price), market.Money(perDay), market.Money(escrow), market.Money(charged)
		if started.Valid {
			r.StartedAt = fromMicros(started.Int64)
		}
		if stopAt.Valid {
			r.StopAt = fromMicros(stopAt.Int64)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billable instances: %w", err)
	}
	return out, nil
}

func (t *sqlTx) RecordBilling(ctx context.Context, us []coord.BillingUpdate) error {
	const op = "record billing"
	w := valuesWrite(qRecordBillingPrefix, qRecordBillingSuffix, 5, []string{"TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT"})
	w.one = qRecordBillingOne
	return t.atomic(ctx, func() error {
		n, err := t.writeRows(ctx, w, len(us), func(i int, a []any) []any {
			u := &us[i]
			return append(a, string(u.Instance), u.FromMins, u.BilledMins, int64(u.Charged), int64(u.Escrow))
		})
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if n != int64(len(us)) {
			return market.Errorf(op, market.Conflict, "%d of %d instances were billed by someone else meanwhile", int64(len(us))-n, len(us))
		}
		return nil
	})
}

const (
	minuteChargeColumns     = `instance_id, minute, transfer_seq, payer, host_id, amount, fee, at`
	qInsertMinuteChargesPfx = `INSERT INTO minute_charges (` + minuteChargeColumns + `) VALUES `
	qMinuteCharges          = `SELECT ` + minuteChargeColumns + ` FROM minute_charges` // + filter + order
	qMinuteChargesOrder     = ` ORDER BY instance_id, minute`
)

// minuteOf is the minute record of a one-minute charge transfer: the
// account it takes from, the host whose earnings it credits and the fee.
func minuteOf(tr market.Transfer) market.MinuteCharge {
	c := market.MinuteCharge{Instance: tr.Instance, Minute: tr.Minute, Transfer: tr.Seq, At: tr.At}
	for _, e := range tr.Entries {
		switch o := e.Account.Owner(); {
		case e.Account == market.FeesAccount:
			c.Fee += e.Amount
		case e.Amount < 0 && c.From == "":
			c.From, c.Amount = e.Account, -e.Amount
		case o != "" && e.Account == market.Earnings(o) && c.Host == "":
			c.Host = o
		}
	}
	return c
}

// insertMinuteCharges records cs; a minute charged before is a Conflict.
// It runs inside the caller's atomic.
func (t *sqlTx) insertMinuteCharges(ctx context.Context, op string, cs []market.MinuteCharge) error {
	_, err := t.writeRows(ctx, valuesWrite(qInsertMinuteChargesPfx, "", 8, nil), len(cs), func(i int, a []any) []any {
		c := &cs[i]
		return append(a, string(c.Instance), c.Minute, c.Transfer, string(c.From), string(c.Host), int64(c.Amount), int64(c.Fee), micros(c.At))
	})
	if t.classify(err) == UniqueViolation {
		if len(cs) == 1 {
			return market.Errorf(op, market.Conflict, "minute %d of instance %s is already charged", cs[0].Minute, cs[0].Instance)
		}
		return market.Errorf(op, market.Conflict, "a minute of the %d charged (first: minute %d of %s) is already charged", len(cs), cs[0].Minute, cs[0].Instance)
	}
	if err != nil {
		return fmt.Errorf("%s: record charged minutes: %w", op, err)
	}
	return nil
}

func (t *sqlTx) ApplyCharges(ctx context.Context, tr market.Transfer, cs []market.MinuteCharge) (market.Transfer, error) {
	const op = "apply charges"
	if tr.Kind != market.TransferCharges {
		return market.Transfer{}, market.Errorf(op, market.Invalid, "transfer %s is a %s, not a charges batch", tr.ID, tr.Kind)
	}
	if len(cs) == 0 {
		return market.Transfer{}, market.Errorf(op, market.Invalid, "charges batch %s pays no minute", tr.ID)
	}
	var out market.Transfer
	err := t.atomic(ctx, func() error {
		ts, err := t.ApplyTransfers(ctx, []market.Transfer{tr})
		if err != nil {
			return err
		}
		out = ts[0]
		rows := make([]market.MinuteCharge, len(cs))
		for i, c := range cs {
			c.Transfer, c.At = out.Seq, fromMicros(micros(c.At))
			rows[i] = c
		}
		return t.insertMinuteCharges(ctx, op, rows)
	})
	if err != nil {
		return market.Transfer{}, err
	}
	return out, nil
}

func (t *sqlTx) MinuteCharges(ctx context.Context, f coord.ChargeFilter) ([]market.MinuteCharge, error) {
	scan := func(s scanner) (market.MinuteCharge, error) {
		var c market.MinuteCharge
		var inst, payer, host string
		var amount, fee, at int64
		err := s.Scan(&inst, &c.Minute, &c.Transfer, &payer, &host, &amount, &fee, &at)
		c.Instance, c.From, c.Host = market.InstanceID(inst), market.LedgerAccount(payer), market.AccountID(host)
		c.Amount, c.Fee, c.At = market.Money(amount), market.Money(fee), fromMicros(at)
		return c, err
	}
	query := func(w where) ([]market.MinuteCharge, error) {
		rows, err := t.tx.QueryContext(ctx, qMinuteCharges+w.sql()+qMinuteChargesOrder, w.args...)
		if err != nil {
			return nil, fmt.Errorf("list charged minutes: %w", err)
		}
		return collect(rows, scan)
	}
	var w where
	if f.Instance != "" {
		w.add("instance_id = ?", f.Instance)
	}
	if f.Transfers == nil {
		return query(w)
	}
	var out []market.MinuteCharge
	for _, seq := range f.Transfers {
		w2 := where{conds: slices.Clone(w.conds), args: slices.Clone(w.args)}
		w2.add("transfer_seq = ?", seq)
		got, err := query(w2)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	slices.SortFunc(out, func(a, b market.MinuteCharge) int {
		if a.Instance != b.Instance {
			return strings.Compare(string(a.Instance), string(b.Instance))
		}
		return int(a.Minute - b.Minute)
	})
	return out, nil
}
