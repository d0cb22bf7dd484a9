-- Bounded reads (issue 16): the filters of the event log and of the lists run in SQL on indexes, never
-- over pages in memory.
--
-- The event log is read in (transaction_id, global_position) order; each filter's index ends with that
-- order, so a page filtered on one value is read in order from its index and stops at its LIMIT. The
-- expression on metadata is the one `store/global_log.rs` queries (`metadata ->> 'actor'`).
CREATE INDEX IF NOT EXISTS events_event_type ON events (event_type, transaction_id, global_position);
CREATE INDEX IF NOT EXISTS events_aggregate_type ON events (aggregate_type, transaction_id, global_position);
CREATE INDEX IF NOT EXISTS events_aggregate_id ON events (aggregate_id, transaction_id, global_position);
CREATE INDEX IF NOT EXISTS events_actor ON events ((metadata ->> 'actor'), transaction_id, global_position);
CREATE INDEX IF NOT EXISTS events_recorded_at ON events (recorded_at);

-- Lists: by status (users, agents, change requests) and by owner (an agent's or a change request's
-- `user`, the expression `projection/read_models.rs` queries), in sort-key order.
CREATE INDEX IF NOT EXISTS read_docs_status ON read_docs (projection, generation, kind, status, sort_key);
CREATE INDEX IF NOT EXISTS read_docs_owner ON read_docs (projection, generation, kind, ((doc::jsonb ->> 'user')), sort_key);
