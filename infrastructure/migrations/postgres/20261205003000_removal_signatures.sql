-- Signed removals (ADR 0024): per agent and team its user left, the `removed` message the agent is
-- sent, signed by the organization's active key in a process that holds it. Gateways read an agent's
-- rows and pass them on as they are; they hold no key. `position` is the global log position of the
-- `MemberRemoved` event: a row is only replaced by a later removal, or by the same one signed with
-- another key (a key rotation); a later `MemberAdded` of the user to the team deletes it.
CREATE TABLE IF NOT EXISTS removal_signatures (
    agent    TEXT   NOT NULL,
    team     TEXT   NOT NULL,
    user_id  TEXT   NOT NULL,
    position BIGINT NOT NULL,
    key_id   TEXT   NOT NULL,
    document TEXT   NOT NULL,
    PRIMARY KEY (agent, team)
);
CREATE INDEX IF NOT EXISTS removal_signatures_member ON removal_signatures (user_id, team);
