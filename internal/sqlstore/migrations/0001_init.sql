-- 0001_init: accounts, machines, instances, ledger, logs and events.
--
-- Written in the SQL that both SQLite and Postgres accept: TEXT ids made by
-- the application, BIGINT numbers (money in micro-tokens, times in unix
-- microseconds, UTC), BOOLEAN, BYTEA blobs, JSON kept as TEXT.
-- A shipped migration is never edited; add a new numbered file instead.

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    email_lower   TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL, -- JSON array
    created_at    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL REFERENCES accounts (id),
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_owner ON api_keys (owner_id, created_at);

CREATE TABLE machines (
    id                 TEXT PRIMARY KEY,
    owner_id           TEXT NOT NULL REFERENCES accounts (id),
    fingerprint        TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    gpus               TEXT NOT NULL, -- JSON array of market.GPU
    cpu_cores          BIGINT NOT NULL,
    ram_mib            BIGINT NOT NULL,
    disk_gib           BIGINT NOT NULL,
    driver_version     TEXT NOT NULL,
    cuda_version       TEXT NOT NULL,
    runner             TEXT NOT NULL,
    region             TEXT NOT NULL,
    datacenter         TEXT NOT NULL,
    listed             BOOLEAN NOT NULL,
    online             BOOLEAN NOT NULL,
    status             TEXT NOT NULL,
    price_per_gpu_hour BIGINT NOT NULL,
    last_seen_at       BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    UNIQUE (owner_id, fingerprint)
);

CREATE TABLE instances (
    id             TEXT PRIMARY KEY,
    renter_id      TEXT NOT NULL REFERENCES accounts (id),
    machine_id     TEXT NOT NULL REFERENCES machines (id),
    kind           TEXT NOT NULL,
    gpus           TEXT NOT NULL, -- JSON array of GPU indices
    image          TEXT NOT NULL,
    command        TEXT NOT NULL, -- JSON array
    env            TEXT NOT NULL, -- JSON object
    state          TEXT NOT NULL,
    active         BOOLEAN NOT NULL, -- state holds GPUs; derived on write
    generation     BIGINT NOT NULL,
    price_per_hour BIGINT NOT NULL,
    escrow         BIGINT NOT NULL,
    reason         TEXT NOT NULL,
    exit_code      BIGINT,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    stop_at        BIGINT,
    ended_at       BIGINT,
    billed_minutes BIGINT NOT NULL,
    charged        BIGINT NOT NULL,
    settled        BOOLEAN NOT NULL,
    grace_seconds  BIGINT NOT NULL,
    notice_at      BIGINT,
    last_report_at BIGINT,
    log_seq        BIGINT NOT NULL DEFAULT 0 -- last log chunk number
);
CREATE INDEX instances_renter ON instances (renter_id, created_at);
CREATE INDEX instances_machine ON instances (machine_id, created_at);
CREATE INDEX instances_active ON instances (active, created_at);
CREATE INDEX instances_created ON instances (created_at, id);

-- One row per GPU held by an active instance. The primary key is what makes
-- two active instances never share a GPU, whatever the isolation level.
CREATE TABLE gpu_allocations (
    machine_id  TEXT NOT NULL REFERENCES machines (id),
    gpu_index   BIGINT NOT NULL,
    instance_id TEXT NOT NULL REFERENCES instances (id),
    PRIMARY KEY (machine_id, gpu_index)
);
CREATE INDEX gpu_allocations_instance ON gpu_allocations (instance_id);

-- Named gapless counters (transfer and event sequence numbers). Incrementing
-- a row serialises its writers on Postgres and rolls back with the
-- transaction, so a failed transfer leaves no gap.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE transfers (
    seq         BIGINT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    idem_key    TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    asset       TEXT NOT NULL,
    instance_id TEXT NOT NULL, -- '' when none
    minute      BIGINT NOT NULL,
    memo        TEXT NOT NULL,
    at          BIGINT NOT NULL
);
-- A charge is unique per (instance, minute).
CREATE UNIQUE INDEX transfers_charge ON transfers (instance_id, minute) WHERE kind = 'charge';

CREATE TABLE transfer_entries (
    transfer_seq BIGINT NOT NULL REFERENCES transfers (seq),
    idx          BIGINT NOT NULL,
    account      TEXT NOT NULL,
    owner_id     TEXT NOT NULL, -- LedgerAccount.Owner(), '' for platform accounts
    amount       BIGINT NOT NULL,
    PRIMARY KEY (transfer_seq, idx)
);
CREATE INDEX transfer_entries_owner ON transfer_entries (owner_id, transfer_seq);

CREATE TABLE balances (
    account TEXT NOT NULL,
    asset   TEXT NOT NULL,
    amount  BIGINT NOT NULL,
    PRIMARY KEY (account, asset),
    CHECK (amount >= 0 OR account = 'world')
);

CREATE TABLE log_chunks (
    instance_id TEXT NOT NULL REFERENCES instances (id),
    seq         BIGINT NOT NULL,
    stream      TEXT NOT NULL,
    data        BYTEA NOT NULL, -- raw output: Postgres TEXT refuses NUL bytes and invalid UTF-8
    at          BIGINT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE events (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    type        TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    machine_id  TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX events_account ON events (account_id, seq);
CREATE INDEX events_machine ON events (machine_id, seq);
CREATE INDEX events_instance ON events (instance_id, seq);
