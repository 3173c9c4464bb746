package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// sqlTx implements coord.Tx over any *sql.Tx whose database accepts the SQL
// in queries.go. Nothing in it is specific to one database except the
// classify function it is given.
type sqlTx struct {
	tx       *txConn
	classify Classifier
	// rowsPerStmt is how many rows one statement of a batch write holds.
	rowsPerStmt int
	// deferral, when set, makes AppendEvent write to events_pending
	// (events.go); deferred counts the events written there.
	deferral *Deferral
	deferred int64
	// ctes: write a transfer in one statement (TxConfig.WritingCTEs).
	ctes bool

	// Lazy savepoints (savepoint.go): the open atomic steps, innermost
	// last; writes counts write statements; version names the state the
	// writes left (a count of writes, reset by a rollback to a
	// savepoint); sps holds a flag per savepoint set, outermost first
	// (sp_1, sp_2, ...): true once no step needs it, to be released with
	// the next one set (those are always the last ones); broken is set
	// when a savepoint could not be set or rolled back to, and fails the
	// commit.
	frames  []frame
	writes  int64
	version int64
	sps     []bool
	broken  error
	// Steps of the store's own (atomic): eager, every one sets its
	// savepoint as a coordinator's step does; otherwise they set none,
	// and a failed one that wrote leaves failed, until the coordinator's
	// step around it is undone or the transaction ends; rerun: a
	// statement ran, or a step succeeded, while a failure was not undone:
	// the transaction is run again, eagerly (RunTxConfig).
	eager  bool
	failed *failure
	rerun  bool
	// reads: the statements run outside a transaction, and may only read
	// (RunRead).
	reads bool

	// held maps an instance to its gpu_allocations rows, as its row read
	// in this transaction implies (every write of those rows is reserve's)
	// or as reserve left them; forgotten when a step is undone.
	held map[market.InstanceID][]allocation

	// Write-behind (behind.go): allowBehind, the adapter allows it;
	// behind, this transaction asked for it (and runs lazily); kept, the
	// writes kept for later; atomics, the store's open steps;
	// flushWrites, the write statements that wrote kept rows.
	allowBehind, behind bool
	kept                behind
	atomics             []atomicFrame
	flushWrites         int64

	afterCommit []func() // Tx.AfterCommit
}

var _ coord.Tx = (*sqlTx)(nil)

// inList is the most placeholders one IN (...) list gets; SQLite allows
// 32766 per statement, Postgres 65535.
const inList = 500

// noLimit stands for "no limit" in a LIMIT clause both databases accept.
const noLimit = math.MaxInt64

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func nullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(*t), Valid: true}
}

func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func limitOf(n int) int64 {
	if n <= 0 {
		return noLimit
	}
	return int64(n)
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// Atomic is atomic for the coordinator (coord.Tx): a step with its own
// savepoint, whose failure the caller may recover from.
func (t *sqlTx) Atomic(ctx context.Context, fn func() error) error { return t.step(ctx, fn) }

// AtomicOrRerun is atomic for the coordinator (coord.Tx): no savepoint,
// as for the store's own steps.
func (t *sqlTx) AtomicOrRerun(ctx context.Context, fn func() error) error { return t.atomic(ctx, fn) }

// AfterCommit keeps fn for the adapter to run once committed
// (Committed.RunAfterCommit); outside a transaction it runs fn at once.
func (t *sqlTx) AfterCommit(fn func()) {
	if t.reads {
		fn()
		return
	}
	t.afterCommit = append(t.afterCommit, fn)
}

// exists reports whether query returns a row.
func (t *sqlTx) exists(ctx context.Context, query string, args ...any) (bool, error) {
	var v any
	err := t.tx.QueryRowContext(ctx, query, args...).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// Accounts and keys.

func scanAccount(s scanner) (market.Account, error) {
	var a market.Account
	var roles string
	var created int64
	if err := s.Scan(&a.ID, &a.Email, &a.PasswordHash, &roles, &created); err != nil {
		return a, err
	}
	if err := json.Unmarshal([]byte(roles), &a.Roles); err != nil {
		return a, fmt.Errorf("decode roles of account %s: %w", a.ID, err)
	}
	a.CreatedAt = fromMicros(created)
	return a, nil
}

func (t *sqlTx) InsertAccount(ctx context.Context, a market.Account) error {
	const op = "insert account"
	lower := strings.ToLower(a.Email)
	conflict := func() error {
		return market.Errorf(op, market.Conflict, "an account with email %s or id %s already exists; log in or use another email", a.Email, a.ID)
	}
	var id string
	err := t.tx.QueryRowContext(ctx, qAccountExists, a.ID, lower).Scan(&id)
	switch {
	case err == nil && id == string(a.ID):
		return market.Errorf(op, market.Conflict, "account %s already exists", a.ID)
	case err == nil:
		return market.Errorf(op, market.Conflict, "email %s is already registered; log in or use another email", a.Email)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s %s: %w", op, a.ID, err)
	}
	roles, err := toJSON(a.Roles)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, a.ID, err)
	}
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertAccount, a.ID, a.Email, lower, a.PasswordHash, roles, micros(a.CreatedAt))
		if t.classify(err) == UniqueViolation {
			return conflict()
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, a.ID, err)
		}
		return nil
	})
}

func (t *sqlTx) Account(ctx context.Context, id market.AccountID) (market.Account, error) {
	a, err := scanAccount(t.tx.QueryRowContext(ctx, qAccount, id))
	if errors.Is(err, sql.ErrNoRows) {
		return a, market.Errorf("get account", market.NotFound, "account %s not found", id)
	}
	if err != nil {
		return a, fmt.Errorf("get account %s: %w", id, err)
	}
	return a, nil
}

func (t *sqlTx) AccountByEmail(ctx context.Context, email string) (market.Account, error) {
	a, err := scanAccount(t.tx.QueryRowContext(ctx, qAccountByEmail, strings.ToLower(email)))
	if errors.Is(err, sql.ErrNoRows) {
		return a, market.Errorf("get account", market.NotFound, "no account with email %s", email)
	}
	if err != nil {
		return a, fmt.Errorf("get account by email: %w", err)
	}
	return a, nil
}

func scanAPIKey(s scanner) (market.APIKey, error) {
	var k market.APIKey
	var created int64
	var revoked sql.NullInt64
	if err := s.Scan(&k.ID, &k.Owner, &k.Name, &k.Prefix, &k.Hash, &created, &revoked); err != nil {
		return k, err
	}
	k.CreatedAt = fromMicros(created)
	k.RevokedAt = fromNullMicros(revoked)
	return k, nil
}

