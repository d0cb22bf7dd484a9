-- Agent tokens get a lifetime, renewal and a listing (ADR 0025).
--   id            a public handle of the token (listed to its owner; never the secret or its digest)
--   expires_at    when it stops working (seconds since the epoch)
--   renewed_from  the digest of the token it was renewed from (NULL for one issued at enrollment)
--   replaced_at   when it was renewed: from then on it works only for the renewal grace
-- Tokens issued before this migration expire 90 days after it runs (not after their creation: a
-- machine upgraded late must not find its token dead); an agent renews a token of unknown expiry at its
-- first chance, so upgraded agents move onto a token with a known lifetime at once. A row written
-- without an expiry by an older process during a rolling upgrade lives the configured lifetime from its
-- creation (the server reads a missing expiry so).
ALTER TABLE agent_tokens ADD COLUMN id TEXT;
ALTER TABLE agent_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE agent_tokens ADD COLUMN renewed_from TEXT;
ALTER TABLE agent_tokens ADD COLUMN replaced_at BIGINT;
UPDATE agent_tokens
   SET id = lower(hex(randomblob(16))),
       expires_at = CAST(strftime('%s', 'now') AS INTEGER) + 7776000
 WHERE id IS NULL;
CREATE INDEX IF NOT EXISTS agent_tokens_user ON agent_tokens (user_id);
CREATE INDEX IF NOT EXISTS agent_tokens_renewed_from ON agent_tokens (renewed_from);
