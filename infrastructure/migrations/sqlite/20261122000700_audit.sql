-- Tamper evidence (docs/adr/0006-hash-chain-and-signed-checkpoints.md): the hash chain over the global log
-- and its signed checkpoints, written by the `audit` role, checked by `edict audit verify`.
--
-- audit_chain: one row per event, in commit order; chain_index 1, 2, … without holes. hash is
--   SHA-256(previous hash || canonical bytes of the event), lowercase hex. transaction_id is always 0 on
--   SQLite (rowid order is commit order).
CREATE TABLE IF NOT EXISTS audit_chain (
    chain_index     INTEGER PRIMARY KEY,
    global_position INTEGER NOT NULL UNIQUE,
    transaction_id  INTEGER NOT NULL,
    hash            TEXT   NOT NULL
) STRICT;

-- audit_checkpoints: an ed25519 signature over (number, chain_index, global_position, hash, signed_at);
-- signed_at in the canonical form (YYYY-MM-DDTHH:MM:SS.ffffffZ), public_key and signature in hex.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    number          INTEGER PRIMARY KEY,
    chain_index     INTEGER NOT NULL UNIQUE,
    global_position INTEGER NOT NULL,
    hash            TEXT   NOT NULL,
    signed_at       TEXT   NOT NULL,
    public_key      TEXT   NOT NULL,
    signature       TEXT   NOT NULL
) STRICT;
