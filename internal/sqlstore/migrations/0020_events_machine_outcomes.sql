-- 0020_events_machine_outcomes: a machine's instance ends and check
-- verdicts, by time. Reliability (coord reliability) counts them over its
-- window (30 days) and used to find them among the machine's newest 5,000
-- events, so a machine busy with short rentals (thousands of ends a day)
-- had most of its window's outcomes left out of its counts. The store now
-- counts them by type and message (Tx.OutcomeCounts) over this index; it
-- holds these events only, and is ordered by time so that the count reads
-- only the window, however old the machine. The types are those of
-- coord.OutcomeTypes, written out as queries say them so that both
-- databases use the index. Same SQL for SQLite and Postgres.

CREATE INDEX events_machine_outcomes ON events (machine_id, at)
    WHERE type IN ('instance.failed', 'instance.stopped', 'instance.preempted', 'machine.verified', 'machine.verify_failed');
