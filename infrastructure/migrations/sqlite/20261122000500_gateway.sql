-- Convergence: which rule set revision each agent enforces per team, and since when. Written by the
-- gateway when an agent reports `applied` (an upsert, not an event: it is operational state, rebuilt
-- by the agents themselves on their next `applied`).
CREATE TABLE IF NOT EXISTS agent_convergence (
    agent_id   TEXT   NOT NULL,
    team_id    TEXT   NOT NULL,
    revision   BIGINT NOT NULL,
    hash       TEXT   NOT NULL,
    -- Seconds since the epoch.
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, team_id)
);

CREATE INDEX IF NOT EXISTS agent_convergence_team ON agent_convergence (team_id, revision);