func (t *sqlTx) InsertAPIKey(ctx context.Context, k market.APIKey) error {
	const op = "insert api key"
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertAPIKey, k.ID, k.Owner, k.Name, k.Prefix, k.Hash, micros(k.CreatedAt), nullMicros(k.RevokedAt))
		switch t.classify(err) {
		case UniqueViolation:
			return market.Errorf(op, market.Conflict, "api key %s (or one with the same secret) already exists; create a new key", k.ID)
		case ForeignKeyViolation:
			return market.Errorf(op, market.NotFound, "account %s not found", k.Owner)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, k.ID, err)
		}
		return nil
	})
}

func (t *sqlTx) APIKeyByHash(ctx context.Context, hash []byte) (market.APIKey, error) {
	k, err := scanAPIKey(t.tx.QueryRowContext(ctx, qAPIKeyByHash, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return k, market.Errorf("get api key", market.NotFound, "api key not found; check the key or create a new one")
	}
	if err != nil {
		return k, fmt.Errorf("get api key by hash: %w", err)
	}
	return k, nil
}

func (t *sqlTx) APIKeys(ctx context.Context, owner market.AccountID) ([]market.APIKey, error) {
	rows, err := t.tx.QueryContext(ctx, qAPIKeys, owner)
	if err != nil {
		return nil, fmt.Errorf("list api keys of %s: %w", owner, err)
	}
	return collect(rows, scanAPIKey)
}

func (t *sqlTx) RevokeAPIKey(ctx context.Context, owner market.AccountID, id market.APIKeyID, at time.Time) error {
	res, err := t.tx.ExecContext(ctx, qRevokeAPIKey, owner, id, micros(at))
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return mustAffect(res, market.Errorf("revoke api key", market.NotFound, "api key %s not found among your keys", id))
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// mustAffect returns notFound when res changed no row.
func mustAffect(res sql.Result, notFound error) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// Machines.

func machineArgs(m market.Machine) ([]any, error) {
	gpus, err := toJSON(m.GPUs)
	if err != nil {
		return nil, err
	}
	clocks, err := toJSON(clockRangesOf(m.Spot))
	if err != nil {
		return nil, err
	}
	return []any{m.ID, m.Owner, m.Fingerprint, m.Hostname, gpus, m.CPUCores, m.RAMMiB, m.DiskGiB,
		m.DriverVersion, m.CUDAVersion, m.Runner, m.Region, m.DataCenter, m.Listed, m.Online,
		string(m.Status), int64(m.PricePerGPUHour), micros(m.LastSeenAt), micros(m.CreatedAt),
		int64(m.Spot.ReservePerGPUDay), int64(m.Spot.EnergyPerKWh), m.Spot.MaxPowerW, clocks, m.PortRange.String(), m.Unverified, m.Review}, nil
}

func scanMachine(s scanner) (market.Machine, error) {
	var m market.Machine
	var gpus, clocks, ports string
	var price, seen, created, reserve, energy int64
	err := s.Scan(&m.ID, &m.Owner, &m.Fingerprint, &m.Hostname, &gpus, &m.CPUCores, &m.RAMMiB, &m.DiskGiB,
		&m.DriverVersion, &m.CUDAVersion, &m.Runner, &m.Region, &m.DataCenter, &m.Listed, &m.Online,
		&m.Status, &price, &seen, &created, &reserve, &energy, &m.Spot.MaxPowerW, &clocks, &ports, &m.Unverified, &m.Review)
	if err != nil {
		return m, err
	}
	if m.PortRange, err = market.ParsePortRange(ports); err != nil {
		return m, fmt.Errorf("decode port range of machine %s: %w", m.ID, err)
	}
	if err := decodeJSON(gpus, &m.GPUs); err != nil {
		return m, fmt.Errorf("decode gpus of machine %s: %w", m.ID, err)
	}
	var cr clockRanges
	if err := decodeJSON(clocks, &cr); err != nil {
		return m, fmt.Errorf("decode clock ranges of machine %s: %w", m.ID, err)
	}
	m.Spot.ReservePerGPUDay, m.Spot.EnergyPerKWh = market.Money(reserve), market.Money(energy)
	m.Spot.CoreLockMHz, m.Spot.MemLockMHz, m.Spot.CoreOffsetMHz, m.Spot.MemOffsetMHz = cr.CoreLock, cr.MemLock, cr.CoreOffset, cr.MemOffset
	m.PricePerGPUHour = market.Money(price)
	m.LastSeenAt = fromMicros(seen)
	m.CreatedAt = fromMicros(created)
	return m, nil
}

func (t *sqlTx) InsertMachine(ctx context.Context, m market.Machine) error {
	const op = "insert machine"
	var id market.MachineID
	err := t.tx.QueryRowContext(ctx, qMachineConflict, m.ID, m.Owner, m.Fingerprint).Scan(&id)
	switch {
	case err == nil && id == m.ID:
		return market.Errorf(op, market.Conflict, "machine %s already exists", m.ID)
	case err == nil:
		return market.Errorf(op, market.Conflict, "a machine with fingerprint %q is already registered by account %s as %s", m.Fingerprint, m.Owner, id)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s %s: %w", op, m.ID, err)
	}
	args, err := machineArgs(m)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, m.ID, err)
	}
	return t.atomic(ctx, func() error {
		_, err := t.tx.ExecContext(ctx, qInsertMachine, args...)
		switch t.classify(err) {
		case UniqueViolation:
			return market.Errorf(op, market.Conflict, "machine %s or fingerprint %q is already registered", m.ID, m.Fingerprint)
		case ForeignKeyViolation:
			return market.Errorf(op, market.NotFound, "account %s not found", m.Owner)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, m.ID, err)
		}
		return nil
	})
}

func (t *sqlTx) UpdateMachine(ctx context.Context, m market.Machine) error {
	const op = "update machine"
	args, err := machineArgs(m)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, m.ID, err)
	}
	return t.atomic(ctx, func() error {
		res, err := t.tx.ExecContext(ctx, qUpdateMachine, args...)
		switch t.classify(err) {
		case UniqueViolation:
			return market.Errorf(op, market.Conflict, "account %s already has a machine with fingerprint %q", m.Owner, m.Fingerprint)
		case ForeignKeyViolation:
			return market.Errorf(op, market.NotFound, "account %s not found", m.Owner)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, m.ID, err)
		}
		return mustAffect(res, market.Errorf(op, market.NotFound, "machine %s not found", m.ID))
	})
}

func (t *sqlTx) Machine(ctx context.Context, id market.MachineID) (market.Machine, error) {
	m, err := scanMachine(t.tx.QueryRowContext(ctx, qMachine, id))
	if errors.Is(err, sql.ErrNoRows) {
		return m, market.Errorf("get machine", market.NotFound, "machine %s not found", id)
	}
	if err != nil {
		return m, fmt.Errorf("get machine %s: %w", id, err)
	}
	return m, nil
}

