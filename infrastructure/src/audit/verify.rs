//! `edict audit verify` against the database: recompute the chain from the raw events table and check
//! it against the chain rows and the signed checkpoints, naming the first broken link.
//!
//! Nothing but the chain rows and the signatures is trusted. The events are read straight from the
//! `events` table (not through the global log's read horizon), in log order `(transaction_id,
//! global_position)`, and merged with the chain rows, which follow the same order; the checks
//! themselves are pure and live beside the chain code (`edict_application::audit::links`).
//!
//! What it did not verify is said too: the events of the log after the last chain row
//! (`unchained_events`: committed, not chained yet, e.g. after the audit role was killed) and the chained
//! events after the last checkpoint (`unsigned_events`). Neither is a broken link; `edict audit verify
//! --strict` fails on unchained events.
//!
//! # Speed
//! One query over the whole join made PostgreSQL sort a million wide rows on disk. Instead the chain
//! is read a page at a time by its primary key, and for each page the events between the keys of its
//! first and last rows are read on a task of their own (several pages in flight, each on its own
//! connection). A blocking consumer canonicalizes each page's events on all cores (scoped threads),
//! then merges them with the chain rows and chains the hashes in order. Memory stays at a few pages.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use edict_application::audit::AuditError;
use edict_application::audit::AuditTrail;
use edict_application::audit::chain::{ChainHash, GENESIS};
use edict_application::audit::checkpoint::SignedCheckpoint;
pub use edict_application::audit::links::{Break, BreakKind};
use edict_application::audit::links::{
    Key, Prepared, StoredEvent, StoredLink, Stretch, Walk, missing_checkpoint, moved, prepare,
    truncated_chain,
};
use serde::Serialize;
use sqlx::Row;
use tokio::sync::mpsc;

use super::AuditStore;
use crate::store::Database;

/// Rows per batch handed from the reader to the hasher.
const BATCH: usize = 5000;
/// Batches whose events are being read at once.
const READS_IN_FLIGHT: usize = 3;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The first chain index to recompute (1: everything). The hash of the row before it is taken as
    /// given.
    pub from: i64,
    /// The public key checkpoints must be signed with (None: each checkpoint's own key, reported).
    pub trusted_key: Option<[u8; 32]>,
    /// Threads that parse and canonicalize (default: the machine's cores).
    pub threads: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            from: 1,
            trusted_key: None,
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        }
    }
}

/// How far a verification is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Events recomputed so far.
    pub verified: u64,
    /// Chain rows to recompute in all (an estimate from the head's index).
    pub total: u64,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Whether every link held.
    pub ok: bool,
    /// The first chain index recomputed.
    pub from: i64,
    /// Events recomputed (up to the break, if any).
    pub events_verified: u64,
    /// The last chain index recomputed (0 when none).
    pub last_chain_index: i64,
    /// The recomputed hash there (hex).
    pub last_hash: String,
    /// Checkpoints whose signature and hash were checked.
    pub checkpoints_verified: u64,
    /// The last of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<i64>,
    /// Chained events after the last checkpoint (proven only by the chain rows, not yet signed).
    pub unsigned_events: i64,
    /// Events of the log after the last chain row verified: committed but not chained yet, so not
    /// verified at all (0 when a link is broken: the rest was not looked at).
    pub unchained_events: u64,
    /// The public keys the checkpoints were signed with (hex).
    pub public_keys: Vec<String>,
    /// Whether those keys were checked against a trusted key.
    pub key_trusted: bool,
    /// The first broken link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Break>,
    /// Wall time.
    pub seconds: f64,
    /// Events per second.
    pub events_per_sec: f64,
}

const CHAIN_PAGE: &str = "SELECT chain_index, global_position, transaction_id, hash FROM audit_chain \
                          WHERE chain_index > $1 ORDER BY chain_index LIMIT $2";

