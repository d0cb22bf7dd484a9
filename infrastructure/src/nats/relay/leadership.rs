//! One active relay per deployment: a PostgreSQL session advisory lock held on a dedicated connection.
//!
//! The lock belongs to the *session*, not to a transaction: an open writing transaction would hold back
//! the global log's read horizon (see `store::global_log`), and the relay reads that very log. The lock
//! lives exactly as long as its connection, so a leader killed with `kill -9`, or cut off from the
//! database, loses it as soon as PostgreSQL notices the closed socket, and a standby (retrying every
//! second) takes over. A leader checks its lock connection every half second and stops publishing the
//! moment the connection fails.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::nats::NatsPrefix;

/// How long one check of the lock connection may take before the lock counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The advisory lock key of a deployment's relay: the first 8 bytes of SHA-256 over a fixed label and
/// the prefix, so deployments sharing a database (different prefixes) elect their relays independently.
pub(crate) fn lock_key(prefix: &NatsPrefix) -> i64 {
    let digest = Sha256::digest(format!("edict relay\0{}", prefix.as_str()).as_bytes());
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// A relay that is not leading: it keeps one connection and tries the lock on it.
pub(crate) struct Candidate {
    options: PgConnectOptions,
    key: i64,
    connection: Option<PgConnection>,
}

impl Candidate {
    pub(crate) fn new(options: PgConnectOptions, key: i64) -> Candidate {
        Candidate {
            options: options.application_name("edict relay lock"),
            key,
            connection: None,
        }
    }

    /// Tries the lock every `retry` until it is granted.
    pub(crate) async fn acquire(&mut self, retry: Duration) -> Leadership {
        let mut announced = false;
        loop {
            match self.try_acquire().await {
                Ok(Some(leadership)) => return leadership,
                Ok(None) if !announced => {
                    tracing::info!(key = self.key, "another relay leads; standing by");
                    announced = true;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot try the relay lock; retrying");
                    self.connection = None;
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    async fn try_acquire(&mut self) -> Result<Option<Leadership>, sqlx::Error> {
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => PgConnection::connect_with(&self.options).await?,
        };
        // A plain statement in autocommit: no transaction stays open, no xid is taken.
        let granted: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut connection)
            .await?;
        if granted {
            Ok(Some(Leadership {
                connection,
                key: self.key,
            }))
        } else {
            self.connection = Some(connection);
            Ok(None)
        }
    }
}

/// The lock, held on its own connection.
pub(crate) struct Leadership {
    connection: PgConnection,
    key: i64,
}

impl Leadership {
    /// Resolves when the lock connection fails or stops answering: the lock is then gone (or about to
    /// be), and the caller must stop publishing.
    pub(crate) async fn lost(&mut self, interval: Duration) -> String {
        loop {
            tokio::time::sleep(interval).await;
            let check = sqlx::query("SELECT 1").execute(&mut self.connection);
            match tokio::time::timeout(CHECK_TIMEOUT, check).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return error.to_string(),
                Err(_elapsed) => return format!("no answer within {CHECK_TIMEOUT:?}"),
            }
        }
    }

    /// Gives the lock back and closes its connection (a standby can take over at its next try).
    pub(crate) async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.connection)
            .await;
        if let Err(error) = unlocked {
            tracing::debug!(%error, "cannot unlock the relay lock; closing its connection");
        }
        // Best effort: closing the session releases the lock anyway.
        let _ = self.connection.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_prefix_has_its_own_stable_lock_key() {
        let a = NatsPrefix::parse("a_").unwrap_or_default();
        let b = NatsPrefix::parse("b_").unwrap_or_default();
        assert_eq!(lock_key(&a), lock_key(&a));
        assert_ne!(lock_key(&a), lock_key(&b));
        assert_ne!(lock_key(&a), lock_key(&NatsPrefix::default()));
    }
}