func (t *sqlTx) MachineByFingerprint(ctx context.Context, owner market.AccountID, fingerprint string) (market.Machine, error) {
	m, err := scanMachine(t.tx.QueryRowContext(ctx, qMachineByFP, owner, fingerprint))
	if errors.Is(err, sql.ErrNoRows) {
		return m, market.Errorf("get machine", market.NotFound, "account %s has no machine with fingerprint %q", owner, fingerprint)
	}
	if err != nil {
		return m, fmt.Errorf("get machine by fingerprint: %w", err)
	}
	return m, nil
}

// where builds a WHERE clause from conditions with $N placeholders.
type where struct {
	conds []string
	args  []any
}

// as appends cond, a condition without argument, as written: a partial
// index's condition must be written out for both databases to use it.
func (w *where) as(cond string) { w.conds = append(w.conds, cond) }

// add appends cond, in which "?" stands for the next placeholder.
func (w *where) add(cond string, arg any) {
	w.args = append(w.args, arg)
	w.conds = append(w.conds, strings.Replace(cond, "?", "$"+strconv.Itoa(len(w.args)), 1))
}

// in appends "col IN (...)" over vals, one placeholder each.
func (w *where) in(col string, vals []string) {
	ph := make([]string, len(vals))
	for i, v := range vals {
		w.args = append(w.args, v)
		ph[i] = "$" + strconv.Itoa(len(w.args))
	}
	w.conds = append(w.conds, col+" IN ("+strings.Join(ph, ", ")+")")
}

// eachOf returns a query of out from table that keeps, of each of
// machines, its first n rows in order (an ORDER BY clause on cols, which
// hold out) among those w selects: one subquery per machine, each reading
// only its n rows through the table's index on the machine, united. (A
// window function, ROW_NUMBER over each machine, read every row of each
// machine first.) The text depends on the number of machines only.
func (w *where) eachOf(out, cols, table, order string, machines []string, n int) string {
	parts := make([]string, len(machines))
	for i, m := range machines {
		w.args = append(w.args, m)
		conds := append([]string{"machine_id = $" + strconv.Itoa(len(w.args))}, w.conds...)
		parts[i] = "SELECT " + cols + " FROM (SELECT " + cols + " FROM " + table + " WHERE " + strings.Join(conds, " AND ") + order +
			" LIMIT " + strconv.Itoa(n) + ") AS m" + strconv.Itoa(i)
	}
	return "SELECT " + out + " FROM (" + strings.Join(parts, " UNION ALL ") + ") AS kept" + order
}

