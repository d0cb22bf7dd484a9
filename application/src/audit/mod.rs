//! Tamper evidence and export: the hash chain over the global log, its signed checkpoints, and the log
//! exported with its hashes.
//!
//! - [`chain`]: the canonical bytes of an event and the chained SHA-256 (pure);
//! - [`checkpoint`]: signed checkpoints and the exact bytes an ed25519 signature covers (pure);
//! - [`links`]: the link checks of `edict audit verify` over stored chain rows and events (pure);
//! - [`offline`]: verifying an exported file line by line against signed checkpoints (pure);
//! - this module: the [`AuditTrail`] port (the chain and checkpoint tables an adapter keeps beside the
//!   log), the [`ExportReader`] that pages through the log with each event's hashes, and the use cases
//!   behind `GET /api/v1/audit/checkpoints` and `GET /api/v1/events/export`.
//!
//! The chain is written by the `audit` role (`edict serve`), checked by `edict audit verify`; see
//! `docs/adr/0006-hash-chain-and-signed-checkpoints.md` for what it proves and what it does not.

pub mod chain;
pub mod checkpoint;
pub mod links;
pub mod offline;

use crate::error::AppError;
use crate::event_log::{Checkpoint, EventLog, EventLogError, RecordedEvent};
use crate::principal::Principal;
use crate::service::Edict;
use async_trait::async_trait;
use chain::ChainHash;
use checkpoint::SignedCheckpoint;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// The largest page of checkpoints.
pub const MAX_CHECKPOINT_PAGE: usize = 500;
/// The page of checkpoints when none is asked for.
pub const DEFAULT_CHECKPOINT_PAGE: usize = 100;
/// Events read from the log per page of an export.
pub const EXPORT_PAGE: usize = 1000;

/// One event's place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLink {
    /// 1 for the first event of the log, then 2, … without holes.
    pub chain_index: i64,
    /// The event's global position.
    pub global_position: i64,
    /// The chain hash before it ([`chain::GENESIS`] for the first).
    pub previous_hash: ChainHash,
    /// The chain hash after it.
    pub hash: ChainHash,
}

/// Why the chain or checkpoint tables could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The database could not be reached or answered with an error.
    #[error("audit trail unavailable: {0}")]
    Unavailable(String),
    /// A stored row is not what the chain writer writes (a hash that is not hex, a negative index).
    #[error("corrupt audit row: {0}")]
    Corrupt(String),
}

impl From<EventLogError> for AuditError {
    fn from(error: EventLogError) -> Self {
        AuditError::Unavailable(error.to_string())
    }
}

impl From<AuditError> for AppError {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Unavailable(message) => AppError::Unavailable(message),
            AuditError::Corrupt(message) => AppError::Internal(message),
        }
    }
}

/// Reads the chain and its checkpoints (written by the chain writer of the `audit` role).
#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Up to `limit` checkpoints numbered above `after` (0 for the first), in number order.
    ///
    /// # Errors
    /// [`AuditError::Unavailable`] when the store cannot be read, [`AuditError::Corrupt`] for a row
    /// that does not decode.
    async fn checkpoints(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, AuditError>;

    /// The links of the events at `positions` that the chain has reached (in any order; positions it
    /// has not reached are left out).
    ///
    /// # Errors
    /// As [`AuditTrail::checkpoints`].
    async fn links(&self, positions: &[i64]) -> Result<Vec<ChainLink>, AuditError>;
}

/// One line of an export: the event as the log returns it, with its chain hashes once the chain has
/// reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedEvent {
    /// The event.
    #[serde(flatten)]
    pub event: RecordedEvent,
    /// Its index in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_index: Option<i64>,
    /// The chain hash before it (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    /// The chain hash after it (hex): `SHA-256(previous_hash || canonical bytes)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Which part of the log to export: events recorded in `[since, until]` (both optional, inclusive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportRange {
    /// Only events recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded at or before this time.
    pub until: Option<DateTime<Utc>>,
}

impl ExportRange {
    /// Whether `event` is in the range.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        self.since.is_none_or(|since| event.recorded_at >= since)
            && self.until.is_none_or(|until| event.recorded_at <= until)
    }
}

/// Pages through the log in commit order, attaching each event's chain hashes; never holds more than
/// one page.
pub struct ExportReader {
    log: Arc<dyn EventLog>,
    trail: Arc<dyn AuditTrail>,
    range: ExportRange,
    after: Checkpoint,
    page_size: usize,
    done: bool,
}

