-- Signed decisions (ADR 0022): per change request, the decision an agent is sent (keep or revert),
-- signed by the organization's active key in a process that holds it. Gateways read them per team and
-- pass them on as they are; they hold no key. `version` is the change request's version the decision
-- comes from: a row is only replaced by a later version, or by the same one signed with another key
-- (a key rotation).
CREATE TABLE IF NOT EXISTS decision_signatures (
    change_request TEXT   PRIMARY KEY,
    team           TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    key_id         TEXT   NOT NULL,
    document       TEXT   NOT NULL
);
CREATE INDEX IF NOT EXISTS decision_signatures_team ON decision_signatures (team);