// chunked runs list once per chunk of at most inList of ids (once when
// ids is empty) and returns the rows of all runs.
func chunked[T any, ID ~string](ids []ID, list func(chunk []string) ([]T, error)) ([]T, error) {
	if len(ids) == 0 {
		return list(nil)
	}
	var out []T
	for chunk := range slices.Chunk(ids, inList) {
		s := make([]string, len(chunk))
		for i, id := range chunk {
			s[i] = string(id)
		}
		rows, err := list(s)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// pairs appends "(a = ... AND b = ...) OR ...", one condition per pair:
// both databases look each pair up in an index on (a, b), where "a IN
// (...) AND b IN (...)" makes Postgres probe every combination.
func (w *where) pairs(a, b string, vals [][2]string) {
	conds := make([]string, len(vals))
	for i, v := range vals {
		w.args = append(w.args, v[0], v[1])
		conds[i] = "(" + a + " = $" + strconv.Itoa(len(w.args)-1) + " AND " + b + " = $" + strconv.Itoa(len(w.args)) + ")"
	}
	w.conds = append(w.conds, "("+strings.Join(conds, " OR ")+")")
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

func (t *sqlTx) Machines(ctx context.Context, f coord.MachineFilter) ([]market.Machine, error) {
	ms, err := chunked(f.IDs, func(ids []string) ([]market.Machine, error) { return t.machines(ctx, f, ids) })
	if len(f.IDs) > inList {
		slices.SortFunc(ms, func(a, b market.Machine) int { return strings.Compare(string(a.ID), string(b.ID)) })
	}
	return ms, err
}

func (t *sqlTx) machines(ctx context.Context, f coord.MachineFilter, ids []string) ([]market.Machine, error) {
	var w where
	if len(ids) > 0 {
		w.in("id", ids)
	}
	if f.Owner != "" {
		w.add("owner_id = ?", f.Owner)
	}
	if f.Listed != nil {
		w.add("listed = ?", *f.Listed)
	}
	if f.Online != nil {
		w.add("online = ?", *f.Online)
	}
	if !f.SeenBefore.IsZero() {
		w.add("last_seen_at < ?", micros(f.SeenBefore))
		// A claimed machine is seen as late as its node last vouched. Not
		// correlated, so the few fresh nodes are read once per query rather
		// than once per machine (the scan of 100,000 machines each tick).
		w.add("beat_node NOT IN (SELECT node FROM node_beats WHERE at >= ?)", micros(f.SeenBefore))
	}
	rows, err := t.tx.QueryContext(ctx, qMachines+w.sql()+qMachinesOrder, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	return collect(rows, scanMachine)
}

func (t *sqlTx) ActiveGPUs(ctx context.Context, machines []market.MachineID) (map[market.MachineID][]int, error) {
	out := make(map[market.MachineID][]int)
	for chunk := range slices.Chunk(machines, inList) {
		ph := make([]string, len(chunk))
		args := make([]any, len(chunk))
		for i, id := range chunk {
			ph[i] = "$" + strconv.Itoa(i+1)
			args[i] = id
		}
		rows, err := t.tx.QueryContext(ctx, qActiveGPUsPrefix+"("+strings.Join(ph, ", ")+")"+qActiveGPUsOrder, args...)
		if err != nil {
			return nil, fmt.Errorf("active gpus: %w", err)
		}
		allocs, err := collect(rows, scanAllocation)
		if err != nil {
			return nil, fmt.Errorf("active gpus: %w", err)
		}
		for _, a := range allocs {
			out[a.machine] = append(out[a.machine], a.gpu)
		}
	}
	return out, nil
}

func (t *sqlTx) AllActiveGPUs(ctx context.Context) (map[market.MachineID][]int, error) {
	rows, err := t.tx.QueryContext(ctx, qAllActiveGPUs)
	if err != nil {
		return nil, fmt.Errorf("active gpus: %w", err)
	}
	allocs, err := collect(rows, scanAllocation)
	if err != nil {
		return nil, fmt.Errorf("active gpus: %w", err)
	}
	out := make(map[market.MachineID][]int)
	for _, a := range allocs {
		out[a.machine] = append(out[a.machine], a.gpu)
	}
	return out, nil
}

// Instances.

type allocation struct {
	machine market.MachineID
	gpu     int
}

func scanAllocation(s scanner) (allocation, error) {
	var a allocation
	err := s.Scan(&a.machine, &a.gpu)
	return a, err
}

func instanceArgs(i market.Instance) ([]any, error) {
	gpus, err := toJSON(i.GPUs)
	if err != nil {
		return nil, err
	}
	command, err := toJSON(i.Command)
	if err != nil {
		return nil, err
	}
	env, err := toJSON(i.Env)
	if err != nil {
		return nil, err
	}
	clocks, err := toJSON(storedClocks{i.Clocks, i.GPUClocks})
	if err != nil {
		return nil, err
	}
	var exit sql.NullInt64
	if i.ExitCode != nil {
		exit = sql.NullInt64{Int64: int64(*i.ExitCode), Valid: true}
	}
	container, err := containerArgs(i)
	if err != nil {
		return nil, err
	}
	return append([]any{i.ID, i.Renter, i.Machine, string(i.Kind), gpus, i.Image, command, env,
		string(i.State), i.Active(), i.Generation, int64(i.PricePerHour), int64(i.Escrow), i.Reason,
		exit, micros(i.CreatedAt), nullMicros(i.StartedAt), nullMicros(i.StopAt), nullMicros(i.EndedAt),
		i.BilledMins, int64(i.Charged), i.Settled, i.GraceSeconds, nullMicros(i.NoticeAt),
		nullMicros(i.LastReportAt), i.Bid, int64(i.PricePerDay), i.PowerLimitW, clocks, i.NoticeSeconds}, container...), nil
}

// containerArgs are the container columns of an instance (template, ports,
// ssh_keys, limits, port_map), in that order.
func containerArgs(i market.Instance) ([]any, error) {
	out := []any{i.Template}
	for _, v := range []any{orEmptyList(i.Ports), orEmptyList(i.SSHKeys), i.Limits, orEmptyList(i.PortMap)} {
		s, err := toJSON(v)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func orEmptyList[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func scanInstance(s scanner) (market.Instance, error) {
	var i market.Instance
	var gpus, command, env, clocks string
	var ports, sshKeys, limits, portMap string
	var active bool
	var price, escrow, charged, created, perDay int64
	var exit, started, stopAt, ended, notice, report sql.NullInt64
	err := s.Scan(&i.ID, &i.Renter, &i.Machine, &i.Kind, &gpus, &i.Image, &command, &env,
		&i.State, &active, &i.Generation, &price, &escrow, &i.Reason,
		&exit, &created, &started, &stopAt, &ended,
		&i.BilledMins, &charged, &i.Settled, &i.GraceSeconds, &notice, &report,
		&i.Bid, &perDay, &i.PowerLimitW, &clocks, &i.NoticeSeconds,
		&i.Template, &ports, &sshKeys, &limits, &portMap)
	if err != nil {
		return i, err
	}
	i.PricePerDay = market.Money(perDay)
	var sc storedClocks
	for _, f := range []struct {
		s string
		v any
	}{{gpus, &i.GPUs}, {command, &i.Command}, {env, &i.Env}, {clocks, &sc},
		{ports, &i.Ports}, {sshKeys, &i.SSHKeys}, {limits, &i.Limits}, {portMap, &i.PortMap}} {
		if err := decodeJSON(f.s, f.v); err != nil {
			return i, fmt.Errorf("decode instance %s: %w", i.ID, err)
		}
	}
	i.Clocks, i.GPUClocks = sc.Clocks, sc.GPU
	// Stored as [] when empty; read back as nil like an instance never given any.
	i.Ports, i.SSHKeys, i.PortMap = nilIfEmpty(i.Ports), nilIfEmpty(i.SSHKeys), nilIfEmpty(i.PortMap)

	if exit.Valid {
		c := int(exit.Int64)
		i.ExitCode = &c
	}
	i.PricePerHour = market.Money(price)
	i.Escrow = market.Money(escrow)
	i.Charged = market.Money(charged)
	i.CreatedAt = fromMicros(created)
	i.StartedAt = fromNullMicros(started)
	i.StopAt = fromNullMicros(stopAt)
	i.EndedAt = fromNullMicros(ended)
	i.NoticeAt = fromNullMicros(notice)
	i.LastReportAt = fromNullMicros(report)
	return i, nil
}

// checkGPUList rejects an instance that names one GPU twice.
func checkGPUList(op string, i market.Instance) error {
	seen := make(map[int]bool, len(i.GPUs))
	for _, g := range i.GPUs {
		if seen[g] {
			return market.Errorf(op, market.Invalid, "instance %s lists GPU %d twice; name each GPU once", i.ID, g)
		}
		seen[g] = true
	}
	return nil
}

// allocationsOf is the gpu_allocations rows i should have, in the order
// qAllocations lists them: its GPUs while it holds them, else none.
func allocationsOf(i market.Instance) []allocation {
	if !holdsGPUs(i) {
		return nil
	}
	want := make([]allocation, len(i.GPUs))
	for k, g := range i.GPUs {
		want[k] = allocation{i.Machine, g}
	}
	slices.SortFunc(want, func(a, b allocation) int { return a.gpu - b.gpu })
	return want
}

// noteHeld records the gpu_allocations rows instance id has, as read or
// written in this transaction (sqlTx.held).
func (t *sqlTx) noteHeld(id market.InstanceID, rows []allocation) {
	if t.held == nil {
		t.held = map[market.InstanceID][]allocation{}
	}
	t.held[id] = rows
}

// errGPUsTaken is reserve's answer when another instance holds one of the
// GPUs: the caller's step is undone, and gpusTaken then names them.
var errGPUsTaken = errors.New("gpus taken")

// reserve makes the instance's gpu_allocations rows match what it should
// hold: its GPUs while active, nothing once terminal. It must run inside
// atomic, so that a conflict (errGPUsTaken) leaves nothing written. What
// the instance holds is not read when its row, read in this transaction,
// says (sqlTx.held), nor for a fresh one: it holds nothing yet.
func (t *sqlTx) reserve(ctx context.Context, op string, i market.Instance, fresh bool) error {
	want := allocationsOf(i)
	if !fresh {
		have, known := t.held[i.ID]
		if !known {
			rows, err := t.tx.QueryContext(ctx, qAllocations, i.ID)
			if err != nil {
				return fmt.Errorf("%s %s: %w", op, i.ID, err)
			}
			if have, err = collect(rows, scanAllocation); err != nil {
				return fmt.Errorf("%s %s: %w", op, i.ID, err)
			}
		}
		if slices.Equal(have, want) {
			t.noteHeld(i.ID, want)
			return nil
		}
		if len(have) > 0 {
			if _, err := t.tx.ExecContext(ctx, qDeleteAllocations, i.ID); err != nil {
				return fmt.Errorf("%s %s: release gpus: %w", op, i.ID, err)
			}
		}
	}
	if len(want) > 0 {
		args := make([]any, 0, 3*len(want))
		for _, a := range want {
			args = append(args, a.machine, a.gpu, i.ID)
		}
		_, err := t.tx.ExecContext(ctx, qInsertAllocationsPrefix+valuesList(len(want), 3, 1, nil), args...)
		if t.classify(err) == UniqueViolation {
			return errGPUsTaken
		}
		if err != nil {
			return fmt.Errorf("%s %s: reserve gpus %v: %w", op, i.ID, i.GPUs, err)
		}
	}
	t.noteHeld(i.ID, want)
	return nil
}

// gpusTaken names the GPUs of i that other instances hold, after reserve
// found one taken and the step was undone.
func (t *sqlTx) gpusTaken(ctx context.Context, op string, i market.Instance) error {
	var held []int
	for _, a := range allocationsOf(i) {
		ok, err := t.exists(ctx, qHeldGPU, a.machine, a.gpu, i.ID)
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, i.ID, err)
		}
		if ok {
			held = append(held, a.gpu)
		}
	}
	return gpuConflict(op, i.Machine, held)
}

func gpuConflict(op string, m market.MachineID, held []int) error {
	return market.Errorf(op, market.Conflict, "GPUs %v of machine %s are in use by another instance; choose free GPUs", held, m)
}

// missingRef names the renter or machine an instance refers to that does
// not exist, after a foreign key violation.
func (t *sqlTx) missingRef(ctx context.Context, op string, i market.Instance) error {
	if ok, err := t.exists(ctx, qMachineExists, i.Machine); err == nil && !ok {
		return market.Errorf(op, market.NotFound, "machine %s not found", i.Machine)
	}
	return market.Errorf(op, market.NotFound, "account %s not found", i.Renter)
}

func (t *sqlTx) InsertInstance(ctx context.Context, i market.Instance) error {
	const op = "insert instance"
	if err := checkGPUList(op, i); err != nil {
		return err
	}
	args, err := instanceArgs(i)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, i.ID, err)
	}
	if t.keeping() {
		if len(t.kept.instances) >= maxKeptInstances || t.kept.writes(i.ID) {
			t.flushKept(ctx)
		}
		t.goOn()
		t.kept.instances = append(t.kept.instances, i)
		t.noteHeld(i.ID, allocationsOf(i))
		return nil
	}
	var fk bool
	err = t.atomic(ctx, func() error {
		if t.ctes {
			// The row and its GPUs in one statement: a unique key taken is
			// the instance's ID or a GPU, told apart once undone.
			rows, err := instanceRows(nil, []market.Instance{i})
			if err != nil {
				return err
			}
			_, err = t.tx.ExecContext(ctx, oneInstance.statement(""), rows...)
			switch t.classify(err) {
			case UniqueViolation:
				return errInstanceOrGPUsTaken
			case ForeignKeyViolation:
				fk = true
				return err
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", op, i.ID, err)
			}
			t.noteHeld(i.ID, allocationsOf(i))
			return nil
		}
		_, err := t.tx.ExecContext(ctx, qInsertInstance, args...)
		switch t.classify(err) {
		case UniqueViolation:
			return market.Errorf(op, market.Conflict, "instance %s already exists", i.ID)
		case ForeignKeyViolation:
			fk = true
			return err
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, i.ID, err)
		}
		return t.reserve(ctx, op, i, true)
	})
	switch {
	case fk:
		return t.missingRef(ctx, op, i)
	case errors.Is(err, errGPUsTaken):
		return t.gpusTaken(ctx, op, i)
	case errors.Is(err, errInstanceOrGPUsTaken):
		if ok, err := t.exists(ctx, qInstanceExists, i.ID); err != nil {
			return fmt.Errorf("%s %s: %w", op, i.ID, err)
		} else if ok {
			return market.Errorf(op, market.Conflict, "instance %s already exists", i.ID)
		}
		return t.gpusTaken(ctx, op, i)
	}
	return err
}

// errInstanceOrGPUsTaken: the instance's ID, or one of its GPUs, is
// another's (InsertInstance, in one statement).
var errInstanceOrGPUsTaken = errors.New("instance or gpus taken")

// statements holds the texts statement built, by their shape.
var statements sync.Map

// statement returns the text of the statement of shape key, built once.
func statement(key any, build func() string) string {
	if q, ok := statements.Load(key); ok {
		return q.(string)
	}
	q, _ := statements.LoadOrStore(key, build())
	return q.(string)
}

func (t *sqlTx) UpdateInstance(ctx context.Context, i market.Instance) error {
	const op = "update instance"
	if err := checkGPUList(op, i); err != nil {
		return err
	}
	args, err := instanceArgs(i)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, i.ID, err)
	}
	if held, known := t.held[i.ID]; t.keeping() && known && slices.Equal(held, allocationsOf(i)) {
		// Its GPUs stay: the row alone, kept (its only check, that the
		// row exists, is the write's).
		if len(t.kept.updates) >= maxKeptInstances || t.kept.writes(i.ID) {
			t.flushKept(ctx)
		}
		t.goOn()
		t.kept.updates = append(t.kept.updates, i)
		return nil
	}
	var fk bool
	err = t.atomic(ctx, func() error {
		res, err := t.tx.ExecContext(ctx, qUpdateInstance, args...)
		if t.classify(err) == ForeignKeyViolation {
			fk = true
			return err
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, i.ID, err)
		}
		if err := mustAffect(res, market.Errorf(op, market.NotFound, "instance %s not found", i.ID)); err != nil {
			return err
		}
		return t.reserve(ctx, op, i, false)
	})
	switch {
	case fk:
		return t.missingRef(ctx, op, i)
	case errors.Is(err, errGPUsTaken):
		return t.gpusTaken(ctx, op, i)
	}
	return err
}

