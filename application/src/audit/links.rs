//! The link checks of `edict audit verify`: given the chain rows and the events of the log, both in
//! log order, find the first broken link (pure; the adapter reads the rows, this module judges them).
//!
//! A [`Walk`] goes along the chain one [`Stretch`] (consecutive chain rows and every event of the log
//! they cover) at a time and checks, in order:
//!
//! 1. chain indexes follow each other (a removed chain row is a [`BreakKind::ChainGap`]);
//! 2. the row's hash is hex ([`BreakKind::CorruptChainRow`]);
//! 3. the event a chain row names is still at its place in the log ([`BreakKind::MissingEvent`]), and
//!    can be read ([`BreakKind::UnreadableEvent`]);
//! 4. `SHA-256(previous || canonical bytes)`, recomputed from the event as stored now, equals the
//!    recorded hash ([`BreakKind::ContentChanged`]);
//! 5. at each checkpoint, the signature verifies, with the trusted key when one is given
//!    ([`BreakKind::InvalidSignature`]), and the recomputed hash is the signed one
//!    ([`BreakKind::CheckpointMismatch`]);
//! 6. no event sorts between two chain rows ([`BreakKind::UnchainedEvent`]).
//!
//! Around the walk: checkpoint numbers have no holes ([`missing_checkpoint`]), no checkpoint covers an
//! index past the end of the chain ([`truncated_chain`]), and a missing or unchained event the other
//! side still has was moved in the log ([`moved`]).

use super::chain::{CanonicalFields, ChainHash, link as link_hash, write_canonical_fields};
use super::checkpoint::{CheckpointError, SignedCheckpoint, describe_failure};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// A place in the log: (transaction id, global position), the order of the log and of the chain.
pub type Key = (u64, i64);

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

/// A chain row as stored, not decoded yet.
#[derive(Debug, Clone)]
pub struct StoredLink {
    /// Its index (1, 2, … without holes).
    pub chain_index: i64,
    /// The global position of the event it chains.
    pub global_position: i64,
    /// That event's transaction id as it was chained.
    pub transaction_id: i64,
    /// The chain hash after that event (hex).
    pub hash: String,
}

impl StoredLink {
    /// Its place in the log.
    pub fn key(&self) -> Key {
        (
            u64::try_from(self.transaction_id).unwrap_or(u64::MAX),
            self.global_position,
        )
    }
}

/// An event as read from the events table, not decoded yet.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its global position.
    pub global_position: i64,
    /// Its transaction id (0 on SQLite, whose log is ordered by position alone).
    pub transaction_id: u64,
    /// `Rule`, `Team`, …
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its sequence within the aggregate.
    pub sequence: i64,
    /// The event's type.
    pub event_type: String,
    /// The event's version.
    pub event_version: String,
    /// The payload as stored (JSON text).
    pub payload: String,
    /// The metadata as stored (JSON text).
    pub metadata: String,
    /// When it was recorded, or why the stored time is not one.
    pub recorded_at: Result<DateTime<Utc>, String>,
}

impl StoredEvent {
    /// Its place in the log.
    pub fn key(&self) -> Key {
        (self.transaction_id, self.global_position)
    }
}

/// Consecutive chain rows and every event of the log between the key of the row before the first
/// and the key of the last (whether chained or not).
#[derive(Debug, Clone, Default)]
pub struct Stretch {
    /// The chain rows, in index order.
    pub links: Vec<StoredLink>,
    /// The events, in log order.
    pub events: Vec<StoredEvent>,
}

/// An event's canonical bytes, or why it could not be read.
pub type Prepared = Result<Vec<u8>, String>;

/// `Rule 5f0c7a36…/3`.
pub fn describe(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    let short: String = aggregate_id.chars().take(8).collect();
    let ellipsis = if aggregate_id.chars().count() > 8 {
        "…"
    } else {
        ""
    };
    format!("{aggregate_type} {short}{ellipsis}/{sequence}")
}

/// Decodes a stored event and writes its canonical bytes.
pub fn prepare(raw: &StoredEvent) -> Prepared {
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

/// A walk along the chain: where it is and what it has verified.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The chain index the next row must have.
    pub expected: i64,
    /// The chain hash before it.
    pub previous: ChainHash,
    /// The checkpoints still ahead, by chain index.
    pub checkpoints: BTreeMap<i64, SignedCheckpoint>,
    /// The key every checkpoint must be signed with (None: each one's own).
    pub trusted: Option<[u8; 32]>,
    /// Events verified.
    pub verified: u64,
    /// The log key of the last chain row verified (the start when none).
    pub last_key: Key,
    /// Its index.
    pub last_index: i64,
    /// The hash there.
    pub last_hash: ChainHash,
    /// Checkpoints verified.
    pub checkpoints_verified: u64,
    /// The last of them.
    pub last_checkpoint: Option<i64>,
}

