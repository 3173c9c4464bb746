-- Lost-host detection asks every tick for the online machines silent since
-- a deadline. Heartbeats no longer write last_seen_at (0009), so without
-- this index that question read every machine row, hardware and all.
CREATE INDEX machines_liveness ON machines (online, last_seen_at, beat_node);