func (t *sqlTx) Instance(ctx context.Context, id market.InstanceID) (market.Instance, error) {
	i, err := scanInstance(t.tx.QueryRowContext(ctx, qInstance, id))
	if errors.Is(err, sql.ErrNoRows) {
		return i, market.Errorf("get instance", market.NotFound, "instance %s not found", id)
	}
	if err != nil {
		return i, fmt.Errorf("get instance %s: %w", id, err)
	}
	t.noteHeld(i.ID, allocationsOf(i))
	return i, nil
}

func (t *sqlTx) Instances(ctx context.Context, f coord.InstanceFilter) ([]market.Instance, error) {
	is, err := chunked(f.IDs, func(ids []string) ([]market.Instance, error) {
		return chunked(f.Machines, func(machines []string) ([]market.Instance, error) { return t.instances(ctx, f, ids, machines) })
	})
	if len(f.Machines) > inList || len(f.IDs) > inList {
		slices.SortFunc(is, byCreation)
	}
	return is, err
}

func (t *sqlTx) instances(ctx context.Context, f coord.InstanceFilter, ids, machines []string) ([]market.Instance, error) {
	var w where
	if len(ids) > 0 {
		w.in("id", ids)
	}
	if f.Renter != "" {
		w.add("renter_id = ?", f.Renter)
	}
	if f.Machine != "" {
		w.add("machine_id = ?", f.Machine)
	}
	if len(machines) > 0 {
		w.in("machine_id", machines)
	}
	if f.ActiveOnly {
		w.add("active = ?", true)
	}
	if f.Billable {
		w.add("started_at IS NOT NULL AND settled = ?", false)
	}
	order := qInstancesOrder
	if len(machines) > 0 {
		// In the order of instances_machine_active, which SQLite then
		// reads machine by machine (in creation order below). Ordered by
		// creation, it reads every active instance instead.
		order = ` ORDER BY machine_id, created_at, id`
	}
	rows, err := t.tx.QueryContext(ctx, qInstances+w.sql()+order, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	is, err := collect(rows, scanInstance)
	for _, i := range is {
		t.noteHeld(i.ID, allocationsOf(i))
	}
	if len(machines) > 0 {
		slices.SortFunc(is, byCreation)
	}
	return is, err
}

// byCreation orders instances as listings do: by creation, then ID.
func byCreation(a, b market.Instance) int {
	return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(string(a.ID), string(b.ID)))
}

