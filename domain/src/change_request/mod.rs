//! The ChangeRequest aggregate: a developer's edit of a managed section under temporary enforcement,
//! reported by their agent, and what became of it.
//!
//! ```text
//! pending ─approve─► approved
//!    │ ├──reject──► rejected ──┐
//!    │ ├─timeout──► auto_reverted ─┴─request─► exception_requested ─grant─► exception_granted
//!    │ └─withdraw─► withdrawn                          ▲            └─deny──► exception_denied
//!    └─amend (newer edit, stays pending)               └── request again after a denial or an expiry
//! ```
//!
//! Nobody decides on their own change: the developer who made it can neither approve, reject, grant nor
//! deny. Whether the decider is a team admin of the team is checked by the application.
//!
//! Layout: `command.rs`, `event.rs` (with golden JSON tests), `error.rs`, `value.rs` (file path, diff,
//! report id, status, decision, exception records), `decide.rs` (the decisions: pure, synchronous),
//! `tests.rs`. This file holds the state, its accessors and `apply`.

mod command;
mod decide;
mod error;
mod event;
mod value;

#[cfg(test)]
mod tests;

pub use command::ChangeRequestCommand;
pub use error::ChangeRequestError;
pub use event::ChangeRequestEvent;
pub use value::{
    ChangeRequestStatus, Decision, Diff, ExceptionKind, ExceptionRequest, ExceptionResolution,
    FilePath, ReportId,
};

