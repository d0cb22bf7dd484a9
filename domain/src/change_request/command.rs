//! What can be asked of a change request. The application checks who may decide (a team admin of the
//! change request's team) before the command gets here; the aggregate checks everything that depends on
//! the change request itself, including that nobody decides on their own change.

use super::value::{Diff, ExceptionKind, FilePath, ReportId};
use crate::value::{Layer, Reason, Sha256Hex};
use crate::{AgentId, ChangeRequestId, ExceptionId, RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};

/// A command on the [`ChangeRequest`](super::ChangeRequest) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ChangeRequestCommand {
    /// Opens a change request from an agent's report of an edit to a managed section.
    OpenChangeRequest {
        /// The new change request's id, chosen by the caller.
        change_request_id: ChangeRequestId,
        /// The reporting agent.
        agent: AgentId,
        /// The developer whose machine the agent runs on (the requester).
        user: UserId,
        /// The team whose rule set the edited section belongs to.
        team: TeamId,
        /// The rule whose text was edited.
        rule: RuleId,
        /// The edited file.
        file: FilePath,
        /// The layer of the edited managed section.
        layer: Layer,
        /// The hash of the section as Edict wrote it.
        original_hash: Sha256Hex,
        /// The hash of the section as edited.
        new_hash: Sha256Hex,
        /// The edit as a unified diff.
        diff: Diff,
        /// When the change is reverted if nobody decides (from the rule's temporary timeout).
        timeout_at: DateTime<Utc>,
        /// The agent's id for the report.
        report_id: ReportId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Updates a pending change request with a newer edit of the same section. A report id already
    /// recorded is accepted without effect, so redelivered reports are harmless.
    AmendChangeRequest {
        /// The reporting agent (must be the one that opened it).
        by: AgentId,
        /// The hash of the section as now edited.
        new_hash: Sha256Hex,
        /// The whole edit as a unified diff.
        diff: Diff,
        /// The agent's id for this report.
        report_id: ReportId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Keeps the change.
    ApproveChange {
        /// The deciding team admin (not the requester).
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Reverts the change.
    RejectChange {
        /// The deciding team admin (not the requester).
        by: UserId,
        /// Why.
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
    /// Reverts the change because nobody decided in time (issued by the system).
    AutoRevert {
        /// When; must be at or after the timeout.
        at: DateTime<Utc>,
    },
    /// Asks to keep a rejected or reverted change anyway.
    RequestException {
        /// The new exception's id, chosen by the caller.
        exception_id: ExceptionId,
        /// The requester (the developer who made the change).
        by: UserId,
        /// Why the change should stand.
        justification: Reason,
        /// What is asked for.
        kind: ExceptionKind,
        /// When.
        at: DateTime<Utc>,
    },
    /// Grants the pending exception.
    GrantException {
        /// The deciding team admin (not the requester).
        by: UserId,
        /// When the exception ends (after `at`); `None` for a permanent one. It may differ from what was
        /// asked for.
        until: Option<DateTime<Utc>>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Refuses the pending exception.
    DenyException {
        /// The deciding team admin (not the requester).
        by: UserId,
        /// Why.
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
    /// Withdraws a pending change request (the developer gave up the change).
    Withdraw {
        /// The requester.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}
