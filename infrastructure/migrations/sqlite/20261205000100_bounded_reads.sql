-- Bounded reads (issue 16): the filters of the event log and of the lists run in SQL on indexes, never
-- over pages in memory.
--
-- The log is read in rowid order; every index of a rowid table ends with the rowid, so a page filtered
-- on one value is read in order from its index. The expressions are the ones `store/global_log.rs` and
-- `projection/read_models.rs` query, written identically (SQLite matches them as written).
CREATE INDEX IF NOT EXISTS events_event_type ON events (event_type);
CREATE INDEX IF NOT EXISTS events_aggregate_type ON events (aggregate_type);
CREATE INDEX IF NOT EXISTS events_aggregate_id ON events (aggregate_id);
CREATE INDEX IF NOT EXISTS events_actor ON events (json_extract(metadata, '$.actor'));
CREATE INDEX IF NOT EXISTS events_recorded_at ON events (recorded_at);

CREATE INDEX IF NOT EXISTS read_docs_status ON read_docs (projection, generation, kind, status, sort_key);
CREATE INDEX IF NOT EXISTS read_docs_owner ON read_docs (projection, generation, kind, json_extract(doc, '$.user'), sort_key);
