-- The same index as on PostgreSQL: the team's view reads by team ordered by agent, and the upsert of
-- every `applied` (a new revision and hash) no longer rewrites an index entry over the revision.
-- See docs/adr/0012-convergence-rows-updated-in-place.md.
DROP INDEX IF EXISTS agent_convergence_team;
CREATE INDEX IF NOT EXISTS agent_convergence_team_agent ON agent_convergence (team_id, agent_id);