impl std::fmt::Debug for ExportReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportReader")
            .field("range", &self.range)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl ExportReader {
    /// A reader of `range` of `log`, with hashes from `trail`.
    pub fn new(
        log: Arc<dyn EventLog>,
        trail: Arc<dyn AuditTrail>,
        range: ExportRange,
    ) -> ExportReader {
        ExportReader {
            log,
            trail,
            range,
            after: Checkpoint::START,
            page_size: EXPORT_PAGE,
            done: false,
        }
    }

    /// The next events of the range (possibly none when a whole page of the log was outside it), or
    /// `None` at the end of the log.
    ///
    /// # Errors
    /// [`AuditError::Unavailable`] when the log or the chain cannot be read.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ExportedEvent>>, AuditError> {
        if self.done {
            return Ok(None);
        }
        let page = self.log.read_all(self.after, self.page_size).await?;
        let Some(last) = page.last() else {
            self.done = true;
            return Ok(None);
        };
        self.after = last.checkpoint();
        if page.len() < self.page_size {
            self.done = true;
        }
        let events: Vec<RecordedEvent> = page
            .into_iter()
            .filter(|event| self.range.includes(event))
            .collect();
        let positions: Vec<i64> = events.iter().map(|e| e.global_position).collect();
        let links: HashMap<i64, ChainLink> = if positions.is_empty() {
            HashMap::new()
        } else {
            self.trail
                .links(&positions)
                .await?
                .into_iter()
                .map(|link| (link.global_position, link))
                .collect()
        };
        Ok(Some(
            events
                .into_iter()
                .map(|event| {
                    let link = links.get(&event.global_position);
                    ExportedEvent {
                        chain_index: link.map(|l| l.chain_index),
                        previous_hash: link.map(|l| l.previous_hash.to_hex()),
                        hash: link.map(|l| l.hash.to_hex()),
                        event,
                    }
                })
                .collect(),
        ))
    }
}

/// A page of checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointPage {
    /// The checkpoints, in number order.
    pub items: Vec<SignedCheckpoint>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<String>,
}

impl Edict {
    /// Attaches the chain and checkpoint tables (the composition root does; without them the audit use
    /// cases answer 503).
    #[must_use]
    pub fn with_audit_trail(mut self, trail: Arc<dyn AuditTrail>) -> Edict {
        self.audit = Some(trail);
        self
    }

    fn audit_trail(
        &self,
        principal: &Principal,
        action: &str,
    ) -> Result<Arc<dyn AuditTrail>, AppError> {
        if !principal.can_read_all() {
            return Err(AppError::Forbidden(format!(
                "only an auditor or an org_admin may {action}"
            )));
        }
        self.audit
            .clone()
            .ok_or_else(|| AppError::Unavailable("the audit trail is not configured".into()))
    }

    /// The signed checkpoints, in number order, after the cursor `after`. Auditor or org_admin.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for anyone else, [`AppError::Invalid`] for a cursor that is not one,
    /// [`AppError::Unavailable`] when the store cannot be read.
    pub async fn audit_checkpoints(
        &self,
        principal: &Principal,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<CheckpointPage, AppError> {
        let trail = self.audit_trail(principal, "read the audit checkpoints")?;
        let after = match after {
            None => 0,
            Some(cursor) => cursor
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| AppError::invalid("after", "not a cursor of this list"))?,
        };
        let limit = limit
            .unwrap_or(DEFAULT_CHECKPOINT_PAGE)
            .clamp(1, MAX_CHECKPOINT_PAGE);
        let items = trail.checkpoints(after, limit).await?;
        let next = (items.len() == limit)
            .then(|| items.last().map(|c| c.number.to_string()))
            .flatten();
        Ok(CheckpointPage { items, next })
    }

    /// A reader of the log in `range`, with chain hashes. Auditor or org_admin.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for anyone else, [`AppError::Unavailable`] without an audit trail.
    pub fn export_events(
        &self,
        principal: &Principal,
        range: ExportRange,
    ) -> Result<ExportReader, AppError> {
        let trail = self.audit_trail(principal, "export the event log")?;
        Ok(ExportReader::new(self.log.clone(), trail, range))
    }
}
