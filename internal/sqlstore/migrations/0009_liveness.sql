-- Heartbeat claims: a coordinator that holds fresh heartbeats of a machine
-- in memory claims it (beat_node) and vouches for all its claims with one
-- row per flush (node_beats), instead of writing every heartbeat.
ALTER TABLE machines ADD COLUMN beat_node TEXT NOT NULL DEFAULT '';
CREATE TABLE node_beats (
    node TEXT PRIMARY KEY,
    at   BIGINT NOT NULL
);
