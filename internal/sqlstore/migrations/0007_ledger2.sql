-- 0007_ledger2: batched billing, refunds, spend limits and project assets
-- (issue 7). Same SQL for SQLite and Postgres as 0001.

-- The billing tick pages through unsettled instances by ID; settled ones
-- (most of them, over time) stay out of the index.
CREATE INDEX instances_unsettled ON instances (id) WHERE settled = FALSE;

-- One row per charged minute of an instance, whichever transfer paid it: a
-- charge (one minute, three entries) or a charges batch (many minutes of
-- many instances, one entry per account). The primary key is what makes a
-- minute charged at most once across both.
CREATE TABLE minute_charges (
    instance_id  TEXT NOT NULL,
    minute       BIGINT NOT NULL,
    transfer_seq BIGINT NOT NULL REFERENCES transfers (seq),
    payer        TEXT NOT NULL, -- the renter's available or escrow account
    host_id      TEXT NOT NULL,
    amount       BIGINT NOT NULL, -- the renter paid
    fee          BIGINT NOT NULL, -- of amount, the platform's
    at           BIGINT NOT NULL,
    PRIMARY KEY (instance_id, minute)
);
CREATE INDEX minute_charges_transfer ON minute_charges (transfer_seq);

-- The charges made before this migration, one transfer each.
INSERT INTO minute_charges (instance_id, minute, transfer_seq, payer, host_id, amount, fee, at)
SELECT t.instance_id, t.minute, t.seq,
       (SELECT e.account FROM transfer_entries e WHERE e.transfer_seq = t.seq AND e.amount < 0),
       (SELECT e.owner_id FROM transfer_entries e WHERE e.transfer_seq = t.seq AND e.account LIKE 'host:%'),
       (SELECT -e.amount FROM transfer_entries e WHERE e.transfer_seq = t.seq AND e.amount < 0),
       (SELECT e.amount FROM transfer_entries e WHERE e.transfer_seq = t.seq AND e.account = 'platform:fees'),
       t.at
FROM transfers t WHERE t.kind = 'charge';

-- Transfers by kind (stake history, refunds) without the charges, which
-- are found through minute_charges or their accounts' entries: one index
-- entry less per charge.
DROP INDEX transfers_kind_at;
CREATE INDEX transfers_kind_at ON transfers (kind, at) WHERE kind <> 'charge' AND kind <> 'charges';

-- Refunds of minutes of an instance (host downtime): which minutes, what
-- the renter got back and where it came from. The coordinator refuses a
-- range that overlaps an earlier refund of the instance.
CREATE TABLE refunds (
    id            TEXT PRIMARY KEY,
    instance_id   TEXT NOT NULL REFERENCES instances (id),
    renter_id     TEXT NOT NULL,
    host_id       TEXT NOT NULL,
    from_minute   BIGINT NOT NULL,
    to_minute     BIGINT NOT NULL, -- excluded
    minutes       BIGINT NOT NULL,
    asset         TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    from_host     BIGINT NOT NULL,
    from_platform BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    by_account    TEXT NOT NULL,
    transfer_seq  BIGINT NOT NULL REFERENCES transfers (seq),
    at            BIGINT NOT NULL
);
CREATE INDEX refunds_instance ON refunds (instance_id, from_minute);
CREATE INDEX refunds_renter ON refunds (renter_id, at);

-- Assets besides the platform token (project tokens). Each balances
-- separately; balances and transfers already carry their asset.
CREATE TABLE assets (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Renters' spend limits: a cap on the hourly cost of their instances and
-- bids, and an alert threshold on what they spent in the last hour.
CREATE TABLE spend_limits (
    account_id   TEXT PRIMARY KEY REFERENCES accounts (id),
    max_per_hour BIGINT NOT NULL, -- 0: no cap
    alert_at     BIGINT NOT NULL, -- 0: no alert
    webhook      TEXT NOT NULL,
    alerted_at   BIGINT NOT NULL, -- last alert, 0 when none
    updated_at   BIGINT NOT NULL
);
