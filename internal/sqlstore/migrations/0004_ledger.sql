-- 0004_ledger: idempotency records of money calls, the withdrawal queue,
-- stake removals in cooldown and the published dividend statements. Same
-- SQL for SQLite and Postgres as 0001.

-- Sums of one account's entries over a time range (pending earnings, fees
-- of a period) and transfers by kind (stake history).
CREATE INDEX transfer_entries_account ON transfer_entries (account, transfer_seq);
CREATE INDEX transfers_kind_at ON transfers (kind, at);

-- One row per (caller, Idempotency-Key) of a money-moving call, written in
-- the same transaction as its transfers (or, for a refused call, alone):
-- a retry returns the stored answer, a different request is refused.
CREATE TABLE idempotency_keys (
    account_id    TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    op            TEXT NOT NULL,
    request_hash  TEXT NOT NULL, -- hex SHA-256 of op and the request body
    error_kind    TEXT NOT NULL, -- '' when the call succeeded
    error_message TEXT NOT NULL,
    response      TEXT NOT NULL, -- JSON of the result
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, idem_key)
);

CREATE TABLE withdrawals (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    asset      TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT NOT NULL
);
CREATE INDEX withdrawals_state ON withdrawals (state, created_at);
CREATE INDEX withdrawals_account ON withdrawals (account_id, created_at);

CREATE TABLE unstakes (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    amount     BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    release_at BIGINT NOT NULL,
    released   BOOLEAN NOT NULL
);
CREATE INDEX unstakes_due ON unstakes (released, release_at);
CREATE INDEX unstakes_account ON unstakes (account_id, at);

-- One row per distribution period; the statement is market.DividendStatement
-- as JSON. The primary key makes a period distributed once.
CREATE TABLE dividend_statements (
    period    BIGINT PRIMARY KEY,
    asset     TEXT NOT NULL,
    statement TEXT NOT NULL,
    at        BIGINT NOT NULL
);
