//! Tamper evidence beside the log: the hash chain (`audit_chain`), its signed checkpoints
//! (`audit_checkpoints`), the key that signs them, the task that writes them and the check that reads
//! them back.
//!
//! - this module: [`AuditStore`], the two tables (the same SQL on PostgreSQL and SQLite), and the
//!   [`AuditTrail`] port the API reads through;
//! - [`key`]: the ed25519 signing key, from `EDICT_AUDIT_SIGNING_KEY` or generated and kept in the
//!   settings table;
//! - [`writer`]: [`ChainWriter`], the `audit` role: tails the log, appends chain rows in commit order,
//!   signs checkpoints (one leader per database on PostgreSQL);
//! - [`verify`]: `edict audit verify` against the database: recomputes every hash from the raw events
//!   table and checks every checkpoint, naming the first broken link.
//!
//! The hashing itself (canonical bytes, chained SHA-256, signed bytes) is pure and lives in
//! `edict_application::audit`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use edict_application::audit::chain::ChainHash;
use edict_application::audit::checkpoint::SignedCheckpoint;
use edict_application::audit::{AuditError, AuditTrail, ChainLink};
use edict_application::event_log::Checkpoint;

use crate::store::Database;

pub mod key;
pub mod verify;
pub mod writer;

pub use key::{KeyOrigin, parse_seed, ruleset_seed, ruleset_signing_key, signing_key};
pub use verify::{Break, VerifyOptions, VerifyProgress, VerifyReport, verify_database};
pub use writer::{ChainWriter, ChainWriterSettings};

/// One row of `audit_chain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainRow {
    /// 1, 2, … in commit order.
    pub chain_index: i64,
    /// The event's global position.
    pub global_position: i64,
    /// The event's transaction id when it was chained (0 on SQLite).
    pub transaction_id: u64,
    /// The chain hash after the event.
    pub hash: ChainHash,
}

impl ChainRow {
    /// Where the log resumes after this row's event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            position: self.global_position,
        }
    }
}

/// The chain and checkpoint tables of one store. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct AuditStore {
    db: Database,
}

type CheckpointTuple = (i64, i64, i64, String, String, String, String);

const CHECKPOINT_COLUMNS: &str =
    "number, chain_index, global_position, hash, signed_at, public_key, signature";

fn unavailable(error: sqlx::Error) -> AuditError {
    AuditError::Unavailable(error.to_string())
}

/// xid8 values stay far below 2^63 (an epoch would have to wrap 2^31 times), so they fit a BIGINT.
fn transaction_to_sql(transaction_id: u64) -> Result<i64, AuditError> {
    i64::try_from(transaction_id)
        .map_err(|_| AuditError::Corrupt(format!("transaction id {transaction_id} out of range")))
}

fn transaction_from_sql(transaction_id: i64) -> Result<u64, AuditError> {
    u64::try_from(transaction_id)
        .map_err(|_| AuditError::Corrupt(format!("negative transaction id {transaction_id}")))
}

fn hash_from_sql(text: &str) -> Result<ChainHash, AuditError> {
    ChainHash::parse(text).map_err(|error| AuditError::Corrupt(error.to_string()))
}

/// Decodes a checkpoint row.
///
/// # Errors
/// [`AuditError::Corrupt`] when a column does not decode.
pub fn checkpoint_from_row(row: CheckpointTuple) -> Result<SignedCheckpoint, AuditError> {
    let (number, chain_index, global_position, hash, signed_at, public_key, signature) = row;
    let corrupt = |what: &str| AuditError::Corrupt(format!("checkpoint {number}: {what}"));
    let signed_at = DateTime::parse_from_rfc3339(&signed_at)
        .map_err(|_| corrupt("signed_at is not a time"))?
        .with_timezone(&Utc);
    let mut key = [0_u8; 32];
    hex::decode_to_slice(&public_key, &mut key).map_err(|_| corrupt("public key is not hex"))?;
    let mut sig = [0_u8; 64];
    hex::decode_to_slice(&signature, &mut sig).map_err(|_| corrupt("signature is not hex"))?;
    Ok(SignedCheckpoint {
        number,
        chain_index,
        global_position,
        hash: ChainHash::parse(&hash).map_err(|_| corrupt("hash is not hex"))?,
        signed_at,
        public_key: key,
        signature: sig,
    })
}

impl AuditStore {
    /// The tables of `db` (migrated).
    pub fn new(db: Database) -> AuditStore {
        AuditStore { db }
    }

