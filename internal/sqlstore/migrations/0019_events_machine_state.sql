-- 0019_events_machine_state: the events that say whether a machine is
-- online and listed, apart. A machine's reliability (coord reliability)
-- replays whether it was online and listed over the last 30 days from its
-- events, and read only its newest 5,000: a machine busy with short
-- rentals has that many in a day, so its listing fell out of what was read
-- and its downtime did not count (coverage 1). These events, a handful per
-- machine, are now read through this index, whatever came after them; the
-- index holds only them, so the events of instances (two per create) cost
-- no more to write. The types are those of coord.EventFilter.StatesOnly,
-- written out as queries say them so that both databases use the index.
-- Same SQL for SQLite and Postgres.

CREATE INDEX events_machine_state ON events (machine_id, seq)
    WHERE type IN ('machine.registered', 'machine.online', 'machine.offline', 'machine.listed', 'machine.unlisted');
