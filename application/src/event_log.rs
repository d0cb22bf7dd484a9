//! The global log: every event of every aggregate, in commit order.
//!
//! postgres-es and sqlite-es only read one aggregate at a time, ordered by its own sequence. Projections,
//! the relay and auditors need the whole history in the order it was committed, never skipping an event
//! that committed late. This port is that reader; the stores in `edict-infrastructure` implement it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A place in the global log. Reading resumes strictly after it.
///
/// On PostgreSQL it is the pair (transaction id, global position): the log is ordered by the appending
/// transaction first, so an event that committed late but took an early position is still read. On
/// SQLite, which has a single writer, the transaction id is always 0 and the position alone orders the log.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Checkpoint {
    /// The appending transaction's id (`xid8` on PostgreSQL; 0 on SQLite).
    pub transaction_id: u64,
    /// The event's global position (unique, increasing in insertion order; may have holes).
    pub position: i64,
}

impl Checkpoint {
    /// The checkpoint before the first event.
    pub const START: Checkpoint = Checkpoint {
        transaction_id: 0,
        position: 0,
    };
}

/// One stored event as the global log returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique, increasing in insertion order (not in commit order on PostgreSQL).
    pub global_position: i64,
    /// The appending transaction (0 on SQLite).
    pub transaction_id: u64,
    /// `Rule`, `Team`, `ChangeRequest`, `User` or `Agent`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The event's sequence within its aggregate, from 1.
    pub sequence: i64,
    /// The fixed event type string (for example `RuleSubmitted`).
    pub event_type: String,
    /// The payload's schema version (for example `1.0`).
    pub event_version: String,
    /// The serialized domain event, as cqrs-es stored it.
    pub payload: serde_json::Value,
    /// The event's metadata (see [`crate::metadata::Metadata`]).
    pub metadata: serde_json::Value,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The checkpoint just after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            position: self.global_position,
        }
    }
}

/// Why the global log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// The database could not be reached or answered with an error.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be decoded.
    #[error("corrupt event at position {position}: {reason}")]
    Corrupt {
        /// The global position of the row.
        position: i64,
        /// What was wrong with it.
        reason: String,
    },
}

/// Reads the global log in commit order.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Up to `limit` events committed after `after`, in commit order.
    ///
    /// Never returns an event while an earlier-ordered one may still commit: a reader that resumes from
    /// the checkpoint of the last event it got sees every event exactly once.
    ///
    /// # Errors
    /// [`EventLogError::Unavailable`] when the store cannot be read, [`EventLogError::Corrupt`] when a
    /// row cannot be decoded.
    async fn read_all(
        &self,
        after: Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventLogError>;

    /// Checks that the log can be read (readiness).
    ///
    /// # Errors
    /// [`EventLogError::Unavailable`] when it cannot.
    async fn ping(&self) -> Result<(), EventLogError> {
        self.read_all(Checkpoint::START, 0).await.map(drop)
    }

    /// The global position of one committed event, if it exists.
    ///
    /// # Errors
    /// [`EventLogError::Unavailable`] when the store cannot be read.
    async fn position_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<i64>, EventLogError>;
}

/// An event as the relay publishes it: the event and the checkpoint of the event before it in the log.
///
/// A consumer that has applied everything up to `previous` applies `event` next; one that is past
/// `event.checkpoint()` has seen it (a redelivery); one that is behind `previous` missed something and
/// catches up from the store first. Gaps are detected exactly, whatever the transport did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayedEvent {
    /// The checkpoint of the event just before this one in the global log ([`Checkpoint::START`] for
    /// the first).
    pub previous: Checkpoint,
    /// The event.
    pub event: RecordedEvent,
}