impl Walk {
    /// A walk from chain index `from`, after the row with `previous` hash at log key `start`.
    pub fn new(
        from: i64,
        previous: ChainHash,
        start: Key,
        checkpoints: BTreeMap<i64, SignedCheckpoint>,
        trusted: Option<[u8; 32]>,
    ) -> Walk {
        Walk {
            expected: from,
            previous,
            checkpoints,
            trusted,
            verified: 0,
            last_key: start,
            last_index: from - 1,
            last_hash: previous,
            checkpoints_verified: 0,
            last_checkpoint: None,
        }
    }

    /// Merges a stretch's chain rows with its events (`prepared` holds the events' canonical bytes, in
    /// the same order); answers the first break.
    pub fn check(&mut self, stretch: &Stretch, prepared: Vec<Prepared>) -> Option<Break> {
        let mut events = stretch.events.iter().zip(prepared).peekable();
        for link in &stretch.links {
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
            if let Some(broken) = self.check_link(link, matched) {
                return Some(broken);
            }
        }
        // Events sort at most up to the stretch's last chain row, so none are left; one would be
        // unchained.
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
        &mut self,
        link: &StoredLink,
        event: Option<(&StoredEvent, Prepared)>,
    ) -> Option<Break> {
        let at = |kind, message: String| Break {
            kind,
            chain_index: Some(link.chain_index),
            global_position: Some(link.global_position),
            checkpoint: None,
            message,
        };
        if link.chain_index != self.expected {
            return Some(at(
                BreakKind::ChainGap,
                format!(
                    "chain row {} is missing: the chain jumps from {} to {}",
                    self.expected,
                    self.expected - 1,
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
        let computed = link_hash(&self.previous, &canonical);
        if computed != recorded {
            return Some(at(
                BreakKind::ContentChanged,
                format!(
                    "event at position {} ({what}) does not match the chain: its content changed since it was chained",
                    link.global_position
                ),
            ));
        }
        if let Some(checkpoint) = self.checkpoints.get(&link.chain_index) {
            if let Err(error) = checkpoint.verify(self.trusted.as_ref()) {
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
            self.checkpoints_verified += 1;
            self.last_checkpoint = Some(checkpoint.number);
        }
        self.previous = computed;
        self.expected += 1;
        self.verified += 1;
        self.last_key = link.key();
        self.last_index = link.chain_index;
        self.last_hash = computed;
        None
    }
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

/// The first hole in the checkpoints' numbers (in number order, from 1): a removed checkpoint would
/// hide a rewrite before it.
pub fn missing_checkpoint(checkpoints: &[SignedCheckpoint]) -> Option<Break> {
    (1_i64..)
        .zip(checkpoints)
        .find(|(expected, checkpoint)| checkpoint.number != *expected)
        .map(|(expected, checkpoint)| Break {
            kind: BreakKind::MissingCheckpoint,
            chain_index: None,
            global_position: None,
            checkpoint: Some(expected),
            message: format!(
                "checkpoint {expected} is missing: checkpoints jump from {} to {}",
                expected - 1,
                checkpoint.number
            ),
        })
}

/// A checkpoint past `last_index`, the end of the chain: chain rows (and the events with them) were
/// cut off the tail.
pub fn truncated_chain(checkpoints: &[SignedCheckpoint], last_index: i64) -> Option<Break> {
    checkpoints
        .iter()
        .find(|c| c.chain_index > last_index)
        .map(|beyond| Break {
            kind: BreakKind::TruncatedChain,
            chain_index: Some(beyond.chain_index),
            global_position: Some(beyond.global_position),
            checkpoint: Some(beyond.number),
            message: format!(
                "checkpoint {} covers chain index {} (event at position {}), but the chain ends at {}: its tail was removed",
                beyond.number, beyond.chain_index, beyond.global_position, last_index
            ),
        })
}

/// A missing event the log still has at its position, or an unchained one the chain still names: it
/// was moved in the log (its transaction changed). Other breaks are answered as they are.
pub fn moved(broken: Break) -> Break {
    let Some(position) = broken.global_position else {
        return broken;
    };
    if !matches!(
        broken.kind,
        BreakKind::MissingEvent | BreakKind::UnchainedEvent
    ) {
        return broken;
    }
    Break {
        kind: BreakKind::MovedEvent,
        message: format!(
            "event at position {position} was moved in the log: its transaction is not the one it was chained in"
        ),
        ..broken
    }
}

#[cfg(test)]
mod tests;
