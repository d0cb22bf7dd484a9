-- The event store, in the shape postgres-es 0.5 expects (copied from its db/init.sql, without its test row,
-- test view and test user), plus the columns of Edict's global log.
--
-- postgres-es always INSERTs an explicit list of its seven columns, so the extra columns below are filled by
-- their defaults and stay invisible to it. Do not add UNIQUE constraints that a normal append could violate:
-- postgres-es reports every unique violation (23505) as an optimistic-concurrency conflict.
--
-- global_position: unique and increasing in INSERT order, NOT in commit order (an identity value is taken
--   when the row is inserted; the row becomes visible when its transaction commits, possibly after rows
--   with higher positions). Readers therefore order by (transaction_id, global_position) and only read
--   below the oldest transaction still in flight; see src/store/global_log.rs.
-- transaction_id: the appending transaction (xid8, never wraps around).
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    transaction_id  xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- The global log's read order.
CREATE INDEX events_transaction_id_global_position ON events (transaction_id, global_position);

-- Only used by cqrs-es' snapshot and aggregate stores, which Edict does not use (they apply events twice in
-- cqrs-es 0.5.0). Kept so that every query postgres-es can issue finds its table.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