use crate::value::{Layer, Sha256Hex};
use crate::{AgentId, ChangeRequestId, RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A change request. `Default` is a change request that does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequest {
    id: Option<ChangeRequestId>,
    agent: Option<AgentId>,
    user: Option<UserId>,
    team: Option<TeamId>,
    rule: Option<RuleId>,
    file: Option<FilePath>,
    layer: Option<Layer>,
    original_hash: Option<Sha256Hex>,
    new_hash: Option<Sha256Hex>,
    diff: Option<Diff>,
    timeout_at: Option<DateTime<Utc>>,
    opened_at: Option<DateTime<Utc>>,
    report_ids: Vec<ReportId>,
    status: Option<ChangeRequestStatus>,
    decision: Option<Decision>,
    exceptions: Vec<ExceptionRequest>,
    version: u64,
}

impl ChangeRequest {
    /// The change request's id; `None` while it does not exist.
    pub fn id(&self) -> Option<ChangeRequestId> {
        self.id
    }

    /// Whether the change request exists.
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The reporting agent.
    pub fn agent(&self) -> Option<AgentId> {
        self.agent
    }

    /// The developer who made the change (the requester).
    pub fn user(&self) -> Option<UserId> {
        self.user
    }

    /// The team whose rule set the edited section belongs to.
    pub fn team(&self) -> Option<TeamId> {
        self.team
    }

    /// The rule whose text was edited.
    pub fn rule(&self) -> Option<RuleId> {
        self.rule
    }

    /// The edited file.
    pub fn file(&self) -> Option<&FilePath> {
        self.file.as_ref()
    }

    /// The layer of the edited section.
    pub fn layer(&self) -> Option<Layer> {
        self.layer
    }

    /// The hash of the section as Edict wrote it (what a revert restores).
    pub fn original_hash(&self) -> Option<&Sha256Hex> {
        self.original_hash.as_ref()
    }

    /// The hash of the section as (last) edited.
    pub fn new_hash(&self) -> Option<&Sha256Hex> {
        self.new_hash.as_ref()
    }

    /// The (last reported) edit.
    pub fn diff(&self) -> Option<&Diff> {
        self.diff.as_ref()
    }

    /// When the change is reverted if nobody decides.
    pub fn timeout_at(&self) -> Option<DateTime<Utc>> {
        self.timeout_at
    }

    /// When the change request was opened.
    pub fn opened_at(&self) -> Option<DateTime<Utc>> {
        self.opened_at
    }

    /// The ids of the agent reports folded into this change request, oldest first.
    pub fn report_ids(&self) -> &[ReportId] {
        &self.report_ids
    }

    /// Where the change request is in its life; `None` while it does not exist.
    pub fn status(&self) -> Option<ChangeRequestStatus> {
        self.status
    }

    /// How the pending phase ended (approval, rejection, automatic revert or withdrawal), if it has.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// Every exception requested, oldest first.
    pub fn exceptions(&self) -> &[ExceptionRequest] {
        &self.exceptions
    }

    /// The latest exception request, if any.
    pub fn exception(&self) -> Option<&ExceptionRequest> {
        self.exceptions.last()
    }

    /// Whether a granted exception lets the change stand at `at`: granted, and either permanent or not yet
    /// expired.
    pub fn exception_active(&self, at: DateTime<Utc>) -> bool {
        self.status == Some(ChangeRequestStatus::ExceptionGranted)
            && matches!(
                self.exception().and_then(|e| e.resolution.as_ref()),
                Some(ExceptionResolution::Granted { until, .. }) if until.is_none_or(|until| at < until)
            )
    }

    fn decided(&mut self, status: ChangeRequestStatus, decision: Decision) {
        self.status = Some(status);
        self.decision = Some(decision);
    }

    fn resolve_exception(&mut self, status: ChangeRequestStatus, resolution: ExceptionResolution) {
        self.status = Some(status);
        if let Some(exception) = self.exceptions.last_mut() {
            exception.resolution = Some(resolution);
        }
    }
}

aggregate!(
    ChangeRequest,
    ChangeRequestCommand,
    ChangeRequestEvent,
    ChangeRequestError,
    std::convert::identity
);

impl ChangeRequest {
    fn evolve(&mut self, event: ChangeRequestEvent) {
        use ChangeRequestEvent as Ev;
        use ChangeRequestStatus as S;

        match event {
            Ev::ChangeRequestOpened {
                change_request_id,
                agent,
                user,
                team,
                rule,
                file,
                layer,
                original_hash,
                new_hash,
                diff,
                timeout_at,
                report_id,
                at,
            } => {
                self.id = Some(change_request_id);
                self.agent = Some(agent);
                self.user = Some(user);
                self.team = Some(team);
                self.rule = Some(rule);
                self.file = Some(file);
                self.layer = Some(layer);
                self.original_hash = Some(original_hash);
                self.new_hash = Some(new_hash);
                self.diff = Some(diff);
                self.timeout_at = Some(timeout_at);
                self.opened_at = Some(at);
                self.report_ids = vec![report_id];
                self.status = Some(S::Pending);
            }
            Ev::ChangeRequestAmended {
                new_hash,
                diff,
                report_id,
                ..
            } => {
                self.new_hash = Some(new_hash);
                self.diff = Some(diff);
                self.report_ids.push(report_id);
            }
            Ev::ChangeApproved { by, at, .. } => {
                let decision = Decision {
                    by: Some(by),
                    reason: None,
                    at,
                };
                self.decided(S::Approved, decision);
            }
            Ev::ChangeRejected { by, reason, at, .. } => {
                let decision = Decision {
                    by: Some(by),
                    reason: Some(reason),
                    at,
                };
                self.decided(S::Rejected, decision);
            }
            Ev::ChangeAutoReverted { at, .. } => {
                let decision = Decision {
                    by: None,
                    reason: None,
                    at,
                };
                self.decided(S::AutoReverted, decision);
            }
            Ev::ChangeRequestWithdrawn { by, at, .. } => {
                let decision = Decision {
                    by: Some(by),
                    reason: None,
                    at,
                };
                self.decided(S::Withdrawn, decision);
            }
            Ev::ExceptionRequested {
                exception_id,
                by,
                justification,
                kind,
                at,
                ..
            } => {
                self.status = Some(S::ExceptionRequested);
                self.exceptions.push(ExceptionRequest {
                    id: exception_id,
                    requested_by: by,
                    justification,
                    kind,
                    requested_at: at,
                    resolution: None,
                });
            }
            Ev::ExceptionGranted { by, until, at, .. } => {
                let resolution = ExceptionResolution::Granted { by, until, at };
                self.resolve_exception(S::ExceptionGranted, resolution);
            }
            Ev::ExceptionDenied { by, reason, at, .. } => {
                let resolution = ExceptionResolution::Denied { by, reason, at };
                self.resolve_exception(S::ExceptionDenied, resolution);
            }
        }
    }
}
