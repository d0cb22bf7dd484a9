//! The change inbox's documents: change requests, their exceptions and decisions.

use super::Timestamp;
use crate::server::rules::LayerDto;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Enum, Object};

/// Where a change request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ChangeRequestStatusDto {
    /// Waiting for a decision; the change stands until its timeout.
    Pending,
    /// The change was accepted.
    Approved,
    /// The change was refused and reverted.
    Rejected,
    /// Nobody decided in time; the change was reverted.
    AutoReverted,
    /// The requester asked for an exception.
    ExceptionRequested,
    /// The exception was granted.
    ExceptionGranted,
    /// The exception was denied.
    ExceptionDenied,
    /// The requester withdrew it.
    Withdrawn,
}

/// How the pending phase of a change request ended.
#[derive(Debug, Clone, Object)]
pub struct ChangeDecision {
    /// Who decided (null for an automatic revert).
    #[oai(nullable)]
    pub by: Option<String>,
    /// Why (for a rejection).
    #[oai(nullable)]
    pub reason: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// The kind of an exception: `time_limited` (with `until`) or `permanent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ExceptionKindName {
    /// Until a time.
    TimeLimited,
    /// For good.
    Permanent,
}

/// What an exception asks for.
#[derive(Debug, Clone, Object)]
pub struct ExceptionKindEntry {
    /// `time_limited` or `permanent`.
    #[oai(rename = "type")]
    pub kind: ExceptionKindName,
    /// For `time_limited`: until when.
    #[oai(skip_serializing_if_is_none)]
    pub until: Option<Timestamp>,
}

/// The outcome of an exception request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ExceptionOutcome {
    /// The change may stand (until `until`, or for good when it is null).
    Granted,
    /// The change is reverted.
    Denied,
}

/// How an exception request was decided.
#[derive(Debug, Clone, Object)]
pub struct ExceptionResolutionEntry {
    /// `granted` or `denied`.
    pub outcome: ExceptionOutcome,
    /// Who decided.
    pub by: String,
    /// For `granted`: until when the change may stand (null: for good); absent for `denied`.
    #[oai(nullable)]
    pub until: MaybeUndefined<Timestamp>,
    /// For `denied`: why.
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// An exception asked for on a change request.
#[derive(Debug, Clone, Object)]
pub struct ExceptionEntry {
    /// The exception's id.
    pub id: String,
    /// Who asked.
    pub requested_by: String,
    /// Why the change should stand.
    pub justification: String,
    /// What was asked for.
    pub kind: ExceptionKindEntry,
    /// When.
    pub requested_at: Timestamp,
    /// The decision, once made.
    #[oai(nullable)]
    pub resolution: Option<ExceptionResolutionEntry>,
}

/// A change request as the inbox lists it.
#[derive(Debug, Clone, Object)]
pub struct ChangeRequestEntry {
    /// The change request.
    pub id: String,
    /// The agent that reported the edit.
    pub agent: String,
    /// The developer who made the edit (the requester).
    pub user: String,
    /// The team whose rule set the edited section belongs to.
    pub team: String,
    /// The rule whose text was edited.
    pub rule: String,
    /// The edited file, as the agent reported it.
    pub file: String,
    /// The layer of the edited section.
    pub layer: LayerDto,
    /// SHA-256 of the section as Edict wrote it (what a revert restores).
    pub original_hash: String,
    /// SHA-256 of the section as last edited.
    pub new_hash: String,
    /// The last reported edit, as a unified diff.
    pub diff: String,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// When the change is reverted if nobody decides.
    pub timeout_at: Timestamp,
    /// Where it is in its life.
    pub status: ChangeRequestStatusDto,
    /// How the pending phase ended, once it has.
    #[oai(nullable)]
    pub decision: Option<ChangeDecision>,
    /// Every exception asked for afterwards, oldest first.
    pub exceptions: Vec<ExceptionEntry>,
    /// The ids of the agent reports folded into it, oldest first.
    pub report_ids: Vec<String>,
    /// The change request's version (send as `If-Match`).
    pub version: u64,
    /// When the last event about it happened.
    pub updated_at: Timestamp,
}
