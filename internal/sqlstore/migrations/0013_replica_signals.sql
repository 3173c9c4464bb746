-- 0014_replica_signals: the latest queue length, health check result and
-- GPU utilisation agents reported of each replica, written by whichever
-- coordinator received the reports (in its heartbeat flush) so that the
-- leader's deployment pass sees them all. Each value keeps the time it was
-- reported at (0 with no value); at is when a coordinator last wrote the
-- row, and rows not written for a while are deleted. Same SQL for SQLite
-- and Postgres; times in Unix microseconds.

CREATE TABLE replica_signals (
    instance_id TEXT PRIMARY KEY,
    queue       BIGINT,
    queue_at    BIGINT NOT NULL DEFAULT 0,
    healthy     BOOLEAN,
    health_at   BIGINT NOT NULL DEFAULT 0,
    util        DOUBLE PRECISION,
    util_at     BIGINT NOT NULL DEFAULT 0,
    at          BIGINT NOT NULL
);
CREATE INDEX replica_signals_at ON replica_signals (at);
