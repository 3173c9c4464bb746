-- 0005_verify: machine verification. Same SQL for SQLite and Postgres as
-- 0001.

-- A machine held off the market until a check passes, and why an
-- operator should review it ('' when not flagged).
ALTER TABLE machines ADD COLUMN unverified BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE machines ADD COLUMN review TEXT NOT NULL DEFAULT '';

-- Which machine each GPU UUID belongs to: a UUID belongs to one machine.
CREATE TABLE gpu_claims (
    uuid       TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines (id)
);
CREATE INDEX gpu_claims_machine ON gpu_claims (machine_id);

-- Verification checks. The columns are what the loops select on; body is
-- the JSON of the whole market.Check (with its secret), its evidence.
CREATE TABLE checks (
    id         TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines (id),
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX checks_machine ON checks (machine_id, created_at);
CREATE INDEX checks_state ON checks (state, created_at);
