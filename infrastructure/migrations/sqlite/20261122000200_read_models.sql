-- Read models: every projection stores documents in generations; one generation is active (served), a
-- rebuild fills the next one and swaps it in atomically with the projection's checkpoint.
CREATE TABLE IF NOT EXISTS projection_state (
    name                TEXT PRIMARY KEY,
    generation          BIGINT NOT NULL,
    -- The checkpoint of the last event applied to the active generation (xid8 as bigint; 0 on SQLite).
    transaction_id      BIGINT NOT NULL,
    position            BIGINT NOT NULL,
    events_applied      BIGINT NOT NULL,
    -- Set when an event could not be applied: the projection stops there until rebuilt.
    error               TEXT,
    updated_at          BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS read_docs (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    team       TEXT,
    status     TEXT,
    sort_key   TEXT NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (projection, generation, kind, key)
);
CREATE INDEX IF NOT EXISTS read_docs_list ON read_docs (projection, generation, kind, sort_key);
CREATE INDEX IF NOT EXISTS read_docs_team ON read_docs (projection, generation, kind, team, sort_key);

-- The relay's checkpoint: the last event it published and saw acknowledged.
CREATE TABLE IF NOT EXISTS relay_state (
    name           TEXT PRIMARY KEY,
    transaction_id BIGINT NOT NULL,
    position       BIGINT NOT NULL,
    published      BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
