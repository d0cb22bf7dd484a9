-- Secrets kept secret (issue 16).
--
-- An idempotent request whose response carried a secret (a token) keeps only that it succeeded: the
-- response body is never stored, and a retry with the same key is told so (`withheld` = 1).
ALTER TABLE idempotency_keys ADD COLUMN withheld BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);

-- Refresh tokens that were exchanged (their digests): presenting one again means a copy of it is
-- in someone else's hands, and the whole session is revoked.
CREATE TABLE IF NOT EXISTS refresh_rotations (
    digest     TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    rotated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_rotations_session ON refresh_rotations (session_id);
