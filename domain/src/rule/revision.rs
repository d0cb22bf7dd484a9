//! The revisions of a rule as the aggregate holds them: at most one *working* revision (being drafted,
//! reviewed, or sent back) and at most one *approved* revision in force, plus the rule's overall status.

use super::value::RuleSpec;
use crate::UserId;
use crate::value::{Reason, string_enum};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

string_enum! {
    /// The status of a rule as a whole, as the library lists it:
    ///
    /// - `archived` once the rule is archived, whatever else it has;
    /// - otherwise the state of its working revision (`draft`, `pending` or `rejected`) when it has one;
    /// - otherwise `approved` (its approved revision is in force and nothing is being changed).
    ///
    /// So a rule whose revision 3 is in force while revision 4 is drafted is `draft`; whether some revision
    /// is in force is [`Rule::approved`](super::Rule::approved).
    pub enum RuleStatus as "status" {
        /// The working revision is being written.
        Draft => "draft",
        /// The working revision awaits approvals.
        Pending => "pending",
        /// An approved revision is in force and no other revision is open.
        Approved => "approved",
        /// The working revision was sent back by a reviewer.
        Rejected => "rejected",
        /// The rule is archived and accepts no further command.
        Archived => "archived",
    }
}

/// One reviewer's approval of a pending revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub by: UserId,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where a working revision is in review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WorkingState {
    /// Being written; editable.
    Draft,
    /// Submitted and collecting approvals; not editable.
    Pending {
        /// Who submitted it.
        submitted_by: UserId,
        /// When it was submitted.
        submitted_at: DateTime<Utc>,
        /// The approvals recorded since the submission, oldest first.
        approvals: Vec<Approval>,
    },
    /// Sent back by a reviewer; editable, and can be submitted again. Approvals from the previous round are
    /// gone: a resubmission is reviewed afresh.
    Rejected {
        /// Who rejected it.
        by: UserId,
        /// Why.
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
}

/// The revision being drafted or reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingRevision {
    pub(super) number: u32,
    pub(super) spec: RuleSpec,
    pub(super) author: UserId,
    pub(super) editors: BTreeSet<UserId>,
    pub(super) opened_at: DateTime<Utc>,
    #[serde(flatten)]
    pub(super) state: WorkingState,
}

impl WorkingRevision {
    /// The revision number (1 for the first draft, then n+1 for each revision opened).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The spec as currently written.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// Who opened the revision (drafted the rule, or revised it).
    pub fn author(&self) -> UserId {
        self.author
    }

    /// Everyone else who edited the revision. Like the author, none of them may approve it.
    pub fn editors(&self) -> &BTreeSet<UserId> {
        &self.editors
    }

    /// Whether `user` wrote any of this revision (its author or one of its editors).
    pub fn is_written_by(&self, user: UserId) -> bool {
        self.author == user || self.editors.contains(&user)
    }

    /// When the revision was opened.
    pub fn opened_at(&self) -> DateTime<Utc> {
        self.opened_at
    }

    /// Where the revision is in review.
    pub fn state(&self) -> &WorkingState {
        &self.state
    }

    /// The approvals so far (empty unless pending).
    pub fn approvals(&self) -> &[Approval] {
        match &self.state {
            WorkingState::Pending { approvals, .. } => approvals,
            WorkingState::Draft | WorkingState::Rejected { .. } => &[],
        }
    }

    /// The revision's state as a [`RuleStatus`].
    pub fn status(&self) -> RuleStatus {
        match self.state {
            WorkingState::Draft => RuleStatus::Draft,
            WorkingState::Pending { .. } => RuleStatus::Pending,
            WorkingState::Rejected { .. } => RuleStatus::Rejected,
        }
    }
}

/// The revision in force: numbered and immutable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedRevision {
    pub(super) number: u32,
    pub(super) spec: RuleSpec,
    pub(super) author: UserId,
    pub(super) approvers: Vec<UserId>,
    pub(super) approved_at: DateTime<Utc>,
}

impl ApprovedRevision {
    /// The revision number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The spec in force.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// Who opened the revision.
    pub fn author(&self) -> UserId {
        self.author
    }

    /// Who approved it, in the order they approved.
    pub fn approvers(&self) -> &[UserId] {
        &self.approvers
    }

    /// When it came into force.
    pub fn approved_at(&self) -> DateTime<Utc> {
        self.approved_at
    }
}
