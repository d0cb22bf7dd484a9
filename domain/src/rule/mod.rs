//! The Rule aggregate: one entry of the rule library, with numbered revisions.
//!
//! A rule has at most one *working* revision (draft, pending or rejected) and at most one *approved*
//! revision in force. Revision 1 is drafted, submitted, approved by a quorum of reviewers who did not write
//! it, and comes into force; later revisions are opened with `ReviseRule` while the approved one stays in
//! force until its successor is approved. The layer is fixed for the rule's life.
//!
//! Layout: `command.rs` (what can be asked), `event.rs` (what happened, with golden JSON tests),
//! `error.rs` (why a command was refused), `value.rs` (the parsed values of a spec, the quorum),
//! `revision.rs` (the working and approved revisions, the status), `decide.rs` (the decisions: pure,
//! synchronous), `tests.rs` (given/when/then). This file holds the state, its accessors and `apply`.

mod command;
mod decide;
mod error;
mod event;
mod revision;
mod value;

#[cfg(test)]
mod tests;

pub use command::RuleCommand;
pub use error::RuleError;
pub use event::RuleEvent;
pub use revision::{Approval, ApprovedRevision, RuleStatus, WorkingRevision, WorkingState};
pub use value::{
    ApprovalQuorum, Category, Description, PathGlob, RuleContent, RuleName, RuleSpec, Tag,
};

use crate::value::{Enforcement, Layer};
use crate::{RuleId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A rule of the library. `Default` is a rule that does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    id: Option<RuleId>,
    layer: Option<Layer>,
    author: Option<UserId>,
    created_at: Option<DateTime<Utc>>,
    approved: Option<ApprovedRevision>,
    working: Option<WorkingRevision>,
    organization_enforcement: Option<Enforcement>,
    archived_at: Option<DateTime<Utc>>,
    version: u64,
}

impl Rule {
    /// The rule's id; `None` while it does not exist.
    pub fn id(&self) -> Option<RuleId> {
        self.id
    }

    /// Whether the rule exists (archived rules exist).
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The rule's layer, fixed for its life.
    pub fn layer(&self) -> Option<Layer> {
        self.layer
    }

    /// Who drafted the rule.
    pub fn author(&self) -> Option<UserId> {
        self.author
    }

    /// When the rule was drafted.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    /// The rule's status as a whole (see [`RuleStatus`] for the definition); `None` while it does not
    /// exist.
    pub fn status(&self) -> Option<RuleStatus> {
        if !self.exists() {
            None
        } else if self.archived_at.is_some() {
            Some(RuleStatus::Archived)
        } else if let Some(working) = &self.working {
            Some(working.status())
        } else {
            Some(RuleStatus::Approved)
        }
    }

    /// The revision in force, if any revision was ever approved (kept after archiving, for the record).
    pub fn approved(&self) -> Option<&ApprovedRevision> {
        self.approved.as_ref()
    }

    /// The revision being drafted or reviewed, if any.
    pub fn working(&self) -> Option<&WorkingRevision> {
        self.working.as_ref()
    }

    /// How an organization-layer rule is enforced on every team (block from the draft on, until set
    /// otherwise); `None` for the other layers.
    pub fn organization_enforcement(&self) -> Option<Enforcement> {
        self.organization_enforcement
    }

    /// Whether the rule is archived.
    pub fn archived(&self) -> bool {
        self.archived_at.is_some()
    }

    /// When the rule was archived.
    pub fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.archived_at
    }
}

aggregate!(
    Rule,
    RuleCommand,
    RuleEvent,
    RuleError,
    std::convert::identity
);

impl Rule {
    fn evolve(&mut self, event: RuleEvent) {
        match event {
            RuleEvent::RuleDrafted {
                rule_id,
                revision,
                spec,
                by,
                at,
            } => {
                self.id = Some(rule_id);
                self.layer = Some(spec.layer);
                self.author = Some(by);
                self.created_at = Some(at);
                self.working = Some(new_working(revision, spec, by, at));
            }
            RuleEvent::RuleDraftEdited { spec, by, .. } => {
                if let Some(working) = &mut self.working {
                    working.spec = spec;
                    if by != working.author {
                        working.editors.insert(by);
                    }
                    working.state = WorkingState::Draft;
                }
            }
            RuleEvent::RuleSubmitted { by, at, .. } => {
                if let Some(working) = &mut self.working {
                    working.state = WorkingState::Pending {
                        submitted_by: by,
                        submitted_at: at,
                        approvals: Vec::new(),
                    };
                }
            }
            RuleEvent::RuleApprovalRecorded { approver, at, .. } => {
                if let Some(WorkingRevision {
                    state: WorkingState::Pending { approvals, .. },
                    ..
                }) = &mut self.working
                {
                    approvals.push(Approval { by: approver, at });
                }
            }
            RuleEvent::RuleRevisionApproved {
                revision,
                spec,
                approvers,
                at,
                ..
            } => {
                let author = self
                    .working
                    .take()
                    .map(|w| w.author)
                    .or(self.author)
                    .unwrap_or_default();
                self.approved = Some(ApprovedRevision {
                    number: revision,
                    spec,
                    author,
                    approvers,
                    approved_at: at,
                });
            }
            RuleEvent::RuleRejected {
                reviewer,
                reason,
                at,
                ..
            } => {
                if let Some(working) = &mut self.working {
                    working.state = WorkingState::Rejected {
                        by: reviewer,
                        reason,
                        at,
                    };
                }
            }
            RuleEvent::RuleRevisionOpened {
                revision,
                spec,
                by,
                at,
                ..
            } => {
                self.working = Some(new_working(revision, spec, by, at));
            }
            RuleEvent::OrganizationEnforcementSet { enforcement, .. } => {
                self.organization_enforcement = Some(enforcement);
            }
            RuleEvent::RuleArchived { at, .. } => {
                self.archived_at = Some(at);
            }
        }
    }
}

fn new_working(number: u32, spec: RuleSpec, author: UserId, at: DateTime<Utc>) -> WorkingRevision {
    WorkingRevision {
        number,
        spec,
        author,
        editors: BTreeSet::new(),
        opened_at: at,
        state: WorkingState::Draft,
    }
}
