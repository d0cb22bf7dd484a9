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

    /// Up to `limit` events committed after `after` that match `filter`, in commit order.
    ///
    /// The same guarantee as [`EventLog::read_all`]: the answer is the matching part of a prefix of the
    /// log, so a reader resuming from the checkpoint of the last event it got never skips a matching
    /// event. The default scans [`EventLog::read_all`]; stores override it with a query.
    ///
    /// # Errors
    /// As [`EventLog::read_all`].
    async fn read_filtered(
        &self,
        after: Checkpoint,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventLogError> {
        let mut found = Vec::new();
        let mut cursor = after;
        while found.len() < limit {
            let page = self.read_all(cursor, SCAN_PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = last.checkpoint();
            found.extend(page.into_iter().filter(|e| filter.matches(e)));
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Every committed event of one aggregate, in sequence order (empty when the aggregate does not
    /// exist). Unlike the global log this reads the aggregate's own stream, as loading it for a command
    /// does: the newest committed event is always there.
    ///
    /// # Errors
    /// As [`EventLog::read_all`].
    async fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, EventLogError> {
        let filter = LogFilter {
            aggregate_types: vec![aggregate_type.to_owned()],
            aggregate_id: Some(aggregate_id.to_owned()),
            ..LogFilter::default()
        };
        let mut events = Vec::new();
        loop {
            let after = events
                .last()
                .map_or(Checkpoint::START, RecordedEvent::checkpoint);
            let page = self.read_filtered(after, &filter, SCAN_PAGE).await?;
            if page.is_empty() {
                break;
            }
            events.extend(page);
        }
        events.sort_by_key(|e| e.sequence);
        Ok(events)
    }

    /// The global position of the event committed last (the largest position), if any: where "from now
    /// on" starts. The default scans the readable log.
    ///
    /// # Errors
    /// As [`EventLog::read_all`].
    async fn last_position(&self) -> Result<Option<i64>, EventLogError> {
        let mut after = Checkpoint::START;
        let mut last = None;
        loop {
            let page = self.read_all(after, SCAN_PAGE).await?;
            let Some(end) = page.last() else {
                return Ok(last);
            };
            after = end.checkpoint();
            last = page.iter().map(|e| e.global_position).max().max(last);
        }
    }

    /// The committed event at global position `position`, if there is one.
    ///
    /// # Errors
    /// As [`EventLog::read_all`].
    async fn event_at(&self, position: i64) -> Result<Option<RecordedEvent>, EventLogError>;
}

/// How many events the default scans of [`EventLog`] read per page.
const SCAN_PAGE: usize = 1000;

/// Which events of the log to read: every field that is set must match (an empty list matches all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only events of these aggregate types (`Rule`, `Team`, …).
    pub aggregate_types: Vec<String>,
    /// Only events of the aggregate with this id.
    pub aggregate_id: Option<String>,
    /// Only events whose metadata names this actor (`user:<id>`, `agent:<id>`, `system:<reason>`).
    pub actor: Option<String>,
    /// Only events of these types (`RuleSubmitted`, …).
    pub event_types: Vec<String>,
    /// Only events recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded at or before this time.
    pub until: Option<DateTime<Utc>>,
}

impl LogFilter {
    /// Whether `event` matches (the definition the stores' queries implement).
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.aggregate_types.is_empty() || self.aggregate_types.contains(&event.aggregate_type))
            && self
                .aggregate_id
                .as_ref()
                .is_none_or(|id| *id == event.aggregate_id)
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| event.metadata["actor"].as_str() == Some(actor.as_str()))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self.since.is_none_or(|since| event.recorded_at >= since)
            && self.until.is_none_or(|until| event.recorded_at <= until)
    }

    /// Whether the filter lets every event through.
    pub fn is_empty(&self) -> bool {
        *self == LogFilter::default()
    }
}

/// A point in the log's history, for reading the past "as of" it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogBound {
    /// Every event up to and including the one at this checkpoint, in commit order.
    Through(Checkpoint),
    /// Every event of the longest prefix of the log (in commit order) recorded at or before this time.
    RecordedBy(DateTime<Utc>),
}

impl LogBound {
    /// Whether `event`, read in commit order, is past the bound (it and everything after it are left
    /// out).
    pub fn excludes(&self, event: &RecordedEvent) -> bool {
        match self {
            LogBound::Through(checkpoint) => event.checkpoint() > *checkpoint,
            LogBound::RecordedBy(time) => event.recorded_at > *time,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64, aggregate_type: &str, event_type: &str, actor: &str) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            transaction_id: 0,
            aggregate_type: aggregate_type.into(),
            aggregate_id: format!("id-{position}"),
            sequence: 1,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({}),
            metadata: serde_json::json!({"actor": actor}),
            recorded_at: DateTime::from_timestamp(1_800_000_000 + position, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn a_filter_matches_only_when_every_set_field_matches() {
        let e = event(5, "Rule", "RuleSubmitted", "user:a");
        assert!(LogFilter::default().matches(&e));
        let only = |f: LogFilter| f.matches(&e);
        assert!(only(LogFilter {
            aggregate_types: vec!["Team".into(), "Rule".into()],
            ..LogFilter::default()
        }));
        assert!(!only(LogFilter {
            aggregate_types: vec!["Team".into()],
            ..LogFilter::default()
        }));
        assert!(only(LogFilter {
            aggregate_id: Some("id-5".into()),
            actor: Some("user:a".into()),
            ..LogFilter::default()
        }));
        assert!(!only(LogFilter {
            actor: Some("user:b".into()),
            ..LogFilter::default()
        }));
        assert!(!only(LogFilter {
            event_types: vec!["RuleDrafted".into()],
            ..LogFilter::default()
        }));
        let at = e.recorded_at;
        assert!(only(LogFilter {
            since: Some(at),
            until: Some(at),
            ..LogFilter::default()
        }));
        assert!(!only(LogFilter {
            since: Some(at + chrono::Duration::milliseconds(1)),
            ..LogFilter::default()
        }));
        assert!(!only(LogFilter {
            until: Some(at - chrono::Duration::milliseconds(1)),
            ..LogFilter::default()
        }));
    }

    #[test]
    fn a_bound_excludes_what_comes_after_it() {
        let e = event(5, "Rule", "RuleSubmitted", "user:a");
        assert!(!LogBound::Through(e.checkpoint()).excludes(&e));
        assert!(
            LogBound::Through(Checkpoint {
                transaction_id: 0,
                position: 4
            })
            .excludes(&e)
        );
        assert!(!LogBound::RecordedBy(e.recorded_at).excludes(&e));
        assert!(LogBound::RecordedBy(e.recorded_at - chrono::Duration::seconds(1)).excludes(&e));
    }
}
