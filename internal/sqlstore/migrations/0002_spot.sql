-- 0002_spot: the spot market. Bids, the hosts' spot terms, stored auction
-- rounds and the spot columns of instances. Same SQL for SQLite and
-- Postgres as 0001; JSON kept as TEXT.

ALTER TABLE machines ADD COLUMN spot_reserve_per_gpu_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN energy_per_kwh BIGINT NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN spot_max_power_w BIGINT NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN spot_clock_ranges TEXT NOT NULL DEFAULT '{}'; -- JSON: the four ClockRanges

ALTER TABLE instances ADD COLUMN bid_id TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN price_per_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN power_limit_w BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN clocks TEXT NOT NULL DEFAULT '{}'; -- JSON market.Clocks
ALTER TABLE instances ADD COLUMN notice_seconds BIGINT NOT NULL DEFAULT 0;

CREATE TABLE bids (
    id                TEXT PRIMARY KEY,
    seq               BIGINT NOT NULL UNIQUE, -- book order, from the "bid" counter
    bidder_id         TEXT NOT NULL REFERENCES accounts (id),
    machine_id        TEXT NOT NULL REFERENCES machines (id),
    gpus              BIGINT NOT NULL,
    price_per_gpu_day BIGINT NOT NULL,
    power_limit_w     BIGINT NOT NULL,
    clocks            TEXT NOT NULL, -- JSON market.Clocks
    image             TEXT NOT NULL,
    command           TEXT NOT NULL, -- JSON array
    env               TEXT NOT NULL, -- JSON object
    webhook           TEXT NOT NULL,
    notice_seconds    BIGINT NOT NULL,
    state             TEXT NOT NULL,
    in_book           BOOLEAN NOT NULL, -- state is in the book; derived on write
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT, -- NULL: never
    instance_id       TEXT NOT NULL -- '' when none
);
CREATE INDEX bids_machine ON bids (machine_id, in_book, seq);
CREATE INDEX bids_bidder ON bids (bidder_id, in_book, seq);

-- One row per machine per clearing round: the auction's input and decision
-- as JSON, enough for `auction replay` to recompute it.
CREATE TABLE auction_rounds (
    id         TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL UNIQUE, -- from the "round" counter
    machine_id TEXT NOT NULL REFERENCES machines (id),
    at         BIGINT NOT NULL,
    input      TEXT NOT NULL,
    decision   TEXT NOT NULL
);
CREATE INDEX auction_rounds_machine ON auction_rounds (machine_id, seq);