    /// The store's database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The last chain row, if the chain has begun.
    ///
    /// # Errors
    /// [`AuditError::Unavailable`] when the query fails, [`AuditError::Corrupt`] for a row that does
    /// not decode.
    pub async fn head(&self) -> Result<Option<ChainRow>, AuditError> {
        let row: Option<(i64, i64, i64, String)> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT chain_index, global_position, transaction_id, hash FROM audit_chain \
             ORDER BY chain_index DESC LIMIT 1"
        )
        .fetch_optional(pool)
        .await)
        .map_err(unavailable)?;
        row.map(|(chain_index, global_position, transaction_id, hash)| {
            Ok(ChainRow {
                chain_index,
                global_position,
                transaction_id: transaction_from_sql(transaction_id)?,
                hash: hash_from_sql(&hash)?,
            })
        })
        .transpose()
    }

    /// The checkpoint with the highest number, if any.
    ///
    /// # Errors
    /// As [`AuditStore::head`].
    pub async fn last_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY number DESC LIMIT 1"
        );
        let row: Option<CheckpointTuple> = on_pool!(&self.db, |pool| sqlx::query_as(&sql)
            .fetch_optional(pool)
            .await)
        .map_err(unavailable)?;
        row.map(checkpoint_from_row).transpose()
    }

    /// Appends `rows` (consecutive, following the head) and, when given, `checkpoint`, in one
    /// transaction. A row that exists already (another writer got there first) fails the whole append.
    ///
    /// # Errors
    /// [`AuditError::Unavailable`] when the insert fails (including a conflicting row).
    pub async fn append(
        &self,
        rows: &[ChainRow],
        checkpoint: Option<&SignedCheckpoint>,
    ) -> Result<(), AuditError> {
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            values.push((
                row.chain_index,
                row.global_position,
                transaction_to_sql(row.transaction_id)?,
                row.hash.to_hex(),
            ));
        }
        let insert_checkpoint = format!(
            "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        on_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await.map_err(unavailable)?;
            // Bounded well below both stores' bind limits: pages are at most a few thousand rows.
            for chunk in values.chunks(2000) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_chain (chain_index, global_position, transaction_id, hash) ",
                );
                insert.push_values(chunk, |mut b, (index, position, transaction, hash)| {
                    b.push_bind(*index)
                        .push_bind(*position)
                        .push_bind(*transaction)
                        .push_bind(hash.clone());
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            if let Some(c) = checkpoint {
                sqlx::query(&insert_checkpoint)
                    .bind(c.number)
                    .bind(c.chain_index)
                    .bind(c.global_position)
                    .bind(c.hash.to_hex())
                    .bind(edict_application::audit::chain::canonical_time(c.signed_at))
                    .bind(hex::encode(c.public_key))
                    .bind(hex::encode(c.signature))
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)
        })
    }
}

#[async_trait]
impl AuditTrail for AuditStore {
    #[tracing::instrument(skip_all, fields(after, limit), err)]
    async fn checkpoints(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE number > $1 \
             ORDER BY number LIMIT $2"
        );
        let rows: Vec<CheckpointTuple> = on_pool!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await)
        .map_err(unavailable)?;
        rows.into_iter().map(checkpoint_from_row).collect()
    }

    #[tracing::instrument(skip_all, fields(positions = positions.len()), err)]
    async fn links(&self, positions: &[i64]) -> Result<Vec<ChainLink>, AuditError> {
        let mut links = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(2000) {
            let rows: Vec<(i64, i64, String, Option<String>)> = on_pool!(&self.db, |pool| {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT c.chain_index, c.global_position, c.hash, p.hash FROM audit_chain c \
                     LEFT JOIN audit_chain p ON p.chain_index = c.chain_index - 1 \
                     WHERE c.global_position IN (",
                );
                let mut separated = query.separated(", ");
                for position in chunk {
                    separated.push_bind(*position);
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await
            })
            .map_err(unavailable)?;
            for (chain_index, global_position, hash, previous) in rows {
                let previous_hash = match previous {
                    Some(previous) => hash_from_sql(&previous)?,
                    None if chain_index == 1 => edict_application::audit::chain::GENESIS,
                    None => {
                        // The row before it was removed: export the event without hashes and let
                        // `edict audit verify` name the break.
                        tracing::warn!(chain_index, "the chain row before this one is missing");
                        continue;
                    }
                };
                links.push(ChainLink {
                    chain_index,
                    global_position,
                    previous_hash,
                    hash: hash_from_sql(&hash)?,
                });
            }
        }
        Ok(links)
    }
}
