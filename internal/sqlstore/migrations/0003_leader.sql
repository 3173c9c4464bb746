-- 0003_leader: leases for leader election among coordinators sharing one
-- database. One row per lease name; generation grows by one each time the
-- lease changes holder, and every write of the leader's background loops
-- checks it (the fencing token). Times are Unix microseconds, as elsewhere.

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL, -- when holder took it
    expires_at  BIGINT NOT NULL
);
