-- Presence: which gateway each agent is (or was last) connected to, since when, and when that gateway
-- last heard from it. Written by the gateway (operational state, not an event, like
-- agent_convergence): when a connection opens, about once a minute while it lives, and when it ends.
-- Times are seconds since the epoch; disconnected_at is NULL while the connection is open (or its
-- gateway stopped without writing the end: readers also look at how old last_seen_at is).
CREATE TABLE IF NOT EXISTS agent_presence (
    agent_id        TEXT   NOT NULL PRIMARY KEY,
    gateway         TEXT   NOT NULL,
    connected_at    BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    disconnected_at BIGINT
);
