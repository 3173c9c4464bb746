-- 0006_deploy: deployments (replica sets the coordinator keeps running),
-- their decision history, capacity pools with shares and the machines
-- assigned to them, and the deployment each instance belongs to.
-- Same SQL for SQLite and Postgres; JSON kept as TEXT, times in Unix
-- microseconds.

ALTER TABLE instances ADD COLUMN deployment_id TEXT NOT NULL DEFAULT ''; -- '' for instances rented directly
ALTER TABLE instances ADD COLUMN deployment_revision BIGINT NOT NULL DEFAULT 0;
CREATE INDEX instances_deployment ON instances (deployment_id, active);
CREATE INDEX instances_ended ON instances (ended_at); -- recent failures, for the crash-loop backoff

CREATE TABLE deployments (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES accounts (id),
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL, -- JSON market.DeploymentSpec
    revision      BIGINT NOT NULL,
    desired       BIGINT NOT NULL,
    last_scale_at BIGINT,
    last_scale_up BOOLEAN NOT NULL,
    status        TEXT NOT NULL, -- JSON market.DeploymentStatus
    deleted       BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE deployment_history (
    seq           BIGINT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    at            BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    machine_id    TEXT NOT NULL,
    message       TEXT NOT NULL
);
CREATE INDEX deployment_history_deployment ON deployment_history (deployment_id, seq);

CREATE TABLE pools (
    name        TEXT PRIMARY KEY,
    share_bp    BIGINT NOT NULL CHECK (share_bp >= 0 AND share_bp <= 10000),
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE machine_pools (
    machine_id TEXT PRIMARY KEY REFERENCES machines (id),
    pool       TEXT NOT NULL REFERENCES pools (name)
);
CREATE INDEX machine_pools_pool ON machine_pools (pool);
