-- 0017_query_indexes: indexes that match the queries made of them (each
-- query's plan checked on both databases, SQLite without statistics).
--
-- Index only the instances that the queries on these columns look for.
-- Every write of an instance row that cannot stay on its page (its
-- insert, and most updates: the agent's acknowledgement, each minute
-- billed) adds an entry to each index; a live instance (ended_at NULL) was in instances_ended, and
-- every instance rented directly (deployment_id '') in
-- instances_deployment, for no query (sqlstore.Replicas asks for
-- "ended_at > ?" and for "deployment_id <> ''"). instances_deployment
-- also gains the listing's order (created_at, id): without it SQLite
-- read a deployment's replicas through instances_active, every active
-- instance in the market. Same SQL for SQLite and Postgres.
DROP INDEX instances_ended;
CREATE INDEX instances_ended ON instances (ended_at) WHERE ended_at IS NOT NULL;
DROP INDEX instances_deployment;
CREATE INDEX instances_deployment ON instances (deployment_id, active, created_at, id) WHERE deployment_id <> '';
-- A renter's active instances (read by every create of a renter with a
-- spending cap) and a machine's: SQLite, without statistics, read them
-- through instances_active, every active instance in the market, when the
-- renter's index lacked the active column. instances_renter gains it;
-- instances_machine goes, instances_machine_active (0014) serving every
-- query by machine (a query without the active column sorts the rows it
-- returns).
DROP INDEX instances_renter;
CREATE INDEX instances_renter ON instances (renter_id, active, created_at, id);
DROP INDEX instances_machine;
-- The open bids (in_book), read by every spot round, were found by
-- scanning every bid ever placed; and a machine's pending check (read
-- when its agent is answered) among every pending check in the market.
CREATE INDEX bids_book ON bids (seq) WHERE in_book = TRUE;
CREATE INDEX checks_machine_state ON checks (machine_id, state, created_at, id);
