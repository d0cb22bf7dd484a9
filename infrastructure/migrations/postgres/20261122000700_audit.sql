-- Tamper evidence (docs/adr/0006-hash-chain-and-signed-checkpoints.md): the hash chain over the global log
-- and its signed checkpoints, written by the `audit` role, checked by `edict audit verify`.
--
-- audit_chain: one row per event, in commit order; chain_index 1, 2, … without holes. hash is
--   SHA-256(previous hash || canonical bytes of the event), lowercase hex. transaction_id is the event's
--   xid8 (as bigint) when it was chained: it is not hashed (it does not survive a dump and restore), but a
--   moved event is still noticed.
CREATE TABLE IF NOT EXISTS audit_chain (
    chain_index     BIGINT PRIMARY KEY,
    global_position BIGINT NOT NULL UNIQUE,
    transaction_id  BIGINT NOT NULL,
    hash            TEXT   NOT NULL
);

-- audit_checkpoints: an ed25519 signature over (number, chain_index, global_position, hash, signed_at);
-- signed_at in the canonical form (YYYY-MM-DDTHH:MM:SS.ffffffZ), public_key and signature in hex.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    number          BIGINT PRIMARY KEY,
    chain_index     BIGINT NOT NULL UNIQUE,
    global_position BIGINT NOT NULL,
    hash            TEXT   NOT NULL,
    signed_at       TEXT   NOT NULL,
    public_key      TEXT   NOT NULL,
    signature       TEXT   NOT NULL
);
