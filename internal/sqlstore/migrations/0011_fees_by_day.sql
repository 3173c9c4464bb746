-- 0012_fees_by_day: the operator's revenue per day sums the platform fee
-- account's entries of the transfers made since a day (coord.Tx
-- FeesByDay). This index finds the first of those transfers, so that the
-- sum reads the fee entries from there on, not the whole ledger's. It
-- holds only the kinds that move fees: a charges batch (thousands of
-- minutes) is one row, and so is a single charge or a refund. Same SQL for
-- SQLite and Postgres as 0001.

CREATE INDEX transfers_fees_at ON transfers (at, seq) WHERE kind IN ('charge', 'charges', 'refund');
