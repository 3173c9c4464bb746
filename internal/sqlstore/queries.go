package sqlstore

// The store's SQL. Every statement is plain SQL with $N placeholders that
// both SQLite and Postgres accept, so a Postgres adapter can reuse these
// strings, the migrations and the row scanning in tx.go unchanged.

const (
	accountColumns = `id, email, password_hash, roles, created_at`

	qInsertAccount = `INSERT INTO accounts (id, email, email_lower, password_hash, roles, created_at)
VALUES ($1, $2, $3, $4, $5, $6)`
	qAccountExists           = `SELECT id FROM accounts WHERE id = $1 OR email_lower = $2 LIMIT 1`
	qAccount                 = `SELECT ` + accountColumns + ` FROM accounts WHERE id = $1`
	qAccountByEmail          = `SELECT ` + accountColumns + ` FROM accounts WHERE email_lower = $1`
	apiKeyColumns            = `id, owner_id, name, prefix, hash, created_at, revoked_at`
	qInsertAPIKey            = `INSERT INTO api_keys (` + apiKeyColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7)`
	qAPIKeyByHash            = `SELECT ` + apiKeyColumns + ` FROM api_keys WHERE hash = $1`
	qAPIKeys                 = `SELECT ` + apiKeyColumns + ` FROM api_keys WHERE owner_id = $1 ORDER BY created_at, id`
	qRevokeAPIKey            = `UPDATE api_keys SET revoked_at = $3 WHERE id = $2 AND owner_id = $1`
	machineColumns           = `id, owner_id, fingerprint, hostname, gpus, cpu_cores, ram_mib, disk_gib, driver_version, cuda_version, runner, region, datacenter, listed, online, status, price_per_gpu_hour, last_seen_at, created_at, spot_reserve_per_gpu_day, energy_per_kwh, spot_max_power_w, spot_clock_ranges, port_range, unverified, review`
	qInsertMachine           = `INSERT INTO machines (` + machineColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)`
	qMachineConflict         = `SELECT id FROM machines WHERE id = $1 OR (owner_id = $2 AND fingerprint = $3) LIMIT 1`
	qUpdateMachine           = `UPDATE machines SET owner_id = $2, fingerprint = $3, hostname = $4, gpus = $5, cpu_cores = $6, ram_mib = $7, disk_gib = $8, driver_version = $9, cuda_version = $10, runner = $11, region = $12, datacenter = $13, listed = $14, online = $15, status = $16, price_per_gpu_hour = $17, last_seen_at = $18, created_at = $19, spot_reserve_per_gpu_day = $20, energy_per_kwh = $21, spot_max_power_w = $22, spot_clock_ranges = $23, port_range = $24, unverified = $25, review = $26 WHERE id = $1`
	qMachine                 = `SELECT ` + machineColumns + ` FROM machines WHERE id = $1`
	qMachineExists           = `SELECT id FROM machines WHERE id = $1`
	qMachineByFP             = `SELECT ` + machineColumns + ` FROM machines WHERE owner_id = $1 AND fingerprint = $2`
	qMachines                = `SELECT ` + machineColumns + ` FROM machines` // + filter + qMachinesOrder
	qMachinesOrder           = ` ORDER BY id`
	qActiveGPUsPrefix        = `SELECT machine_id, gpu_index FROM gpu_allocations WHERE machine_id IN ` // + ($1, ...)
	qActiveGPUsOrder         = ` ORDER BY machine_id, gpu_index`
	qAllActiveGPUs           = `SELECT machine_id, gpu_index FROM gpu_allocations` + qActiveGPUsOrder
	instanceColumns          = `id, renter_id, machine_id, kind, gpus, image, command, env, state, active, generation, price_per_hour, escrow, reason, exit_code, created_at, started_at, stop_at, ended_at, billed_minutes, charged, settled, grace_seconds, notice_at, last_report_at, bid_id, price_per_day, power_limit_w, clocks, notice_seconds, template, ports, ssh_keys, limits, port_map`
	qInsertInstance          = `INSERT INTO instances (` + instanceColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35)`
	qUpdateInstance          = `UPDATE instances SET renter_id = $2, machine_id = $3, kind = $4, gpus = $5, image = $6, command = $7, env = $8, state = $9, active = $10, generation = $11, price_per_hour = $12, escrow = $13, reason = $14, exit_code = $15, created_at = $16, started_at = $17, stop_at = $18, ended_at = $19, billed_minutes = $20, charged = $21, settled = $22, grace_seconds = $23, notice_at = $24, last_report_at = $25, bid_id = $26, price_per_day = $27, power_limit_w = $28, clocks = $29, notice_seconds = $30, template = $31, ports = $32, ssh_keys = $33, limits = $34, port_map = $35 WHERE id = $1`
	qInstance                = `SELECT ` + instanceColumns + ` FROM instances WHERE id = $1`
	qInstanceExists          = `SELECT id FROM instances WHERE id = $1`
	qInstances               = `SELECT ` + instanceColumns + ` FROM instances` // + filter + qInstancesOrder
	qInstancesOrder          = ` ORDER BY created_at, id`
	qAllocations             = `SELECT machine_id, gpu_index FROM gpu_allocations WHERE instance_id = $1 ORDER BY machine_id, gpu_index`
	qHeldGPU                 = `SELECT instance_id FROM gpu_allocations WHERE machine_id = $1 AND gpu_index = $2 AND instance_id <> $3`
	qInsertAllocationsPrefix = `INSERT INTO gpu_allocations (machine_id, gpu_index, instance_id) VALUES ` // + ($1, $2, $3), ...
	qDeleteAllocations       = `DELETE FROM gpu_allocations WHERE instance_id = $1`

	qNextCounter = `INSERT INTO counters (name, value) VALUES ($1, 1)
