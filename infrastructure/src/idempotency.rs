//! Remembered responses for `Idempotency-Key`: a POST retried with the same key and body gets the first
//! response again instead of running twice.
//!
//! A key is claimed before the request runs (a row with status 0), so two concurrent retries cannot both
//! run. Only successful responses are kept; a failed request changed nothing, so its key is released and a
//! retry runs again. A response that carried a secret (a token) is never stored: the row keeps only its
//! status with `withheld` set, and a retry learns that the request succeeded but its answer is gone.
//! Keys expire after a day; [`IdempotencyStore::purge_expired_at`] deletes the expired rows (`edict
//! serve` runs it periodically).

use crate::store::Database;
use async_trait::async_trait;
use edict_application::auth::{IdempotencyClaim as Claim, IdempotencyKeys};

/// How long a remembered response is replayed, in seconds.
pub const KEY_LIFETIME_SECS: i64 = 24 * 3600;

/// How long a claim may stay in progress before another request may take it over (the first one died).
const STALE_CLAIM_SECS: i64 = 120;

/// The `idempotency_keys` table.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    db: Database,
}

impl IdempotencyStore {
    /// A store over `db` (migrated).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Claims `key` for `principal` and a request whose content hashes to `request_hash`.
    ///
    /// # Errors
    /// The database's error.
    pub async fn claim_at(
        &self,
        principal: &str,
        key: &str,
        request_hash: &str,
        now: i64,
    ) -> Result<Claim, sqlx::Error> {
        // An expired response, or a claim whose request died, no longer holds the key.
        on_pool!(&self.db, |pool| sqlx::query(
            "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 \
             AND (created_at < $3 OR (status = 0 AND created_at < $4))"
        )
        .bind(principal)
        .bind(key)
        .bind(now - KEY_LIFETIME_SECS)
        .bind(now - STALE_CLAIM_SECS)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        let inserted = on_pool!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO idempotency_keys (principal, key, request_hash, status, body, created_at) \
             VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (principal, key) DO NOTHING"
        )
        .bind(principal)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        if inserted == 1 {
            return Ok(Claim::Fresh);
        }
        let row: Option<(String, i64, String, i64)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT request_hash, status, body, withheld FROM idempotency_keys \
             WHERE principal = $1 AND key = $2",
            )
            .bind(principal)
            .bind(key)
            .fetch_optional(pool)
            .await
        })?;
        Ok(match row {
            // Released between our insert and our read: treat as in progress, the client retries.
            None => Claim::InProgress,
            Some((hash, _, _, _)) if hash != request_hash => Claim::Mismatch,
            Some((_, 0, _, _)) => Claim::InProgress,
            Some((_, status, _, withheld)) if withheld != 0 => Claim::Withheld {
                status: u16::try_from(status).unwrap_or(200),
            },
            Some((_, status, body, _)) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(200),
                body,
            },
        })
    }

    /// Records that the request of a claimed key succeeded with `status` and a response that carried
    /// a secret: the body is not stored.
    ///
    /// # Errors
    /// The database's error.
    pub async fn remember_withheld(
        &self,
        principal: &str,
        key: &str,
        status: u16,
    ) -> Result<(), sqlx::Error> {
        on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = '', withheld = 1 \
             WHERE principal = $1 AND key = $2"
        )
        .bind(principal)
        .bind(key)
        .bind(i64::from(status))
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Deletes the keys expired at `now` (seconds since the epoch): responses older than
    /// [`KEY_LIFETIME_SECS`] and claims whose request died; answers how many.
    ///
    /// # Errors
    /// The database's error.
    pub async fn purge_expired_at(&self, now: i64) -> Result<u64, sqlx::Error> {
        on_pool!(&self.db, |pool| sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < $1 OR (status = 0 AND created_at < $2)"
        )
        .bind(now - KEY_LIFETIME_SECS)
        .bind(now - STALE_CLAIM_SECS)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
    }

    /// Remembers the response to a claimed key.
    ///
    /// # Errors
    /// The database's error.
    pub async fn remember(
        &self,
        principal: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), sqlx::Error> {
        on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = $4 WHERE principal = $1 AND key = $2"
        )
        .bind(principal)
        .bind(key)
        .bind(i64::from(status))
        .bind(body)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Releases a claimed key whose request failed, so a retry runs again.
    ///
    /// # Errors
    /// The database's error.
    pub async fn forget(&self, principal: &str, key: &str) -> Result<(), sqlx::Error> {
        on_pool!(&self.db, |pool| sqlx::query(
            "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status = 0"
        )
        .bind(principal)
        .bind(key)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[async_trait]
impl IdempotencyKeys for IdempotencyStore {
    async fn claim(&self, principal: &str, key: &str, request_hash: &str) -> Result<Claim, String> {
        self.claim_at(principal, key, request_hash, now())
            .await
            .map_err(|e| e.to_string())
    }

    async fn complete(
        &self,
        principal: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), String> {
        self.remember(principal, key, status, body)
            .await
            .map_err(|e| e.to_string())
    }

    async fn complete_withheld(
        &self,
        principal: &str,
        key: &str,
        status: u16,
    ) -> Result<(), String> {
        self.remember_withheld(principal, key, status)
            .await
            .map_err(|e| e.to_string())
    }

    async fn release(&self, principal: &str, key: &str) -> Result<(), String> {
        self.forget(principal, key).await.map_err(|e| e.to_string())
    }

    async fn purge_expired(&self) -> Result<u64, String> {
        self.purge_expired_at(now())
            .await
            .map_err(|e| e.to_string())
    }
}
