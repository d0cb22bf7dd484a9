-- Every `applied` acknowledgement that changed what an agent enforces for a team, append-only, so that
-- `GET /api/v1/agents/{id}/enforced?as_of=…` can answer which revision a machine had applied at a past
-- time (agent_convergence keeps only the latest). Written by the gateway beside agent_convergence.
CREATE TABLE IF NOT EXISTS agent_convergence_history (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id      TEXT   NOT NULL,
    team_id       TEXT   NOT NULL,
    revision      BIGINT NOT NULL,
    hash          TEXT   NOT NULL,
    -- Milliseconds since the epoch.
    applied_at_ms BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS agent_convergence_history_agent
    ON agent_convergence_history (agent_id, team_id, applied_at_ms);

-- What agents enforced before this table existed is their first entry.
INSERT INTO agent_convergence_history (agent_id, team_id, revision, hash, applied_at_ms)
SELECT agent_id, team_id, revision, hash, applied_at * 1000 FROM agent_convergence ORDER BY applied_at;