// Ledger.

// checkTransfer validates t and returns the net change per account, in the
// order the accounts first appear.
func checkTransfer(op string, t market.Transfer) ([]market.Entry, error) {
	bad := func(format string, args ...any) ([]market.Entry, error) {
		return nil, market.Errorf(op, market.Invalid, format, args...)
	}
	switch {
	case t.ID == "":
		return bad("transfer has no id")
	case t.Key == "":
		return bad("transfer %s has no idempotency key", t.ID)
	case t.Kind == "":
		return bad("transfer %s has no kind", t.ID)
	case t.Asset == "":
		return bad("transfer %s has no asset", t.ID)
	case len(t.Entries) < 2:
		return bad("transfer %s has %d entries; it needs at least two", t.ID, len(t.Entries))
	case t.Kind == market.TransferCharge && t.Instance == "":
		return bad("charge %s names no instance", t.ID)
	}
	var sum market.Money
	var net []market.Entry
	for _, e := range t.Entries {
		if e.Account == "" {
			return bad("transfer %s has an entry without an account", t.ID)
		}
		s := sum + e.Amount
		if (e.Amount > 0 && s < sum) || (e.Amount < 0 && s > sum) {
			return bad("transfer %s: amounts overflow", t.ID)
		}
		sum = s
		k := slices.IndexFunc(net, func(n market.Entry) bool { return n.Account == e.Account })
		if k < 0 {
			net = append(net, e)
			continue
		}
		n := net[k].Amount + e.Amount
		if (e.Amount > 0 && n < net[k].Amount) || (e.Amount < 0 && n > net[k].Amount) {
			return bad("transfer %s: amounts overflow", t.ID)
		}
		net[k].Amount = n
	}
	if sum != 0 {
		return bad("entries of transfer %s sum to %s, not zero", t.ID, sum)
	}
	return net, nil
}

func insufficient(op string, acct market.LedgerAccount, asset market.Asset, have, delta market.Money) error {
	need := -delta
	return market.Errorf(op, market.InsufficientFunds,
		"account %s holds %s %s but needs %s: %s %s short; deposit more tokens",
		acct, have, asset, need, need-have, asset)
}

func (t *sqlTx) ApplyTransfer(ctx context.Context, tr market.Transfer) (market.Transfer, error) {
	const op = "apply transfer"
	net, err := checkTransfer(op, tr)
	if err != nil {
		return market.Transfer{}, err
	}
	tr.At = fromMicros(micros(tr.At))
	// The writes check everything (the unique keys, the balances); only
	// when one fails, and the step is undone, do the reads below find out
	// what to tell the caller. Reading first would cost every transfer
	// those round trips.
	var used bool  // the key or the charged minute is taken
	var short bool // a debit would take its account below zero
	err = t.atomic(ctx, func() error {
		if t.ctes {
			var err error
			used, short, err = t.writeTransfer(ctx, op, &tr, net)
			return err
		}
		if err := t.tx.QueryRowContext(ctx, qNextCounter, counterTransfer).Scan(&tr.Seq); err != nil {
			return fmt.Errorf("%s %s: next seq: %w", op, tr.ID, err)
		}
		_, err := t.tx.ExecContext(ctx, qInsertTransfer, tr.Seq, tr.ID, tr.Key, string(tr.Kind), string(tr.Asset),
			tr.Instance, tr.Minute, tr.Memo, micros(tr.At))
		if t.classify(err) == UniqueViolation {
			used = true
			return err
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, tr.ID, err)
		}
		if _, err := t.tx.ExecContext(ctx, insertEntries(len(tr.Entries)), entryArgs(tr)...); err != nil {
			return fmt.Errorf("%s %s: entries: %w", op, tr.ID, err)
		}
		if tr.Kind == market.TransferCharge {
			err := t.insertMinuteCharges(ctx, op, []market.MinuteCharge{minuteOf(tr)})
			if market.IsKind(err, market.Conflict) {
				used = true
			}
			if err != nil {
				return err
			}
		}
		for _, n := range net {
			q := qAddBalance
			if isDebit(n) {
				q = qSubBalance
			}
			var after int64
			err := t.tx.QueryRowContext(ctx, q, n.Account, tr.Asset, int64(n.Amount)).Scan(&after)
			if isDebit(n) && (errors.Is(err, sql.ErrNoRows) || t.classify(err) == CheckViolation || (err == nil && after < 0)) {
				// No balance row (it holds 0), or not enough in it.
				short = true
				return market.Errorf(op, market.InsufficientFunds, "account %s is short", n.Account)
			}
			if err != nil {
				return fmt.Errorf("%s %s: balance of %s: %w", op, tr.ID, n.Account, err)
			}
		}
		return nil
	})
	switch {
	case err == nil:
		return tr, nil
	case used:
		return market.Transfer{}, t.transferTaken(ctx, op, tr)
	case short:
		return market.Transfer{}, t.shortDebit(ctx, op, tr, net)
	}
	return market.Transfer{}, err
}

// writeTransfer writes tr (its number, row, entries and balances; net is
// the change per account) in one statement, where the database runs
// writes inside WITH (sqlTx.ctes). A write that fails reports used (a
// unique key of the transfer or its charged minute is taken) or short (a
// debit would take its account below zero).
func (t *sqlTx) writeTransfer(ctx context.Context, op string, tr *market.Transfer, net []market.Entry) (used, short bool, err error) {
	args, debits, err := transferArgs(nil, []behindTransfer{{tr: *tr, net: net}})
	if err != nil {
		return false, false, fmt.Errorf("%s %s: %w", op, tr.ID, err)
	}
	var updated int
	err = t.tx.QueryRowContext(ctx, qOneTransfer, args...).Scan(&tr.Seq, &updated)
	// An account debited below zero fails the CHECK; one without a
	// balance row (it holds 0) is not updated. Which it is, is read once
	// the step is undone: on Postgres the failed statement aborted the
	// transaction until then.
	switch {
	case t.classify(err) == UniqueViolation:
		return true, false, err
	case t.classify(err) == CheckViolation || (err == nil && updated < debits):
		return false, true, market.Errorf(op, market.InsufficientFunds, "a debit of transfer %s is short", tr.ID)
	case err != nil:
		return false, false, fmt.Errorf("%s %s: %w", op, tr.ID, err)
	case tr.Kind == market.TransferCharge:
		err := t.insertMinuteCharges(ctx, op, []market.MinuteCharge{minuteOf(*tr)})
		return market.IsKind(err, market.Conflict), false, err
	}
	return false, false, nil
}