/// The events of the log in `(after, through]`, in log order. The planner cannot estimate the row
/// comparisons (it guesses a fifth of the table and scans it all); the redundant range on
/// `transaction_id` alone gives it an estimate, and the index on the pair is used. The statement is
/// not kept prepared, so each range is planned with its own bounds.
const POSTGRES_EVENTS: &str = "
SELECT global_position, transaction_id::text AS transaction_id_text, aggregate_type, aggregate_id,
       sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata,
       recorded_at
  FROM events
 WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
   AND (transaction_id, global_position) <= ($3::text::xid8, $4)
   AND transaction_id BETWEEN $1::text::xid8 AND $3::text::xid8
 ORDER BY transaction_id, global_position";

const SQLITE_EVENTS: &str = "
SELECT rowid AS global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
       payload, metadata, recorded_at
  FROM events
 WHERE rowid > ? AND rowid <= ?
 ORDER BY rowid";

fn unavailable(error: sqlx::Error) -> AuditError {
    AuditError::Unavailable(error.to_string())
}

/// Up to `limit` chain rows after `after`.
async fn chain_page(
    db: &Database,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredLink>, AuditError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(i64, i64, i64, String)> = on_pool!(db, |pool| sqlx::query_as(CHAIN_PAGE)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await)
    .map_err(unavailable)?;
    Ok(rows
        .into_iter()
        .map(
            |(chain_index, global_position, transaction_id, hash)| StoredLink {
                chain_index,
                global_position,
                transaction_id,
                hash,
            },
        )
        .collect())
}

/// The [`StoredEvent`]s of events `rows` of either backend; `$parts` gives a `$row`'s transaction id and
/// time.
macro_rules! stored_events {
    ($rows:expr, |$row:ident| $parts:expr) => {
        $rows
            .iter()
            .map(|$row| {
                let (transaction_id, recorded_at) = $parts;
                Ok(StoredEvent {
                    global_position: $row.try_get("global_position")?,
                    transaction_id,
                    aggregate_type: $row.try_get("aggregate_type")?,
                    aggregate_id: $row.try_get("aggregate_id")?,
                    sequence: $row.try_get("sequence")?,
                    event_type: $row.try_get("event_type")?,
                    event_version: $row.try_get("event_version")?,
                    payload: $row.try_get("payload")?,
                    metadata: $row.try_get("metadata")?,
                    recorded_at,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)
    };
}

/// SQLite's text time `text`, or what is wrong with it.
fn rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?}: {e}"))
}

/// The events in `(after, through]`.
async fn events_between(
    db: Database,
    after: Key,
    through: Key,
) -> Result<Vec<StoredEvent>, AuditError> {
    match &db {
        Database::Postgres(pool) => {
            let rows = sqlx::query(POSTGRES_EVENTS)
                .persistent(false)
                .bind(after.0.to_string())
                .bind(after.1)
                .bind(through.0.to_string())
                .bind(through.1)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
            stored_events!(rows, |row| {
                let transaction_id: String = row.try_get("transaction_id_text")?;
                let transaction_id = transaction_id.parse().unwrap_or(u64::MAX);
                (transaction_id, Ok(row.try_get("recorded_at")?))
            })
        }
        Database::Sqlite(pool) => {
            let rows = sqlx::query(SQLITE_EVENTS)
                .bind(after.1)
                .bind(through.1)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
            stored_events!(rows, |row| (
                0,
                rfc3339(&row.try_get::<String, _>("recorded_at")?)
            ))
        }
    }
}

/// Reads the chain from `from` a page at a time and, for each page, starts reading the events it
/// covers on a task of its own (several in flight), handing the batches on in chain order.
async fn produce(
    db: Database,
    from: i64,
    start: Key,
    sender: mpsc::Sender<Stretch>,
) -> Result<(), AuditError> {
    let (pending, mut ready) = mpsc::channel::<(
        Vec<StoredLink>,
        tokio::task::JoinHandle<Result<Vec<StoredEvent>, AuditError>>,
    )>(READS_IN_FLIGHT);
    let reader = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut after_index = from - 1;
            let mut after_key = start;
            loop {
                let links = chain_page(&db, after_index, BATCH).await?;
                let Some(last) = links.last() else {
                    return Ok::<(), AuditError>(());
                };
                let through = last.key().max(after_key);
                after_index = last.chain_index;
                let events = tokio::spawn(events_between(db.clone(), after_key, through));
                after_key = through;
                if pending.send((links, events)).await.is_err() {
                    return Ok(());
                }
            }
        })
    };
    while let Some((links, events)) = ready.recv().await {
        let events = events
            .await
            .map_err(|e| AuditError::Unavailable(format!("an event reader stopped: {e}")))??;
        if sender.send(Stretch { links, events }).await.is_err() {
            break;
        }
    }
    drop(ready);
    reader
        .await
        .map_err(|e| AuditError::Unavailable(format!("the chain reader stopped: {e}")))?
}

