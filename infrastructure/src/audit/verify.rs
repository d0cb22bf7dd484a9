//! `edict audit verify` against the database: recompute the chain from the raw events table and check
//! it against the chain rows and the signed checkpoints, naming the first broken link.
//!
//! Nothing but the chain rows and the signatures is trusted. The events are read straight from the
//! `events` table (not through the global log's read horizon), in log order `(transaction_id,
//! global_position)`, and merged with the chain rows, which follow the same order:
//!
//! 1. chain indexes follow each other (a removed chain row is a gap);
//! 2. the event a chain row names is still at its place in the log (a deleted event is missing; one
//!    whose transaction changed was moved);
//! 3. `SHA-256(previous || canonical bytes)`, recomputed from the event as stored now, equals the
//!    recorded hash (an edited payload, metadata, time, type… no longer matches);
//! 4. at each checkpoint, the signature verifies (with the trusted key when one is given) and the
//!    recomputed hash is the signed one (a chain rewritten after signing no longer matches);
//! 5. no event sorts between two chain rows (an inserted event), no checkpoint covers an index past
//!    the end of the chain (a truncated tail), and checkpoint numbers have no holes.
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use edict_application::audit::AuditError;
use edict_application::audit::AuditTrail;
use edict_application::audit::chain::{
    CanonicalFields, ChainHash, GENESIS, link as link_hash, write_canonical_fields,
};
use edict_application::audit::checkpoint::{CheckpointError, SignedCheckpoint, describe_failure};
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

/// What kind of link is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// An event's content no longer hashes to its chain row.
    ContentChanged,
    /// A chained event is gone from the log.
    MissingEvent,
    /// A chained event now belongs to another transaction (it was moved in the commit order).
    MovedEvent,
    /// A stored event cannot be decoded.
    UnreadableEvent,
    /// An event below the chain's head is not in the chain.
    UnchainedEvent,
    /// A chain row is missing.
    ChainGap,
    /// A chain row cannot be decoded.
    CorruptChainRow,
    /// A checkpoint's signature does not verify, or it was signed by an untrusted key.
    InvalidSignature,
    /// A checkpoint's hash or position is not the chain's at its index.
    CheckpointMismatch,
    /// A checkpoint covers an index past the end of the chain.
    TruncatedChain,
    /// A checkpoint number is missing.
    MissingCheckpoint,
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// What is broken.
    pub kind: BreakKind,
    /// The chain index where it is (if at one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_index: Option<i64>,
    /// The event's global position (if about an event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_position: Option<i64>,
    /// The checkpoint number (if about a checkpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<i64>,
    /// For a person.
    pub message: String,
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

/// A place in the log: (transaction id, global position), the order of the log and of the chain.
type Key = (u64, i64);

/// A chain row as stored, not decoded yet.
#[derive(Debug)]
struct RawLink {
    chain_index: i64,
    global_position: i64,
    transaction_id: i64,
    hash: String,
}

impl RawLink {
    fn key(&self) -> Key {
        (
            u64::try_from(self.transaction_id).unwrap_or(u64::MAX),
            self.global_position,
        )
    }
}

/// An event as read from the events table, not decoded yet.
#[derive(Debug)]
struct RawEvent {
    global_position: i64,
    transaction_id: u64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    recorded_at: Result<DateTime<Utc>, String>,
}

impl RawEvent {
    fn key(&self) -> Key {
        (self.transaction_id, self.global_position)
    }
}

/// Consecutive chain rows and every event of the log between the key of the row before the first
/// and the key of the last (whether chained or not).
#[derive(Debug)]
struct Batch {
    links: Vec<RawLink>,
    events: Vec<RawEvent>,
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
async fn chain_page(db: &Database, after: i64, limit: usize) -> Result<Vec<RawLink>, AuditError> {
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
            |(chain_index, global_position, transaction_id, hash)| RawLink {
                chain_index,
                global_position,
                transaction_id,
                hash,
            },
        )
        .collect())
}

