package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Write-behind (Tx.WriteBehind, where the adapter allows it:
// TxConfig.WriteBehind, Postgres). An instance create wrote four rows of
// four tables (the instance with its GPUs, the escrow hold, its event, its
// idempotency record), each a statement and a round trip to the server,
// and a batch of creates (coord's group commit) paid them once per create
// while every other create waited for its commit; an agent's
// acknowledgement wrote the instance and its event. So the writes whose
// caller needs nothing back but success are kept in memory and written
// together, in one statement for the whole batch, just before the
// transaction's next statement or its commit: InsertInstance (fresh, with
// its GPUs), UpdateInstance (when the GPUs it holds stay as they were),
// AppendEvent (to events_pending), InsertIdempotency, and
// ApplyTransferLater (a transfer whose number the caller does not need).
//
// A transaction asks for it (coord's create batches do): its function may
// then see a write succeed that the database refuses at the next
// statement, and is run again. What it sees otherwise is unchanged:
//   - every check that needs no database runs at once, and its refusal is
//     returned by the call;
//   - a statement after the writes runs after them, and sees them;
//   - a step of the store's (atomic) or of the coordinator's (Tx.Atomic,
//     Tx.AtomicOrRerun) that fails forgets what it kept: a coordinator's
//     step first writes what was kept before it began, so that its
//     savepoint undoes only its own writes;
//   - when the database refuses the kept writes (a unique key taken, a
//     balance short), the transaction is rolled back and run again with
//     every write made at once (eagerly, as after a failure gone past:
//     savepoint.go), so that the call that wrote the refused row returns
//     the refusal, as it would have without write-behind. (So a function
//     that asks for write-behind must not act on a write's success
//     outside the transaction before it commits.)
//
// The statement takes its rows in arrays (unnest), a column each, so that
// its text, and the server's prepared plan, depend only on which tables
// it writes, not on how many rows: a text per number of rows made nearly
// every write a new statement for the server to parse and plan.

// maxKeptInstances is how many instances are kept at most before they are
// written: it bounds what one statement's arrays carry.
const maxKeptInstances = 500

// behind holds the writes kept for later, in the order they were made
// within each table.
type behind struct {
	instances []market.Instance
	updates   []market.Instance // whose GPUs stay as they were
	transfers []behindTransfer
	events    []behindEvent
	records   []coord.IdemRecord
	// signs is, per account that a kept transfer moves, whether it was
	// debited (-1) or credited (+1); see ApplyTransferLater.
	signs map[balanceKey]int
}

type behindTransfer struct {
	tr  market.Transfer
	net []market.Entry
}

type behindEvent struct {
	n int64 // its place in the transaction (events_pending.n)
	e market.Event
}

// behindMark is how many writes of each table were kept at some point.
type behindMark [5]int

func (b *behind) mark() behindMark {
	return behindMark{len(b.instances), len(b.transfers), len(b.events), len(b.records), len(b.updates)}
}

func (b *behind) empty() bool { return b.mark() == behindMark{} }

// writes reports whether a kept write inserts or updates instance id: a
// statement may change a row once.
func (b *behind) writes(id market.InstanceID) bool {
	has := func(i market.Instance) bool { return i.ID == id }
	return slices.ContainsFunc(b.instances, has) || slices.ContainsFunc(b.updates, has)
}

// undo forgets what was kept after m.
func (b *behind) undo(m behindMark) {
	if b.mark() == m {
		return
	}
	b.instances, b.events, b.records, b.updates = b.instances[:m[0]], b.events[:m[2]], b.records[:m[3]], b.updates[:m[4]]
	if len(b.transfers) > m[1] {
		b.transfers = b.transfers[:m[1]]
		b.signs = nil
		for _, k := range b.transfers {
			b.note(k.tr.Asset, k.net)
		}
	}
}

// note records the direction in which net moves each account.
func (b *behind) note(asset market.Asset, net []market.Entry) {
	if b.signs == nil {
		b.signs = map[balanceKey]int{}
	}
	for _, n := range net {
		b.signs[balanceKey{n.Account, asset}] = sign(n)
	}
}

func sign(n market.Entry) int {
	if n.Amount < 0 {
		return -1
	}
	return 1
}

// WriteBehind lets the store keep this transaction's writes for later
// (see above), where the adapter allows it.
func (t *sqlTx) WriteBehind() { t.behind = t.allowBehind && !t.eager && !t.reads }

// keeping reports whether this transaction keeps writes for later.
func (t *sqlTx) keeping() bool { return t.behind }

// atomicFrame is one open step of the store's own (atomic) while writes
// are kept: mark is what was kept when it began, or none after a write
// of the kept rows within it; own is set when such a write held rows it
// had kept; direct counts the other writes (t.writes - t.flushWrites)
// when it began.
type atomicFrame struct {
	mark   behindMark
	own    bool
	direct int64
}

// flushKept writes what was kept, before another statement or the commit.
// When the database refuses it, the transaction's function is unwound and
// run again eagerly (see above); so are other failures, which the eager
// run meets again where they belong.
func (t *sqlTx) flushKept(ctx context.Context) {
	if t.kept.empty() {
		return
	}
	b := t.kept
	t.kept = behind{} // the statements below must not flush again
	m := b.mark()
	for k := range t.atomics {
		if t.atomics[k].mark != m {
			t.atomics[k].own = true
		}
		t.atomics[k].mark = behindMark{}
	}
	writes := t.writes
	err := t.writeKept(ctx, b)
	t.flushWrites += t.writes - writes
	if err != nil {
		t.rerun = true
		panic(rerunSignal{})
	}
}

// writeKept writes what was kept in one statement, a writing WITH clause
// per table.
func (t *sqlTx) writeKept(ctx context.Context, b behind) error {
	shape := keptShape{instances: len(b.instances) > 0, updates: len(b.updates) > 0, transfers: len(b.transfers) > 0,
		events: len(b.events) > 0, records: len(b.records) > 0}
	var args []any
	if shape.instances {
		var err error
		if args, err = instanceRows(args, b.instances); err != nil {
			return err
		}
	}
	if shape.updates {
		cols, err := instanceArrays(b.updates)
		if err != nil {
			return err
		}
		args = append(args, cols...)
	}
	var debits int
	if shape.transfers {
		var err error
		if args, debits, err = transferArgs(args, b.transfers); err != nil {
			return err
		}
	}
	if shape.events {
		var n, at []int64
		var typ, account, machine, instance, message []string
		for _, k := range b.events {
			n, at = append(n, k.n), append(at, micros(k.e.At))
			typ, account, machine = append(typ, k.e.Type), append(account, string(k.e.Account)), append(machine, string(k.e.Machine))
			instance, message = append(instance, string(k.e.Instance)), append(message, k.e.Message)
		}
		args = append(args, n, at, typ, account, machine, instance, message)
	}
	if shape.records {
		var account, key, op, hash, kind, msg, resp []string
		var created []int64
		for _, r := range b.records {
			account, key, op, hash = append(account, string(r.Account)), append(key, r.Key), append(op, r.Op), append(hash, r.RequestHash)
			kind, msg, resp = append(kind, r.ErrorKind), append(msg, r.ErrorMessage), append(resp, string(r.Response))
			created = append(created, micros(r.CreatedAt))
		}
		args = append(args, account, key, op, hash, kind, msg, resp, created)
	}
	var updatedDebits, updated int
	if err := t.tx.QueryRowContext(ctx, shape.statement(t.deferral.TxID), args...).Scan(&updatedDebits, &updated); err != nil {
		return fmt.Errorf("write kept rows: %w", err)
	}
	switch {
	case updatedDebits < debits:
		return fmt.Errorf("apply transfers: a debited account holds nothing")
	case updated < len(b.updates):
		return fmt.Errorf("update instances: one is missing")
	}
	return nil
}

// instanceRows appends to args the arguments of keptShape's instance
// inserts for is: their columns (instanceArrays), then the machines,
// indices and instances of their GPUs (three arrays).
func instanceRows(args []any, is []market.Instance) ([]any, error) {
	cols, err := instanceArrays(is)
	if err != nil {
		return nil, err
	}
	return append(append(args, cols...), gpuRows(is)...), nil
}

// instanceArrays returns the columns of is, in instanceColumns' order, as
// arrays: one per column, an element per instance, of the type
// instanceKinds gives (instanceArgs' values, NULL for an invalid
// sql.NullInt64).
func instanceArrays(is []market.Instance) ([]any, error) {
	kinds := instanceKinds()
	cols := make([]any, len(kinds))
	for c, k := range kinds {
		switch k {
		case "text":
			cols[c] = make([]string, 0, len(is))
		case "bigint":
			cols[c] = make([]*int64, 0, len(is))
		case "boolean":
			cols[c] = make([]bool, 0, len(is))
		}
	}
	for _, i := range is {
		args, err := instanceArgs(i)
		if err != nil {
			return nil, err
		}
		for c, a := range args {
			switch col := cols[c].(type) {
			case []string:
				cols[c] = append(col, reflect.ValueOf(a).String())
			case []*int64:
				var v *int64
				switch n := a.(type) {
				case sql.NullInt64:
					if n.Valid {
						v = &n.Int64
					}
				default:
					i := reflect.ValueOf(a).Int()
					v = &i
				}
				cols[c] = append(col, v)
			case []bool:
				cols[c] = append(col, a.(bool))
			}
		}
	}
	return cols, nil
}

// instanceKinds is the SQL type of each of instanceArgs' values: text,
// bigint or boolean, from their Go types.
var instanceKinds = sync.OnceValue(func() []string {
	args, err := instanceArgs(market.Instance{})
	if err != nil {
		panic(fmt.Sprintf("sqlstore: the arguments of an empty instance: %v", err))
	}
	kinds := make([]string, len(args))
	for c, a := range args {
		switch v := reflect.ValueOf(a); {
		case v.Type() == reflect.TypeFor[sql.NullInt64]() || v.CanInt():
			kinds[c] = "bigint"
		case v.Kind() == reflect.String:
			kinds[c] = "text"
		case v.Kind() == reflect.Bool:
			kinds[c] = "boolean"
		default:
			panic(fmt.Sprintf("sqlstore: instance column %d has Go type %T; instanceArrays takes strings, integers, booleans and sql.NullInt64", c, a))
		}
	}
	return kinds
})

// instanceUnnest is "unnest($first::text[], ...) AS v (id, ...)": the
// rows of instanceArrays' columns.
func instanceUnnest(first int) string {
	kinds := instanceKinds()
	params := make([]string, len(kinds))
	for c, k := range kinds {
		params[c] = "$" + strconv.Itoa(first+c) + "::" + k + "[]"
	}
	return "unnest(" + strings.Join(params, ", ") + ") AS v (" + instanceColumns + ")"
}

// gpuRows is the machines, indices and instances of the GPUs is hold,
// three arrays.
func gpuRows(is []market.Instance) []any {
	var machine, instance []string
	var gpu []int64
	for _, i := range is {
		for _, g := range allocationsOf(i) {
			machine, gpu, instance = append(machine, string(g.machine)), append(gpu, int64(g.gpu)), append(instance, string(i.ID))
		}
	}
	return []any{machine, gpu, instance}
}

// keptShape is what one write of kept rows holds: the statement's text
// depends on it alone (and on the transaction ID expression of events).
type keptShape struct {
	instances, updates, transfers, events, records bool
}

// oneInstance inserts one instance and its GPUs (InsertInstance, where
// the database writes inside WITH).
var oneInstance = keptShape{instances: true}

// statement returns the text of s, built once.
func (s keptShape) statement(txid string) string {
	return statement(s, func() string { return s.build(txid) })
}

// build writes the statement for s. Its arguments, in order: the
// instances inserted (instanceRows: their columns, then their GPUs'
// machines, indices and instances); the instances updated
// (instanceArrays); the transfers' (transferArgs); the events' seven
// arrays; the records' eight. It returns the debited balances it updated
// and the instances. An instance is updated once at most (behind.writes).
func (s keptShape) build(txid string) string {
	var ctes []string
	n := 1 // the next parameter
	cols := len(instanceKinds())
	if s.instances {
		ctes = append(ctes, `i AS (INSERT INTO instances (`+instanceColumns+`) SELECT * FROM `+instanceUnnest(n)+` RETURNING id)`)
		n += cols
		ctes = append(ctes, renumber(`g AS (INSERT INTO gpu_allocations (machine_id, gpu_index, instance_id) SELECT v.machine_id, v.gpu_index, v.instance_id
  FROM unnest($1::text[], $2::bigint[], $3::text[]) AS v (machine_id, gpu_index, instance_id) JOIN i ON i.id = v.instance_id)`, n))
		n += 3
	}
	updated := "0"
	if s.updates {
		var set []string
		for _, c := range strings.Split(instanceColumns, ", ")[1:] {
			set = append(set, c+" = v."+c)
		}
		ctes = append(ctes, `u AS (UPDATE instances SET `+strings.Join(set, ", ")+` FROM `+instanceUnnest(n)+` WHERE instances.id = v.id RETURNING 1)`)
		n += cols
		updated = `(SELECT count(*) FROM u)`
	}
	debits := "0"
	if s.transfers {
		ctes = append(ctes, renumber(transfersWith, n))
		n += transfersParams
		debits = `(SELECT count(*) FROM d)`
	}
	if s.events {
		ctes = append(ctes, renumber(`ev AS (INSERT INTO events_pending (txid, n, `+pendingColumns+`) SELECT `+txid+`, v.* FROM
  unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS v)`, n))
		n += 7
	}
	if s.records {
		ctes = append(ctes, renumber(`k AS (INSERT INTO idempotency_keys (`+idemColumns+`) SELECT * FROM
  unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[]))`, n))
	}
	return "WITH " + strings.Join(ctes, ",\n") + "\nSELECT " + debits + ", " + updated
}

// placeholder matches a statement's parameters.
var placeholder = regexp.MustCompile(`\$(\d+)`)

// renumber shifts the parameters of q, $1 and up, to start at $first.
func renumber(q string, first int) string {
	return placeholder.ReplaceAllStringFunc(q, func(p string) string {
		k, _ := strconv.Atoi(p[1:])
		return "$" + strconv.Itoa(k+first-1)
	})
}

// transfersWith writes transfers (the kept ones, or one: qOneTransfer),
// numbered in order after the counter's
// value, their entries and the balances they change, which each appear
// once ($16-$18 the debits, $19-$21 the rest); d holds a row per debited
// balance updated: fewer than asked means one had no row (it holds 0) and
// was short.
const transfersWith = `c AS (INSERT INTO counters (name, value) VALUES ($1, $2)
  ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value RETURNING value),
t AS (INSERT INTO transfers (` + transferColumns + `)
  SELECT c.value - $2 + v.ord, v.id, v.idem_key, v.kind, v.asset, v.instance_id, v.minute, v.memo, v.at FROM c,
  unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::bigint[])
    WITH ORDINALITY AS v (id, idem_key, kind, asset, instance_id, minute, memo, at, ord)),
e AS (INSERT INTO transfer_entries (transfer_seq, idx, account, owner_id, amount, at, kind)
  SELECT c.value - $2 + v.ord, v.idx, v.account, v.owner_id, v.amount, ($10::bigint[])[v.ord], ($5::text[])[v.ord] FROM c,
  unnest($11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::bigint[]) AS v (ord, idx, account, owner_id, amount)),
d AS (UPDATE balances SET amount = balances.amount + v.amount
  FROM unnest($16::text[], $17::text[], $18::bigint[]) AS v (account, asset, amount)
  WHERE balances.account = v.account AND balances.asset = v.asset RETURNING 1),
a AS (INSERT INTO balances (account, asset, amount) SELECT * FROM unnest($19::text[], $20::text[], $21::bigint[])
  ON CONFLICT (account, asset) DO UPDATE SET amount = balances.amount + excluded.amount)`

// transfersParams is how many parameters transfersWith takes.
const transfersParams = 21

// qOneTransfer writes one transfer (ApplyTransfer, where the database
// writes inside WITH) and returns its number and the debited balances it
// updated.
const qOneTransfer = "WITH " + transfersWith + "\nSELECT (SELECT value FROM c), (SELECT count(*) FROM d)"

// transferArgs appends transfersWith' arguments for ks to args, and
// returns how many balances they debit.
func transferArgs(args []any, ks []behindTransfer) ([]any, int, error) {
	var id, key, kind, asset, inst, memo []string
	var minute, at []int64
	var eOrd, eIdx, eAmount []int64
	var eAccount, eOwner []string
	net := map[balanceKey]market.Money{}
	var order []balanceKey
	for k, b := range ks {
		tr := b.tr
		id, key, kind, asset = append(id, string(tr.ID)), append(key, tr.Key), append(kind, string(tr.Kind)), append(asset, string(tr.Asset))
		inst, minute, memo, at = append(inst, string(tr.Instance)), append(minute, tr.Minute), append(memo, tr.Memo), append(at, micros(tr.At))
		for idx, e := range tr.Entries {
			eOrd, eIdx, eAmount = append(eOrd, int64(k+1)), append(eIdx, int64(idx)), append(eAmount, int64(e.Amount))
			eAccount, eOwner = append(eAccount, string(e.Account)), append(eOwner, string(e.Account.Owner()))
		}
		for _, n := range b.net {
			bk := balanceKey{n.Account, tr.Asset}
			if _, ok := net[bk]; !ok {
				order = append(order, bk)
			}
			sum := net[bk] + n.Amount // one direction per account (ApplyTransferLater)
			if (n.Amount > 0) != (sum > net[bk]) {
				return nil, 0, fmt.Errorf("apply transfers: the amounts of account %s overflow", bk.account)
			}
			net[bk] = sum
		}
	}
	var dAccount, dAsset, cAccount, cAsset []string
	var dAmount, cAmount []int64
	for _, bk := range order {
		n := market.Entry{Account: bk.account, Amount: net[bk]}
		switch {
		case n.Amount == 0:
		case isDebit(n):
			dAccount, dAsset, dAmount = append(dAccount, string(bk.account)), append(dAsset, string(bk.asset)), append(dAmount, int64(n.Amount))
		default:
			cAccount, cAsset, cAmount = append(cAccount, string(bk.account)), append(cAsset, string(bk.asset)), append(cAmount, int64(n.Amount))
		}
	}
	return append(args, counterTransfer, int64(len(ks)), id, key, kind, asset, inst, minute, memo, at,
		eOrd, eIdx, eAccount, eOwner, eAmount, dAccount, dAsset, dAmount, cAccount, cAsset, cAmount), len(dAccount), nil
}

// ApplyTransferLater applies tr as ApplyTransfer does, kept for later
// when the transaction keeps writes, unless it is a charge (which writes
// its minute) or moves an account in the direction opposite to a kept
// transfer: the kept debits are checked together against the balances
// before them, which tells the same as checking them one by one only
// while no account is also credited.
func (t *sqlTx) ApplyTransferLater(ctx context.Context, tr market.Transfer) error {
	const op = "apply transfer"
	if !t.keeping() || tr.Kind == market.TransferCharge {
		_, err := t.ApplyTransfer(ctx, tr)
		return err
	}
	net, err := checkTransfer(op, tr)
	if err != nil {
		return err
	}
	for _, n := range net {
		if s, ok := t.kept.signs[balanceKey{n.Account, tr.Asset}]; ok && s != sign(n) {
			_, err := t.ApplyTransfer(ctx, tr) // writes the kept ones first
			return err
		}
	}
	t.goOn()
	tr.At = fromMicros(micros(tr.At))
	t.kept.transfers = append(t.kept.transfers, behindTransfer{tr: tr, net: net})
	t.kept.note(tr.Asset, net)
	return nil
}