/// Canonicalizes a batch's events on `threads` threads, keeping their order.
fn prepare_batch(events: &[StoredEvent], threads: usize) -> Vec<Prepared> {
    if threads <= 1 || events.len() < 64 {
        return events.iter().map(prepare).collect();
    }
    let chunk = events.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = events
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(prepare).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(events.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                // A panic in `prepare` is a bug; fail the rows rather than the process.
                Err(_) => out.extend(std::iter::repeat_with(|| {
                    Err("internal error while hashing".to_owned())
                })),
            }
        }
        out.truncate(events.len());
        out
    })
}

/// Checks the stretches the reader hands on, canonicalizing each one's events on `threads` threads;
/// answers the walk and the first break.
fn consume(
    mut receiver: mpsc::Receiver<Stretch>,
    mut walk: Walk,
    threads: usize,
    total: u64,
    progress: &(dyn Fn(VerifyProgress) + Send + Sync),
) -> (Walk, Option<Break>) {
    while let Some(stretch) = receiver.blocking_recv() {
        let prepared = prepare_batch(&stretch.events, threads);
        if let Some(broken) = walk.check(&stretch, prepared) {
            return (walk, Some(broken));
        }
        progress(VerifyProgress {
            verified: walk.verified,
            total,
        });
    }
    (walk, None)
}

/// A missing or unchained event whose position the other side still has: it was moved in the log
/// (its transaction changed). Rewrites the break to say so.
async fn explain_moved(db: &Database, broken: Break) -> Result<Break, AuditError> {
    let Some(position) = broken.global_position else {
        return Ok(broken);
    };
    let still_there = match broken.kind {
        BreakKind::MissingEvent => on_pool!(db, |pool| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM events WHERE global_position = $1"
        )
        .bind(position)
        .fetch_one(pool)
        .await),
        BreakKind::UnchainedEvent => on_pool!(db, |pool| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_chain WHERE global_position = $1"
        )
        .bind(position)
        .fetch_one(pool)
        .await),
        _ => return Ok(broken),
    }
    .map_err(unavailable)?;
    // SQLite orders by position alone: an event at a chained position is never moved there.
    if still_there == 0 || db.kind() == "sqlite" && broken.kind == BreakKind::MissingEvent {
        return Ok(broken);
    }
    Ok(moved(broken))
}

/// How many events of the log sort after `after` (committed ones: an open transaction's are not seen).
async fn events_after(db: &Database, after: Key) -> Result<u64, AuditError> {
    let count = match db {
        Database::Postgres(pool) => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM events \
             WHERE (transaction_id, global_position) > ($1::text::xid8, $2)",
            )
            .bind(after.0.to_string())
            .bind(after.1)
            .fetch_one(pool)
            .await
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE rowid > ?")
                .bind(after.1)
                .fetch_one(pool)
                .await
        }
    }
    .map_err(unavailable)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Every checkpoint, in number order.
async fn all_checkpoints(store: &AuditStore) -> Result<Vec<SignedCheckpoint>, AuditError> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |c: &SignedCheckpoint| c.number);
        let page = store.checkpoints(after, 1000).await?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// Chain row `index`, if it exists.
async fn link_at(db: &Database, index: i64) -> Result<Option<StoredLink>, AuditError> {
    Ok(chain_page(db, index - 1, 1)
        .await?
        .into_iter()
        .find(|l| l.chain_index == index))
}

