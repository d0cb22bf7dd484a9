-- Convergence updated in place. Every revision of a team's rule set changes revision, hash and
-- applied_at of one row per agent (10,000 rows for a team of 10,000 agents). The index over
-- (team_id, revision) made each of those updates a new row version with a new entry in both indexes.
-- With no index over a column the upsert changes, PostgreSQL keeps the new version in the same page
-- and touches no index (a heap-only tuple), given free space in the page: fill factor 50 leaves it
-- (pages written before this migration get it as they are rewritten). The team's view reads by team
-- ordered by agent, which (team_id, agent_id) serves; neither column ever changes.
-- See docs/adr/0012-convergence-rows-updated-in-place.md.
DROP INDEX IF EXISTS agent_convergence_team;
CREATE INDEX IF NOT EXISTS agent_convergence_team_agent ON agent_convergence (team_id, agent_id);
ALTER TABLE agent_convergence SET (fillfactor = 50);
