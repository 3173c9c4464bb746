-- 0008_runner: container instances. The host port range a machine's agent
-- publishes container ports on, and per instance its template, the
-- container ports to publish, the renter's SSH public keys, its resource
-- limits and the host ports the agent reported. Same SQL for SQLite and
-- Postgres; JSON kept as TEXT.

ALTER TABLE machines ADD COLUMN port_range TEXT NOT NULL DEFAULT ''; -- "40000-40999", '' for none

ALTER TABLE instances ADD COLUMN template TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN ports TEXT NOT NULL DEFAULT '[]';    -- JSON array of "8888/tcp"
ALTER TABLE instances ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '[]'; -- JSON array of public key lines
ALTER TABLE instances ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';   -- JSON market.Limits
ALTER TABLE instances ADD COLUMN port_map TEXT NOT NULL DEFAULT '[]'; -- JSON array of market.PortBinding
