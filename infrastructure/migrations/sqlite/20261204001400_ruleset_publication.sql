-- At-least-once publication of team rule sets (ADR 0014): per rule set document of a projection, the
-- latest revision the read model committed and the latest one confirmed published (to NATS KV or the
-- in-process watch). The batch that commits a rule set document raises `revision` in the same
-- transaction; a publish that succeeded raises `published`. A row with published < revision is owed to
-- the gateways: the projection runner's publication loop retries it until it succeeds.
CREATE TABLE IF NOT EXISTS ruleset_publication (
    projection TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    team       TEXT   NOT NULL,
    revision   BIGINT NOT NULL,
    published  BIGINT NOT NULL,
    -- Milliseconds since the epoch of the last change.
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (projection, key)
);
CREATE INDEX IF NOT EXISTS ruleset_publication_owed ON ruleset_publication (projection, key)
    WHERE published < revision;
