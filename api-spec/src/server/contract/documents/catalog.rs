//! The rule catalog's documents: a rule's entry, its revisions and how each was decided.

use super::{DocumentFreshness, Timestamp};
use crate::server::rules::{EnforcementDto, LayerDto};
use poem_openapi::{Enum, Object};

/// Where a rule stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RuleStatusDto {
    /// Its working revision is being written.
    Draft,
    /// Its working revision is under review.
    Pending,
    /// A revision is in force and none is being worked on.
    Approved,
    /// Its working revision was sent back.
    Rejected,
    /// It accepts no further change.
    Archived,
}

/// Where one revision of a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RevisionStateDto {
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

/// What a revision says, as written.
#[derive(Debug, Clone, Object)]
pub struct RevisionSpec {
    /// The rule's name.
    pub name: String,
    /// What the rule is for.
    #[oai(default)]
    pub description: String,
    /// The managed section.
    pub layer: LayerDto,
    /// The Markdown rendered into the managed section.
    pub content: String,
    /// The heading it is rendered under (null: the general group).
    #[oai(default, nullable)]
    pub category: Option<String>,
    /// Higher renders first within a category.
    #[oai(default)]
    pub priority: i32,
    /// Lowercase tags, sorted.
    #[oai(default)]
    pub tags: Vec<String>,
    /// Path globs a project-layer rule applies to (empty: the whole project).
    #[oai(default)]
    pub triggers: Vec<String>,
}

/// An approval of a revision in review.
#[derive(Debug, Clone, Object)]
pub struct RevisionApproval {
    /// The approver.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// A reviewer sending a revision back.
#[derive(Debug, Clone, Object)]
pub struct RevisionRejection {
    /// The reviewer.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// One revision of a rule, for its history.
#[derive(Debug, Clone, Object)]
pub struct RevisionEntry {
    /// The revision number (1, 2, …).
    pub number: u32,
    /// The spec as last written (as approved, for an approved or superseded revision).
    pub spec: RevisionSpec,
    /// Where it stands.
    pub state: RevisionStateDto,
    /// Who opened it.
    pub author: String,
    /// Everyone else who edited it.
    pub editors: Vec<String>,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// Who submitted it last.
    #[oai(nullable)]
    pub submitted_by: Option<String>,
    /// When it was submitted last.
    #[oai(nullable)]
    pub submitted_at: Option<Timestamp>,
    /// The approvals of the current (or approving) review round, oldest first.
    pub approvals: Vec<RevisionApproval>,
    /// Every time it was sent back, oldest first.
    pub rejections: Vec<RevisionRejection>,
    /// Who approved it (in order), once approved.
    pub approvers: Vec<String>,
    /// When it came into force.
    #[oai(nullable)]
    pub approved_at: Option<Timestamp>,
    /// When a later revision replaced it.
    #[oai(nullable)]
    pub superseded_at: Option<Timestamp>,
}

/// A rule as the catalog lists it: its current revision's spec, flattened, and every revision.
#[derive(Debug, Clone, Object)]
pub struct RuleEntry {
    /// The rule.
    pub id: String,
    /// The status as a whole: `archived` once archived, else the working revision's state when there
    /// is one, else `approved`.
    pub status: RuleStatusDto,
    /// The layer, fixed for the rule's life.
    pub layer: LayerDto,
    /// Who drafted the rule.
    pub author: String,
    /// When it was drafted.
    pub created_at: Timestamp,
    /// When the last event about it happened.
    pub updated_at: Timestamp,
    /// The current revision's name (the working revision if any, else the approved one).
    pub name: String,
    /// The current revision's description.
    pub description: String,
    /// The current revision's Markdown content.
    pub content: String,
    /// The current revision's category.
    #[oai(nullable)]
    pub category: Option<String>,
    /// The current revision's priority.
    pub priority: i32,
    /// The current revision's tags, sorted.
    pub tags: Vec<String>,
    /// The current revision's path triggers.
    pub triggers: Vec<String>,
    /// The number of the approved revision in force, if any revision was ever approved.
    #[oai(nullable)]
    pub approved_revision: Option<u32>,
    /// The number of the revision being drafted or reviewed, if any.
    #[oai(nullable)]
    pub working_revision: Option<u32>,
    /// The state of that revision (`draft`, `pending` or `rejected`).
    #[oai(nullable)]
    pub working_state: Option<RevisionStateDto>,
    /// How an organization rule is enforced on every team (null on the other layers).
    #[oai(nullable)]
    pub organization_enforcement: Option<EnforcementDto>,
    /// Whether the rule is archived.
    pub archived: bool,
    /// When it was archived.
    #[oai(nullable)]
    pub archived_at: Option<Timestamp>,
    /// The rule's version (send as `If-Match`).
    pub version: u64,
    /// Every revision, oldest first.
    pub revisions: Vec<RevisionEntry>,
}

/// A rule's catalog entry, with the freshness of the catalog that answered.
#[derive(Debug, Clone, Object)]
pub struct RuleEntryFresh {
    /// The entry.
    #[oai(flatten)]
    pub entry: RuleEntry,
    /// How fresh the catalog is.
    pub freshness: DocumentFreshness,
}
