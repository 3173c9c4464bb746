-- 0018_entries_at: each ledger entry carries its transfer's kind and time
-- (at, microseconds, as transfers.at), and an account's entries are
-- indexed by them. The sum of an account's entries of some kinds over a
-- window (coord.Tx Flow: a host's unsettled earnings on every wallet
-- view, withdrawal and refund, a renter's spending of the last hour on
-- every leader tick for spend alerts, a staker's dividends; FeesByDay)
-- read every entry the account ever had through transfer_entries_account
-- (account, transfer_seq), then each one's transfer for its kind and time:
-- a host paid every minute for 69 days took 17 ms on Postgres and 66 ms on
-- SQLite to sum its last hour. It now reads only the entries it sums. The
-- index replaces transfer_entries_account, which nothing else read;
-- transfers_fees_at, which found where FeesByDay's window began, goes too.
-- The backfill rewrites every entry once. Same SQL for SQLite and
-- Postgres.

ALTER TABLE transfer_entries ADD COLUMN at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE transfer_entries ADD COLUMN kind TEXT NOT NULL DEFAULT '';
UPDATE transfer_entries SET (at, kind) = (SELECT t.at, t.kind FROM transfers t WHERE t.seq = transfer_entries.transfer_seq);
DROP INDEX transfer_entries_account;
CREATE INDEX transfer_entries_account_kind_at ON transfer_entries (account, kind, at);
DROP INDEX transfers_fees_at;
