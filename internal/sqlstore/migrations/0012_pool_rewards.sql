-- 0013_pool_rewards: DePIN rewards. A pool may be open (hosts put their
-- own machines in it) and may pay its hosts a project asset per GPU-hour
-- rented on its machines, from a funding account. pool_rewards records
-- each rewarded minute of an instance; its primary key is what makes a
-- minute rewarded at most once. Same SQL for SQLite and Postgres; money in
-- micro-tokens, times in Unix microseconds.

ALTER TABLE pools ADD COLUMN open_to_hosts BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pools ADD COLUMN reward_asset TEXT NOT NULL DEFAULT ''; -- '' when the pool pays no reward
ALTER TABLE pools ADD COLUMN reward_per_gpu_hour BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN reward_from TEXT NOT NULL DEFAULT ''; -- the funding account
ALTER TABLE pools ADD COLUMN rewards_paid BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN rewards_stopped TEXT NOT NULL DEFAULT ''; -- why rewards stopped; '' while paying

CREATE TABLE pool_rewards (
    instance_id  TEXT NOT NULL,
    minute       BIGINT NOT NULL,
    transfer_seq BIGINT NOT NULL REFERENCES transfers (seq),
    pool         TEXT NOT NULL,
    host_id      TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (instance_id, minute)
);
CREATE INDEX pool_rewards_transfer ON pool_rewards (transfer_seq);