// isDebit reports whether n takes from an account that may not go
// negative: its balance must cover it.
func isDebit(n market.Entry) bool { return n.Amount < 0 && !n.Account.MayGoNegative() }

// shortDebit names the first debit of net that its account cannot pay,
// once the transfer's step is undone.
func (t *sqlTx) shortDebit(ctx context.Context, op string, tr market.Transfer, net []market.Entry) error {
	for _, n := range net {
		if !isDebit(n) {
			continue
		}
		have, err := t.Balance(ctx, n.Account, tr.Asset)
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, tr.ID, err)
		}
		if have+n.Amount < 0 {
			return insufficient(op, n.Account, tr.Asset, have, n.Amount)
		}
	}
	return market.Errorf(op, market.InsufficientFunds, "transfer %s: a debit is short", tr.ID)
}

// transferTaken says which of tr's unique keys another transfer holds.
func (t *sqlTx) transferTaken(ctx context.Context, op string, tr market.Transfer) error {
	if ok, err := t.exists(ctx, qTransferKeyUsed, tr.Key); err != nil {
		return fmt.Errorf("%s %s: %w", op, tr.ID, err)
	} else if ok {
		return market.Errorf(op, market.Conflict, "transfer key %q was already used", tr.Key)
	}
	if tr.Kind == market.TransferCharge {
		if ok, err := t.exists(ctx, qChargeExists, tr.Instance, tr.Minute); err != nil {
			return fmt.Errorf("%s %s: %w", op, tr.ID, err)
		} else if ok {
			return market.Errorf(op, market.Conflict, "minute %d of instance %s is already charged", tr.Minute, tr.Instance)
		}
	}
	return market.Errorf(op, market.Conflict, "transfer %s was already recorded", tr.ID)
}

// insertEntries is the statement that inserts n entries of one transfer.
func insertEntries(n int) string {
	if n == 2 {
		return qInsertEntries2
	}
	return qInsertEntriesPrefix + valuesList(n, entryCols, 1, nil)
}

func entryArgs(tr market.Transfer) []any {
	args := make([]any, 0, entryCols*len(tr.Entries))
	for k := range tr.Entries {
		args = appendEntry(args, &tr, k)
	}
	return args
}

// entryCols is how many columns qInsertEntriesPrefix names.
const entryCols = 7

// appendEntry appends to a the columns of entry k of tr, in
// qInsertEntriesPrefix's order: an entry carries its transfer's time and
// kind (migration 0018).
func appendEntry(a []any, tr *market.Transfer, k int) []any {
	e := tr.Entries[k]
	return append(a, tr.Seq, k, e.Account, e.Account.Owner(), int64(e.Amount), micros(tr.At), string(tr.Kind))
}

// transferRow is one row of a transfers-join-entries query.
type transferRow struct {
	t market.Transfer
	e market.Entry
}

func scanTransferRow(s scanner) (transferRow, error) {
	var r transferRow
	var at, amount int64
	err := s.Scan(&r.t.Seq, &r.t.ID, &r.t.Key, &r.t.Kind, &r.t.Asset, &r.t.Instance, &r.t.Minute, &r.t.Memo, &at,
		&r.e.Account, &amount)
	r.t.At = fromMicros(at)
	r.e.Amount = market.Money(amount)
	return r, err
}

// groupTransfers folds consecutive rows of one transfer into one Transfer.
func groupTransfers(rows []transferRow) []market.Transfer {
	var out []market.Transfer
	for _, r := range rows {
		if len(out) == 0 || out[len(out)-1].Seq != r.t.Seq {
			out = append(out, r.t)
		}
		last := &out[len(out)-1]
		last.Entries = append(last.Entries, r.e)
	}
	return out
}

func (t *sqlTx) TransferByKey(ctx context.Context, key string) (market.Transfer, error) {
	rows, err := t.tx.QueryContext(ctx, qTransferByKey, key)
	if err != nil {
		return market.Transfer{}, fmt.Errorf("get transfer by key: %w", err)
	}
	got, err := collect(rows, scanTransferRow)
	if err != nil {
		return market.Transfer{}, fmt.Errorf("get transfer by key: %w", err)
	}
	ts := groupTransfers(got)
	if len(ts) == 0 {
		return market.Transfer{}, market.Errorf("get transfer", market.NotFound, "no transfer with key %q", key)
	}
	return ts[0], nil
}

func (t *sqlTx) Balance(ctx context.Context, a market.LedgerAccount, asset market.Asset) (market.Money, error) {
	var v int64
	err := t.tx.QueryRowContext(ctx, qBalance, a, asset).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("balance of %s: %w", a, err)
	}
	return market.Money(v), nil
}

func (t *sqlTx) Balances(ctx context.Context, asset market.Asset) (map[market.LedgerAccount]market.Money, error) {
	rows, err := t.tx.QueryContext(ctx, qBalances, asset)
	if err != nil {
		return nil, fmt.Errorf("balances: %w", err)
	}
	defer rows.Close()
	out := make(map[market.LedgerAccount]market.Money)
	for rows.Next() {
		var a market.LedgerAccount
		var v int64
		if err := rows.Scan(&a, &v); err != nil {
			return nil, fmt.Errorf("balances: %w", err)
		}
		out[a] = market.Money(v)
	}
	return out, rows.Err()
}

func (t *sqlTx) Transfers(ctx context.Context, owner market.AccountID, before int64, limit int) ([]market.Transfer, error) {
	q, args := qTransfers, []any{limitOf(limit)}
	switch {
	case owner == "" && before > 0:
		q, args = qTransfersBefore, append(args, before)
	case owner != "" && before > 0:
		q, args = qTransfersOfBefore, append(args, owner, before)
	case owner != "":
		q, args = qTransfersOf, append(args, owner)
	}
	rows, err := t.tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list transfers: %w", err)
	}
	got, err := collect(rows, scanTransferRow)
	if err != nil {
		return nil, fmt.Errorf("list transfers: %w", err)
	}
	return groupTransfers(got), nil
}

func (t *sqlTx) ChargedMinutes(ctx context.Context, id market.InstanceID) ([]int64, error) {
	rows, err := t.tx.QueryContext(ctx, qChargedMinutes, id)
	if err != nil {
		return nil, fmt.Errorf("charged minutes of %s: %w", id, err)
	}
	return collect(rows, func(s scanner) (int64, error) {
		var m int64
		err := s.Scan(&m)
		return m, err
	})
}

