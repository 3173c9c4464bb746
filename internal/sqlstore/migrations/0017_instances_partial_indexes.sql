-- 0017_instances_partial_indexes: index only the instances that the
-- queries on these columns look for. Every write of an instance row
-- that cannot stay on its page (its insert, and most updates: the
-- agent's acknowledgement, each minute billed) adds an entry to each
-- index; a live instance (ended_at NULL) was in instances_ended, and
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
