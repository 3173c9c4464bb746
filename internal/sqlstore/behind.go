package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Write-behind (Tx.WriteBehind, where the adapter allows it:
// TxConfig.WriteBehind, Postgres). An instance create wrote
// four rows of four tables (the instance with its GPUs, the escrow hold,
// its event, its idempotency record), each a statement and a round trip
// to the server, and a batch of creates (coord's group commit) paid them
// once per create while every other create waited for its commit. So the
// writes whose caller needs nothing back but success are kept in memory
// and written together, one statement per table for the whole batch,
// just before the transaction's next statement or its commit:
// InsertInstance (fresh, with its GPUs), AppendEvent (to events_pending),
// InsertIdempotency, and ApplyTransferLater (a transfer whose number the
// caller does not need).
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
// The statements take their rows in arrays (unnest), so that their texts,
// and the server's prepared plans, do not depend on the number of rows;
// instances, with 35 columns, are a VALUES list.

// behind holds the writes kept for later, in the order they were made
// within each table.
type behind struct {
	instances []market.Instance
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
type behindMark [4]int

func (b *behind) mark() behindMark {
	return behindMark{len(b.instances), len(b.transfers), len(b.events), len(b.records)}
}

func (b *behind) empty() bool { return b.mark() == behindMark{} }

// undo forgets what was kept after m.
func (b *behind) undo(m behindMark) {
	if b.mark() == m {
		return
	}
	b.instances, b.events, b.records = b.instances[:m[0]], b.events[:m[2]], b.records[:m[3]]
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

func (t *sqlTx) writeKept(ctx context.Context, b behind) error {
	for start := 0; start < len(b.instances); start += t.rowsPerStmt {
		if err := t.writeInstances(ctx, b.instances[start:min(start+t.rowsPerStmt, len(b.instances))]); err != nil {
			return err
		}
	}
	if len(b.transfers) > 0 {
		if err := t.writeTransfers(ctx, b.transfers); err != nil {
			return err
		}
	}
	if len(b.events) > 0 {
		var n, at []int64
		var typ, account, machine, instance, message []string
		for _, k := range b.events {
			n, at = append(n, k.n), append(at, micros(k.e.At))
			typ, account, machine = append(typ, k.e.Type), append(account, string(k.e.Account)), append(machine, string(k.e.Machine))
			instance, message = append(instance, string(k.e.Instance)), append(message, k.e.Message)
		}
		q := `INSERT INTO events_pending (txid, n, ` + pendingColumns + `) SELECT ` + t.deferral.TxID + `, v.* FROM
unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS v`
		if _, err := t.tx.ExecContext(ctx, q, n, at, typ, account, machine, instance, message); err != nil {
			return fmt.Errorf("append events: %w", err)
		}
	}
	if len(b.records) > 0 {
		var account, key, op, hash, kind, msg, resp []string
		var created []int64
		for _, r := range b.records {
			account, key, op, hash = append(account, string(r.Account)), append(key, r.Key), append(op, r.Op), append(hash, r.RequestHash)
			kind, msg, resp = append(kind, r.ErrorKind), append(msg, r.ErrorMessage), append(resp, string(r.Response))
			created = append(created, micros(r.CreatedAt))
		}
		q := `INSERT INTO idempotency_keys (` + idemColumns + `) SELECT * FROM
unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[])`
		if _, err := t.tx.ExecContext(ctx, q, account, key, op, hash, kind, msg, resp, created); err != nil {
			return fmt.Errorf("record idempotency keys: %w", err)
		}
	}
	return nil
}

// writeInstances inserts fresh instances and their GPUs in one statement.
func (t *sqlTx) writeInstances(ctx context.Context, is []market.Instance) error {
	var args []any
	var machine, instance []string
	var gpu []int64
	for _, i := range is {
		a, err := instanceArgs(i)
		if err != nil {
			return err
		}
		args = append(args, a...)
		for _, g := range allocationsOf(i) {
			machine, gpu, instance = append(machine, string(g.machine)), append(gpu, int64(g.gpu)), append(instance, string(i.ID))
		}
	}
	cols := strings.Count(qInsertInstance, "$")
	q := statement(keptInstances(len(is)), func() string {
		n := len(is)*cols + 1
		return `WITH i AS (INSERT INTO instances (` + instanceColumns + `) VALUES ` + valuesList(len(is), cols, 1, nil) + ` RETURNING id)
INSERT INTO gpu_allocations (machine_id, gpu_index, instance_id) SELECT v.machine_id, v.gpu_index, v.instance_id
FROM unnest(` + fmt.Sprintf("$%d::text[], $%d::bigint[], $%d::text[]", n, n+1, n+2) + `) AS v (machine_id, gpu_index, instance_id) JOIN i ON i.id = v.instance_id`
	})
	args = append(args, machine, gpu, instance)
	if _, err := t.tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("insert instances: %w", err)
	}
	return nil
}

// qKeptTransfers writes transfers, numbered in order after the counter's
// value, their entries and the balances they change, which each appear
// once ($16-$18 the debits, $19-$21 the rest). It returns how many
// debited balances it updated: fewer than asked means one had no row (it
// holds 0) and was short.
const qKeptTransfers = `WITH c AS (` + qBumpCounter + `),
t AS (INSERT INTO transfers (` + transferColumns + `)
  SELECT c.value - $2 + v.ord, v.id, v.idem_key, v.kind, v.asset, v.instance_id, v.minute, v.memo, v.at FROM c,
  unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::bigint[])
    WITH ORDINALITY AS v (id, idem_key, kind, asset, instance_id, minute, memo, at, ord)),
e AS (INSERT INTO transfer_entries (transfer_seq, idx, account, owner_id, amount)
  SELECT c.value - $2 + v.ord, v.idx, v.account, v.owner_id, v.amount FROM c,
  unnest($11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::bigint[]) AS v (ord, idx, account, owner_id, amount)),
d AS (UPDATE balances SET amount = balances.amount + v.amount
  FROM unnest($16::text[], $17::text[], $18::bigint[]) AS v (account, asset, amount)
  WHERE balances.account = v.account AND balances.asset = v.asset RETURNING 1),
a AS (INSERT INTO balances (account, asset, amount) SELECT * FROM unnest($19::text[], $20::text[], $21::bigint[])
  ON CONFLICT (account, asset) DO UPDATE SET amount = balances.amount + excluded.amount)
SELECT count(*) FROM d`

// writeTransfers writes kept transfers in one statement.
func (t *sqlTx) writeTransfers(ctx context.Context, ks []behindTransfer) error {
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
				return fmt.Errorf("apply transfers: the amounts of account %s overflow", bk.account)
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
	var updated int
	err := t.tx.QueryRowContext(ctx, qKeptTransfers, counterTransfer, int64(len(ks)),
		id, key, kind, asset, inst, minute, memo, at,
		eOrd, eIdx, eAccount, eOwner, eAmount,
		dAccount, dAsset, dAmount, cAccount, cAsset, cAmount).Scan(&updated)
	if err != nil {
		return fmt.Errorf("apply transfers: %w", err)
	}
	if updated < len(dAccount) {
		return fmt.Errorf("apply transfers: a debited account holds nothing")
	}
	return nil
}

// keptInstances keys the text of writeInstances for n instances.
type keptInstances int

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
