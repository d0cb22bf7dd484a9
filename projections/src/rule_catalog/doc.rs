//! The rule library's documents ([`RuleDoc`], one per rule, with its whole revision history) and the
//! filter the query layer applies to them.

use chrono::{DateTime, Utc};
use edict_domain::rule::{Approval, RuleSpec, RuleStatus};
use edict_domain::{Enforcement, Layer, RuleId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One rule of the library as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDoc {
    /// The rule.
    pub id: RuleId,
    /// The status as a whole, defined as the aggregate's `status()`: `archived` once archived, else the
    /// working revision's state (`draft`, `pending`, `rejected`) when there is one, else `approved`.
    pub status: RuleStatus,
    /// The layer, fixed for the rule's life.
    pub layer: Layer,
    /// Who drafted the rule.
    pub author: UserId,
    /// When it was drafted.
    pub created_at: DateTime<Utc>,
    /// When the last event about it happened (its `at`).
    pub updated_at: DateTime<Utc>,
    /// The current revision's name (the working revision if any, else the approved one).
    pub name: String,
    /// The current revision's description.
    pub description: String,
    /// The current revision's Markdown content.
    pub content: String,
    /// The current revision's category.
    pub category: Option<String>,
    /// The current revision's priority.
    pub priority: i32,
    /// The current revision's tags, sorted.
    pub tags: Vec<String>,
    /// The current revision's path triggers.
    pub triggers: Vec<String>,
    /// The number of the approved revision in force, if any revision was ever approved.
    pub approved_revision: Option<u32>,
    /// The number of the revision being drafted or reviewed, if any.
    pub working_revision: Option<u32>,
    /// The state of that revision (`draft`, `pending` or `rejected`).
    pub working_state: Option<RevisionState>,
    /// How an organization rule is enforced on every team (`None` on the other layers).
    pub organization_enforcement: Option<Enforcement>,
    /// Whether the rule is archived.
    pub archived: bool,
    /// When it was archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// The rule aggregate's version: the sequence of the last event applied.
    pub version: u64,
    /// Every revision, oldest first.
    pub revisions: Vec<RevisionDoc>,
}

/// Where one revision of a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionState {
    /// Being written.
    Draft,
    /// Submitted, collecting approvals.
    Pending,
    /// In force.
    Approved,
    /// Sent back by a reviewer (editable again).
    Rejected,
    /// Was in force until a later revision was approved.
    Superseded,
}

impl RevisionState {
    /// Whether the revision is the working one (draft, pending or rejected).
    pub fn is_working(self) -> bool {
        matches!(self, Self::Draft | Self::Pending | Self::Rejected)
    }
}

/// One revision of a rule, for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionDoc {
    /// The revision number (1, 2, …).
    pub number: u32,
    /// The spec as last written (as approved, for an approved or superseded revision).
    pub spec: RuleSpec,
    /// Where it stands.
    pub state: RevisionState,
    /// Who opened it.
    pub author: UserId,
    /// Everyone else who edited it.
    pub editors: BTreeSet<UserId>,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// Who submitted it last.
    pub submitted_by: Option<UserId>,
    /// When it was submitted last.
    pub submitted_at: Option<DateTime<Utc>>,
    /// The approvals of the current (or approving) review round, oldest first.
    pub approvals: Vec<Approval>,
    /// Every time it was sent back, oldest first.
    pub rejections: Vec<Rejection>,
    /// Who approved it (in order), once approved.
    pub approvers: Vec<UserId>,
    /// When it came into force.
    pub approved_at: Option<DateTime<Utc>>,
    /// When a later revision replaced it.
    pub superseded_at: Option<DateTime<Utc>>,
}

/// A reviewer sending a revision back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The reviewer.
    pub by: UserId,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the query layer filters the catalog by; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleFilter {
    /// Only rules with this status.
    pub status: Option<RuleStatus>,
    /// Only rules of this layer.
    pub layer: Option<Layer>,
    /// Only rules whose current revision has this tag (exactly).
    pub tag: Option<String>,
    /// Only rules whose current name, description, content or one of whose tags contains this text,
    /// case-insensitively.
    pub text: Option<String>,
}

/// Whether `doc` passes `filter`.
pub fn matches(doc: &RuleDoc, filter: &RuleFilter) -> bool {
    if filter.status.is_some_and(|s| s != doc.status) {
        return false;
    }
    if filter.layer.is_some_and(|l| l != doc.layer) {
        return false;
    }
    if let Some(tag) = &filter.tag
        && !doc.tags.iter().any(|t| t == tag)
    {
        return false;
    }
    if let Some(text) = &filter.text {
        let needle = text.to_lowercase();
        let found = [&doc.name, &doc.description, &doc.content]
            .into_iter()
            .chain(doc.tags.iter())
            .any(|hay| hay.to_lowercase().contains(&needle));
        if !found {
            return false;
        }
    }
    true
}
