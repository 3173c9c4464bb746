-- The active instances of one machine (placing a replica, reindexing a
-- machine, losing a host) were read through instances_active, i.e. every
-- active instance in the market: SQLite's planner, without statistics,
-- prefers (active, created_at) to (machine_id, created_at). With 50,000
-- active replicas that cost milliseconds per create.
CREATE INDEX instances_machine_active ON instances (machine_id, active, created_at, id);