// Logs and events.

func (t *sqlTx) AppendLogs(ctx context.Context, chunks []market.LogChunk) error {
	const op = "append logs"
	if len(chunks) == 0 {
		return nil
	}
	// Number the chunks of each instance in the order given.
	var order []market.InstanceID
	count := make(map[market.InstanceID]int64)
	for _, c := range chunks {
		if count[c.Instance] == 0 {
			order = append(order, c.Instance)
		}
		count[c.Instance]++
	}
	return t.atomic(ctx, func() error {
		next := make(map[market.InstanceID]int64, len(order))
		for _, id := range order {
			var last int64
			err := t.tx.QueryRowContext(ctx, qBumpLogSeq, id, count[id]).Scan(&last)
			if errors.Is(err, sql.ErrNoRows) {
				return market.Errorf(op, market.NotFound, "instance %s not found", id)
			}
			if err != nil {
				return fmt.Errorf("%s of %s: %w", op, id, err)
			}
			next[id] = last - count[id] + 1
		}
		for _, c := range chunks {
			seq := next[c.Instance]
			next[c.Instance]++
			// Always bytes: SQLite gives a BYTEA column numeric affinity,
			// which would turn text such as "42" into a number.
			if _, err := t.tx.ExecContext(ctx, qInsertLog, c.Instance, seq, c.Stream, []byte(c.Data), micros(c.At)); err != nil {
				return fmt.Errorf("%s of %s: %w", op, c.Instance, err)
			}
		}
		return nil
	})
}

func scanLog(s scanner) (market.LogChunk, error) {
	var c market.LogChunk
	var at int64
	err := s.Scan(&c.Instance, &c.Seq, &c.Stream, &c.Data, &at)
	c.At = fromMicros(at)
	return c, err
}

func (t *sqlTx) Logs(ctx context.Context, id market.InstanceID, afterSeq int64, limit int) ([]market.LogChunk, error) {
	rows, err := t.tx.QueryContext(ctx, qLogs, id, afterSeq, limitOf(limit))
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", id, err)
	}
	return collect(rows, scanLog)
}

func (t *sqlTx) AppendEvent(ctx context.Context, e market.Event) error {
	if t.deferral != nil && t.keeping() {
		t.goOn()
		t.deferred++
		t.kept.events = append(t.kept.events, behindEvent{n: t.deferred, e: e})
		return nil
	}
	if t.deferral != nil {
		return t.deferEvent(ctx, e)
	}
	return t.atomic(ctx, func() error {
		if err := t.tx.QueryRowContext(ctx, qNextCounter, counterEvent).Scan(&e.Seq); err != nil {
			return fmt.Errorf("append event: next seq: %w", err)
		}
		_, err := t.tx.ExecContext(ctx, qInsertEvent, e.Seq, micros(e.At), e.Type, e.Account, e.Machine, e.Instance, e.Message)
		if err != nil {
			return fmt.Errorf("append event %s: %w", e.Type, err)
		}
		return nil
	})
}

func scanEvent(s scanner) (market.Event, error) {
	var e market.Event
	var at int64
	err := s.Scan(&e.Seq, &at, &e.Type, &e.Account, &e.Machine, &e.Instance, &e.Message)
	e.At = fromMicros(at)
	return e, err
}

func (t *sqlTx) OutcomeCounts(ctx context.Context, spans []coord.OutcomeSpan) ([]coord.EventCount, error) {
	var out []coord.EventCount
	for chunk := range slices.Chunk(spans, inList/3) {
		args := make([]any, 0, 3*len(chunk))
		conds := make([]string, len(chunk))
		for i, sp := range chunk {
			args = append(args, sp.Machine, micros(sp.From), micros(sp.To))
			n := len(args)
			conds[i] = "(machine_id = $" + strconv.Itoa(n-2) + " AND at >= $" + strconv.Itoa(n-1) + " AND at <= $" + strconv.Itoa(n) + ")"
		}
		rows, err := t.tx.QueryContext(ctx, qOutcomeCounts+strings.Join(conds, " OR ")+qOutcomeCountsEnd, args...)
		if err != nil {
			return nil, fmt.Errorf("count the outcomes of %d machines: %w", len(chunk), err)
		}
		counts, err := collect(rows, func(s scanner) (coord.EventCount, error) {
			var c coord.EventCount
			err := s.Scan(&c.Machine, &c.Type, &c.Message, &c.N)
			return c, err
		})
		if err != nil {
			return nil, fmt.Errorf("count the outcomes of %d machines: %w", len(chunk), err)
		}
		out = append(out, counts...)
	}
	if len(spans) > inList/3 {
		slices.SortFunc(out, func(a, b coord.EventCount) int {
			return cmp.Or(strings.Compare(string(a.Machine), string(b.Machine)), strings.Compare(a.Type, b.Type), strings.Compare(a.Message, b.Message))
		})
	}
	return out, nil
}

func (t *sqlTx) Events(ctx context.Context, f coord.EventFilter) ([]market.Event, error) {
	evs, err := chunked(f.Machines, func(machines []string) ([]market.Event, error) { return t.events(ctx, f, machines) })
	if len(f.Machines) > inList {
		slices.SortFunc(evs, func(a, b market.Event) int { return cmp.Compare(b.Seq, a.Seq) })
		if f.Limit > 0 && len(evs) > f.Limit {
			evs = evs[:f.Limit]
		}
	}
	return evs, err
}

func (t *sqlTx) events(ctx context.Context, f coord.EventFilter, machines []string) ([]market.Event, error) {
	var w where
	if f.Account != "" {
		w.add("account_id = ?", f.Account)
	}
	if f.Machine != "" {
		w.add("machine_id = ?", f.Machine)
	}
	if len(machines) > 0 && f.LimitEach == 0 {
		w.in("machine_id", machines) // with LimitEach, eachOf names them
	}
	if f.Instance != "" {
		w.add("instance_id = ?", f.Instance)
	}
	if f.Type != "" {
		w.add("type = ?", f.Type)
	}
	if f.AfterSeq > 0 {
		w.add("seq > ?", f.AfterSeq)
	}
	if f.StatesOnly {
		w.as(qMachineStateTypes)
	}
	q := qEvents + w.sql() + qEventsOrder
	if f.LimitEach > 0 && len(machines) > 0 {
		q = w.eachOf(eventColumns, eventColumns, "events", qEventsOrder, machines, f.LimitEach)
	}
	if f.Limit > 0 {
		w.args = append(w.args, f.Limit)
		q += " LIMIT $" + strconv.Itoa(len(w.args))
	}
	rows, err := t.tx.QueryContext(ctx, q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return collect(rows, scanEvent)
}
