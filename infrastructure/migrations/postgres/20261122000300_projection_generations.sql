-- Projection runner bookkeeping beside 20261122000200_read_models.sql.
--
-- last_generation: the highest generation number a rebuild has claimed. A rebuild fills generation
--   last_generation + 1 (never the active one, never one another rebuild is filling) and swaps it in with a
--   compare-and-set on the generation it started from.
-- error_position: the global position of the event the projection could not apply (with `error`).
-- updated_at (existing column) is in milliseconds since the epoch.
ALTER TABLE projection_state ADD COLUMN last_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projection_state ADD COLUMN error_position BIGINT;

-- Lists filtered by status page by sort key too.
CREATE INDEX IF NOT EXISTS read_docs_status ON read_docs (projection, generation, kind, status, sort_key);