/// Verifies the chain of `db` (see the module documentation). A broken link is a report with
/// `broken` set, not an error.
///
/// # Errors
/// [`AuditError::Unavailable`] when the database cannot be read.
pub async fn verify_database(
    db: &Database,
    options: VerifyOptions,
    progress: Arc<dyn Fn(VerifyProgress) + Send + Sync>,
) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    let from = options.from.max(1);
    let store = AuditStore::new(db.clone());
    let head = store.head().await?;
    let checkpoints = all_checkpoints(&store).await?;
    let mut public_keys: Vec<String> = checkpoints
        .iter()
        .map(|c| hex::encode(c.public_key))
        .collect();
    public_keys.sort();
    public_keys.dedup();

    let mut report = VerifyReport {
        ok: false,
        from,
        events_verified: 0,
        last_chain_index: from - 1,
        last_hash: GENESIS.to_hex(),
        checkpoints_verified: 0,
        last_checkpoint: None,
        unsigned_events: 0,
        unchained_events: 0,
        public_keys,
        key_trusted: options.trusted_key.is_some(),
        broken: None,
        seconds: 0.0,
        events_per_sec: 0.0,
    };
    let finish = |mut report: VerifyReport| {
        report.ok = report.broken.is_none();
        report.seconds = started.elapsed().as_secs_f64();
        report.events_per_sec = report.events_verified as f64 / report.seconds.max(1e-9);
        Ok(report)
    };

    if let Some(broken) = missing_checkpoint(&checkpoints) {
        report.broken = Some(broken);
        return finish(report);
    }

    let (previous, start) = if from == 1 {
        (GENESIS, (0, i64::MIN))
    } else {
        match link_at(db, from - 1).await? {
            Some(link) => (
                ChainHash::parse(&link.hash).map_err(|_| {
                    AuditError::Corrupt(format!("chain row {} is corrupt", from - 1))
                })?,
                link.key(),
            ),
            None => {
                report.broken = Some(Break {
                    kind: BreakKind::ChainGap,
                    chain_index: Some(from - 1),
                    global_position: None,
                    checkpoint: None,
                    message: format!("chain row {} is missing: cannot start there", from - 1),
                });
                return finish(report);
            }
        }
    };
    report.last_hash = previous.to_hex();

    let head_index = head.map_or(0, |h| h.chain_index);
    let total = u64::try_from(head_index - from + 1).unwrap_or(0);
    let walk = Walk::new(
        from,
        previous,
        start,
        checkpoints
            .iter()
            .filter(|c| c.chain_index >= from)
            .map(|c| (c.chain_index, c.clone()))
            .collect(),
        options.trusted_key,
    );
    let threads = options.threads.max(1);
    let (sender, receiver) = mpsc::channel(2);
    let producer = tokio::spawn(produce(db.clone(), from, start, sender));
    let consumer =
        tokio::task::spawn_blocking(move || consume(receiver, walk, threads, total, &*progress));
    let (scanned, broken) = consumer
        .await
        .map_err(|e| AuditError::Unavailable(format!("the hasher stopped: {e}")))?;
    let produced = producer
        .await
        .map_err(|e| AuditError::Unavailable(format!("the reader stopped: {e}")))?;
    if broken.is_none() {
        produced?;
    }
    report.events_verified = scanned.verified;
    report.last_chain_index = scanned.last_index;
    report.last_hash = scanned.last_hash.to_hex();
    report.checkpoints_verified = scanned.checkpoints_verified;
    report.last_checkpoint = scanned.last_checkpoint;
    report.unsigned_events = scanned.last_index
        - checkpoints
            .iter()
            .filter(|c| c.chain_index <= scanned.last_index)
            .map(|c| c.chain_index)
            .max()
            .unwrap_or(0);
    if let Some(broken) = broken {
        report.broken = Some(explain_moved(db, broken).await?);
        return finish(report);
    }
    report.unchained_events = events_after(db, scanned.last_key).await?;
    report.broken = truncated_chain(&checkpoints, scanned.last_index);
    finish(report)
}
