-- 0016_machines_beat_node: finds the machines a node claims, so that a
-- coordinator can tell cheaply whether another one holds any claim (and
-- skip re-reading its own claims when none does; coord/live.go).
CREATE INDEX machines_beat_node ON machines (beat_node);
