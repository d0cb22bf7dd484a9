-- The event store, in the shape sqlite-es 0.5 expects (copied from its migration, without its test view and
-- the test row it inserts), plus recorded_at.
--
-- The global position is the implicit rowid. SQLite has a single writer, so rowids are handed out in commit
-- order. Without AUTOINCREMENT a rowid is max(rowid) + 1, which could reuse the number of a deleted last row:
-- events are never deleted, so rowids are never reused (and the table has no holes VACUUM could close).
-- Do not make this table WITHOUT ROWID, and do not add UNIQUE constraints: sqlite-es reports only a
-- primary-key violation as an optimistic-concurrency conflict.
CREATE TABLE events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    -- ISO-8601 UTC with milliseconds, e.g. 2026-11-21T09:30:00.123Z
    recorded_at    text                          NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

-- Only used by cqrs-es' snapshot and aggregate stores, which Edict does not use. Kept so that every query
-- sqlite-es can issue finds its table.
CREATE TABLE snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;
