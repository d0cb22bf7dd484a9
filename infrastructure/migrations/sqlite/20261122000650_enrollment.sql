-- Ways a machine gets its agent token: enrollment tokens an org_admin hands to unattended installs, and
-- device authorizations a signed-in user approves (credentials, so beside the log, not in it).
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    id           TEXT PRIMARY KEY,
    token_digest TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    note         TEXT NOT NULL,
    uses_total   BIGINT NOT NULL,
    uses_left    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);

CREATE TABLE IF NOT EXISTS device_authorizations (
    device_digest TEXT PRIMARY KEY,
    user_code     TEXT NOT NULL UNIQUE,
    machine_id    TEXT NOT NULL,
    machine_name  TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    last_poll_at  BIGINT NOT NULL,
    decided_by    TEXT,
    agent_id      TEXT,
    user_id       TEXT
);