ON CONFLICT (name) DO UPDATE SET value = counters.value + 1
RETURNING value`

	transferColumns  = `seq, id, idem_key, kind, asset, instance_id, minute, memo, at`
	qInsertTransfer  = `INSERT INTO transfers (` + transferColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	qInsertEntries2  = qInsertEntriesPrefix + `($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)` // billing.go
	qTransferKeyUsed = `SELECT seq FROM transfers WHERE idem_key = $1`
	qChargeExists    = `SELECT transfer_seq FROM minute_charges WHERE instance_id = $1 AND minute = $2`
	qTransferIDUsed  = `SELECT seq FROM transfers WHERE id = $1`
	qBalance         = `SELECT amount FROM balances WHERE account = $1 AND asset = $2`
	qBalances        = `SELECT account, amount FROM balances WHERE asset = $1 ORDER BY account`
	qAddBalance      = `INSERT INTO balances (account, asset, amount) VALUES ($1, $2, $3)
ON CONFLICT (account, asset) DO UPDATE SET amount = balances.amount + excluded.amount
RETURNING amount`
	// qSubBalance takes from an account that may not go negative. An upsert
	// would not do: both databases check the CHECK constraint against the
	// proposed (negative) row before they see the conflict.
	qSubBalance         = `UPDATE balances SET amount = amount + $3 WHERE account = $1 AND asset = $2 RETURNING amount`
	transferJoinColumns = `t.seq, t.id, t.idem_key, t.kind, t.asset, t.instance_id, t.minute, t.memo, t.at, e.account, e.amount`
	qTransferByKey      = `SELECT ` + transferJoinColumns + `
FROM transfers t JOIN transfer_entries e ON e.transfer_seq = t.seq
WHERE t.idem_key = $1 ORDER BY e.idx`
	qChargedMinutes = `SELECT minute FROM minute_charges WHERE instance_id = $1 ORDER BY minute`

	qBumpLogSeq  = `UPDATE instances SET log_seq = log_seq + $2 WHERE id = $1 RETURNING log_seq`
	qInsertLog   = `INSERT INTO log_chunks (instance_id, seq, stream, data, at) VALUES ($1, $2, $3, $4, $5)`
	qLogs        = `SELECT instance_id, seq, stream, data, at FROM log_chunks WHERE instance_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`
	eventColumns = `seq, at, type, account_id, machine_id, instance_id, message`
	qInsertEvent = `INSERT INTO events (` + eventColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7)`
	qEvents      = `SELECT ` + eventColumns + ` FROM events` // + filter + qEventsOrder
	// qMachineStateTypes is the condition of the partial index
	// events_machine_state (migration 0019), written as it says it so
	// that both databases use the index.
	qMachineStateTypes = `type IN ('machine.registered', 'machine.online', 'machine.offline', 'machine.listed', 'machine.unlisted')`
	qEventsOrder       = ` ORDER BY seq DESC`
	// qOutcomeCounts counts machines' outcome events over spans of time,
	// by machine, type and message, over the partial index
	// events_machine_outcomes (migration 0020), whose condition it says as
	// the index does; the spans' conditions, joined by OR, go between it
	// and qOutcomeCountsEnd. (A UNION ALL of one count per machine was
	// slower on SQLite for a pass over many machines.)
	qOutcomeCounts = `SELECT machine_id, type, message, COUNT(*) FROM events WHERE ` +
		`type IN ('instance.failed', 'instance.stopped', 'instance.preempted', 'machine.verified', 'machine.verify_failed') AND (`
	qOutcomeCountsEnd = `) GROUP BY machine_id, type, message ORDER BY machine_id, type, message`
	bidColumns        = `id, seq, bidder_id, machine_id, gpus, price_per_gpu_day, power_limit_w, clocks, image, command, env, webhook, notice_seconds, state, in_book, created_at, expires_at, instance_id`
	qInsertBid        = `INSERT INTO bids (` + bidColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`
	qBidExists        = `SELECT id FROM bids WHERE id = $1`
	qUpdateBid        = `UPDATE bids SET bidder_id = $2, machine_id = $3, gpus = $4, price_per_gpu_day = $5, power_limit_w = $6, clocks = $7, image = $8, command = $9, env = $10, webhook = $11, notice_seconds = $12, state = $13, in_book = $14, created_at = $15, expires_at = $16, instance_id = $17 WHERE id = $1`
	qBid              = `SELECT ` + bidColumns + ` FROM bids WHERE id = $1`
	qBids             = `SELECT ` + bidColumns + ` FROM bids` // + filter + qBidsOrder
	qBidsOrder        = ` ORDER BY seq`
	roundColumns      = `id, seq, machine_id, at, input, decision`
	qInsertRound      = `INSERT INTO auction_rounds (` + roundColumns + `) VALUES ($1, $2, $3, $4, $5, $6)`
	qRoundExists      = `SELECT id FROM auction_rounds WHERE id = $1`
	qRound            = `SELECT ` + roundColumns + ` FROM auction_rounds WHERE id = $1`
	qRounds           = `SELECT ` + roundColumns + ` FROM auction_rounds` // + filter + qRoundsOrder
	qRoundsOrder      = ` ORDER BY seq DESC`
	counterBid        = "bid"
	counterRound      = "round"

	counterTransfer = "transfer"
	counterEvent    = "event"
)

// The newest transfers, a page of $1 (the limit), with their entries: the
// whole ledger's, or one owner's ($2), and with $3 (or the ledger's $2)
// the page before that seq. An owner's seqs come from
// transfer_entries_owner, newest first: from transfers, SQLite walked
// the whole ledger back from its newest transfer to find them.
var (
	qTransfers         = transfersPage(`SELECT seq AS transfer_seq FROM transfers ORDER BY seq DESC LIMIT $1`)
	qTransfersBefore   = transfersPage(`SELECT seq AS transfer_seq FROM transfers WHERE seq < $2 ORDER BY seq DESC LIMIT $1`)
	qTransfersOf       = transfersPage(`SELECT DISTINCT transfer_seq FROM transfer_entries WHERE owner_id = $2 ORDER BY transfer_seq DESC LIMIT $1`)
	qTransfersOfBefore = transfersPage(`SELECT DISTINCT transfer_seq FROM transfer_entries WHERE owner_id = $2 AND transfer_seq < $3 ORDER BY transfer_seq DESC LIMIT $1`)
)

// transfersPage is the transfers that seqs (a query of their seqs, as
// transfer_seq) selects, with their entries, newest first.
func transfersPage(seqs string) string {
	return `SELECT ` + transferJoinColumns + `
FROM (` + seqs + `) s
JOIN transfers t ON t.seq = s.transfer_seq
JOIN transfer_entries e ON e.transfer_seq = t.seq
ORDER BY t.seq DESC, e.idx`
}