/// The events in `(after, through]`.
async fn events_between(
    db: Database,
    after: Key,
    through: Key,
) -> Result<Vec<RawEvent>, AuditError> {
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
            rows.iter()
                .map(|row| {
                    let transaction_id: String = row.try_get("transaction_id_text")?;
                    Ok(RawEvent {
                        global_position: row.try_get("global_position")?,
                        transaction_id: transaction_id.parse().unwrap_or(u64::MAX),
                        aggregate_type: row.try_get("aggregate_type")?,
                        aggregate_id: row.try_get("aggregate_id")?,
                        sequence: row.try_get("sequence")?,
                        event_type: row.try_get("event_type")?,
                        event_version: row.try_get("event_version")?,
                        payload: row.try_get("payload")?,
                        metadata: row.try_get("metadata")?,
                        recorded_at: Ok(row.try_get("recorded_at")?),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(unavailable)
        }
        Database::Sqlite(pool) => {
            let rows = sqlx::query(SQLITE_EVENTS)
                .bind(after.1)
                .bind(through.1)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|row| {
                    let text: String = row.try_get("recorded_at")?;
                    Ok(RawEvent {
                        global_position: row.try_get("global_position")?,
                        transaction_id: 0,
                        aggregate_type: row.try_get("aggregate_type")?,
                        aggregate_id: row.try_get("aggregate_id")?,
                        sequence: row.try_get("sequence")?,
                        event_type: row.try_get("event_type")?,
                        event_version: row.try_get("event_version")?,
                        payload: row.try_get("payload")?,
                        metadata: row.try_get("metadata")?,
                        recorded_at: DateTime::parse_from_rfc3339(&text)
                            .map(|t| t.with_timezone(&Utc))
                            .map_err(|e| format!("{text:?}: {e}")),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(unavailable)
        }
    }
}

/// Reads the chain from `from` a page at a time and, for each page, starts reading the events it
/// covers on a task of its own (several in flight), handing the batches on in chain order.
async fn produce(
    db: Database,
    from: i64,
    start: Key,
    sender: mpsc::Sender<Batch>,
) -> Result<(), AuditError> {
    let (pending, mut ready) = mpsc::channel::<(
        Vec<RawLink>,
        tokio::task::JoinHandle<Result<Vec<RawEvent>, AuditError>>,
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
        if sender.send(Batch { links, events }).await.is_err() {
            break;
        }
    }
    drop(ready);
    reader
        .await
        .map_err(|e| AuditError::Unavailable(format!("the chain reader stopped: {e}")))?
}

/// `Rule 5f0c7a36…/3`.
fn describe(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    let short: String = aggregate_id.chars().take(8).collect();
    let ellipsis = if aggregate_id.chars().count() > 8 {
        "…"
    } else {
        ""
    };
    format!("{aggregate_type} {short}{ellipsis}/{sequence}")
}

/// An event decoded and canonicalized, or why it could not be.
type Prepared = Result<Vec<u8>, String>;

fn prepare(raw: &RawEvent) -> Prepared {
    let payload: serde_json::Value =
        serde_json::from_str(&raw.payload).map_err(|e| format!("its payload is not JSON: {e}"))?;
    let metadata: serde_json::Value = serde_json::from_str(&raw.metadata)
        .map_err(|e| format!("its metadata is not JSON: {e}"))?;
    let recorded_at = raw
        .recorded_at
        .clone()
        .map_err(|e| format!("its recorded_at is not a time: {e}"))?;
    let mut bytes = Vec::with_capacity(raw.payload.len() + raw.metadata.len() + 256);
    write_canonical_fields(
        &CanonicalFields {
            aggregate_id: &raw.aggregate_id,
            aggregate_type: &raw.aggregate_type,
            event_type: &raw.event_type,
            event_version: &raw.event_version,
            global_position: raw.global_position,
            metadata: &metadata,
            payload: &payload,
            recorded_at,
            sequence: raw.sequence,
        },
        &mut bytes,
    );
    Ok(bytes)
}

/// Canonicalizes a batch's events on `threads` threads, keeping their order.
fn prepare_batch(events: &[RawEvent], threads: usize) -> Vec<Prepared> {
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

/// Where the consumer starts and what it checks along the way.
struct Scan {
    expected: i64,
    previous: ChainHash,
    checkpoints: BTreeMap<i64, SignedCheckpoint>,
    trusted: Option<[u8; 32]>,
    threads: usize,
}

/// What the consumer got to.
struct Scanned {
    verified: u64,
    /// The log key of the last chain row verified (the start when none).
    last_key: Key,
    last_index: i64,
    last_hash: ChainHash,
    checkpoints_verified: u64,
    last_checkpoint: Option<i64>,
    broken: Option<Break>,
}

fn checkpoint_break(checkpoint: &SignedCheckpoint, error: &CheckpointError) -> Break {
    Break {
        kind: BreakKind::InvalidSignature,
        chain_index: Some(checkpoint.chain_index),
        global_position: Some(checkpoint.global_position),
        checkpoint: Some(checkpoint.number),
        message: describe_failure(checkpoint.number, error),
    }
}

fn consume(
    mut receiver: mpsc::Receiver<Batch>,
    mut scan: Scan,
    start: Key,
    total: u64,
    progress: &(dyn Fn(VerifyProgress) + Send + Sync),
) -> Scanned {
    let mut out = Scanned {
        verified: 0,
        last_key: start,
        last_index: scan.expected - 1,
        last_hash: scan.previous,
        checkpoints_verified: 0,
        last_checkpoint: None,
        broken: None,
    };
    while let Some(batch) = receiver.blocking_recv() {
        let prepared = prepare_batch(&batch.events, scan.threads);
        if let Some(broken) = check_batch(&batch, prepared, &mut scan, &mut out) {
            out.broken = Some(broken);
            return out;
        }
        progress(VerifyProgress {
            verified: out.verified,
            total,
        });
    }
    out
}

/// Merges a batch's chain rows with its events (both in log order); answers the first break.
fn check_batch(
    batch: &Batch,
    prepared: Vec<Prepared>,
    scan: &mut Scan,
    out: &mut Scanned,
) -> Option<Break> {
    let mut events = batch.events.iter().zip(prepared).peekable();
    for link in &batch.links {
        // An event that sorts before the chain's next one is not in the chain.
        if let Some((event, _)) = events.next_if(|(e, _)| e.key() < link.key()) {
            return Some(Break {
                kind: BreakKind::UnchainedEvent,
                chain_index: None,
                global_position: Some(event.global_position),
                checkpoint: None,
                message: format!(
                    "event at position {} ({}) is not in the chain: it was added to the log after the chain had passed its place",
                    event.global_position,
                    describe(&event.aggregate_type, &event.aggregate_id, event.sequence)
                ),
            });
        }
        let matched = events.next_if(|(e, _)| e.key() == link.key());
        if let Some(broken) = check_link(link, matched, scan, out) {
            return Some(broken);
        }
    }
    // Events sort at most up to the batch's last chain row, so none are left; one would be unchained.
    events.next().map(|(event, _)| Break {
        kind: BreakKind::UnchainedEvent,
        chain_index: None,
        global_position: Some(event.global_position),
        checkpoint: None,
        message: format!(
            "event at position {} is not in the chain",
            event.global_position
        ),
    })
}

/// Checks one chain row against its event (None when the log has no event at its place).
fn check_link(
    link: &RawLink,
    event: Option<(&RawEvent, Prepared)>,
    scan: &mut Scan,
    out: &mut Scanned,
) -> Option<Break> {
    let at = |kind, message: String| Break {
        kind,
        chain_index: Some(link.chain_index),
        global_position: Some(link.global_position),
        checkpoint: None,
        message,
    };
    if link.chain_index != scan.expected {
        return Some(at(
            BreakKind::ChainGap,
            format!(
                "chain row {} is missing: the chain jumps from {} to {}",
                scan.expected,
                scan.expected - 1,
                link.chain_index
            ),
        ));
    }
    let Ok(recorded) = ChainHash::parse(&link.hash) else {
        return Some(at(
            BreakKind::CorruptChainRow,
            format!(
                "chain row {} is corrupt: its hash is not hex",
                link.chain_index
            ),
        ));
    };
    let Some((raw, prepared)) = event else {
        return Some(at(
            BreakKind::MissingEvent,
            format!(
                "event at position {} is missing: the chain recorded it (chain index {}), the log no longer has it",
                link.global_position, link.chain_index
            ),
        ));
    };
    let what = describe(&raw.aggregate_type, &raw.aggregate_id, raw.sequence);
    let canonical = match prepared {
        Ok(canonical) => canonical,
        Err(reason) => {
            return Some(at(
                BreakKind::UnreadableEvent,
                format!(
                    "event at position {} ({what}) cannot be read: {reason}",
                    link.global_position
                ),
            ));
        }
    };
    let computed = link_hash(&scan.previous, &canonical);
    if computed != recorded {
        return Some(at(
            BreakKind::ContentChanged,
            format!(
                "event at position {} ({what}) does not match the chain: its content changed since it was chained",
                link.global_position
            ),
        ));
    }
    if let Some(checkpoint) = scan.checkpoints.get(&link.chain_index) {
        if let Err(error) = checkpoint.verify(scan.trusted.as_ref()) {
            return Some(checkpoint_break(checkpoint, &error));
        }
        if checkpoint.hash != computed || checkpoint.global_position != link.global_position {
            return Some(Break {
                kind: BreakKind::CheckpointMismatch,
                chain_index: Some(link.chain_index),
                global_position: Some(link.global_position),
                checkpoint: Some(checkpoint.number),
                message: format!(
                    "checkpoint {} does not match the chain at index {}: the history up to event at position {} was rewritten after it was signed",
                    checkpoint.number, link.chain_index, link.global_position
                ),
            });
        }
        out.checkpoints_verified += 1;
        out.last_checkpoint = Some(checkpoint.number);
    }
    scan.previous = computed;
    scan.expected += 1;
    out.verified += 1;
    out.last_key = link.key();
    out.last_index = link.chain_index;
    out.last_hash = computed;
    None
}

/// A missing or unchained event whose position the other side still has: it was moved in the log
/// (its transaction changed). Rewrites the break to say so.
async fn explain_moved(db: &Database, broken: Break) -> Result<Break, AuditError> {
    let Some(position) = broken.global_position else {
        return Ok(broken);
    };
    let moved = match broken.kind {
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
    if moved == 0 || db.kind() == "sqlite" && broken.kind == BreakKind::MissingEvent {
        return Ok(broken);
    }
    Ok(Break {
        kind: BreakKind::MovedEvent,
        message: format!(
            "event at position {position} was moved in the log: its transaction is not the one it was chained in"
        ),
        ..broken
    })
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
async fn link_at(db: &Database, index: i64) -> Result<Option<RawLink>, AuditError> {
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

    // Checkpoint numbers have no holes (a removed checkpoint would hide a rewrite before it).
    for (expected_number, checkpoint) in (1_i64..).zip(checkpoints.iter()) {
        if checkpoint.number != expected_number {
            report.broken = Some(Break {
                kind: BreakKind::MissingCheckpoint,
                chain_index: None,
                global_position: None,
                checkpoint: Some(expected_number),
                message: format!(
                    "checkpoint {expected_number} is missing: checkpoints jump from {} to {}",
                    expected_number - 1,
                    checkpoint.number
                ),
            });
            return finish(report);
        }
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
    let scan = Scan {
        expected: from,
        previous,
        checkpoints: checkpoints
            .iter()
            .filter(|c| c.chain_index >= from)
            .map(|c| (c.chain_index, c.clone()))
            .collect(),
        trusted: options.trusted_key,
        threads: options.threads.max(1),
    };
    let (sender, receiver) = mpsc::channel(2);
    let producer = tokio::spawn(produce(db.clone(), from, start, sender));
    let consumer =
        tokio::task::spawn_blocking(move || consume(receiver, scan, start, total, &*progress));
    let scanned = consumer
        .await
        .map_err(|e| AuditError::Unavailable(format!("the hasher stopped: {e}")))?;
    let produced = producer
        .await
        .map_err(|e| AuditError::Unavailable(format!("the reader stopped: {e}")))?;
    if scanned.broken.is_none() {
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
    if let Some(broken) = scanned.broken {
        report.broken = Some(explain_moved(db, broken).await?);
        return finish(report);
    }
    report.unchained_events = events_after(db, scanned.last_key).await?;
    // A checkpoint past the end: chain rows (and the events with them) were cut off the tail.
    if let Some(beyond) = checkpoints
        .iter()
        .find(|c| c.chain_index > scanned.last_index)
    {
        report.broken = Some(Break {
            kind: BreakKind::TruncatedChain,
            chain_index: Some(beyond.chain_index),
            global_position: Some(beyond.global_position),
            checkpoint: Some(beyond.number),
            message: format!(
                "checkpoint {} covers chain index {} (event at position {}), but the chain ends at {}: its tail was removed",
                beyond.number, beyond.chain_index, beyond.global_position, scanned.last_index
            ),
        });
        return finish(report);
    }
    finish(report)
}
