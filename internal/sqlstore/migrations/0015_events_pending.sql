-- 0015_events_pending: events waiting for their number (Postgres).
--
-- On Postgres a transaction does not number its own events: every writer
-- would update the one counter row, and SERIALIZABLE transactions that do
-- so fail each other. It writes them here instead, keyed by its
-- transaction ID and their order in it. After it commits they are moved
-- into events by one numberer at a time (sqlstore.NumberEvents), numbered
-- after the newest in (txid, n) order. Numbers stay gapless and are given
-- only to committed events, all of one run becoming visible together, so a
-- reader that follows events by number never misses one. SQLite numbers
-- events in the transaction (it has one writer) and leaves this table empty.
CREATE TABLE events_pending (
    txid        BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    type        TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    machine_id  TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    message     TEXT NOT NULL,
    PRIMARY KEY (txid, n)
);
