//! Why a rule command was refused.

use crate::UserId;
use crate::value::Layer;

/// A rule command broke one of the rule's rules. Each variant is named after the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule does not exist.
    #[error("rule not found")]
    NotFound,
    /// `DraftRule` on a rule that already exists.
    #[error("rule already exists")]
    AlreadyExists,
    /// The rule is archived and accepts no command.
    #[error("rule is archived")]
    Archived,
    /// `EditDraft` without a working revision in draft or rejected (a pending revision is frozen; an
    /// approved one is revised with `ReviseRule`).
    #[error("rule has no draft or rejected revision to edit")]
    NotEditable,
    /// `SubmitRule` without a working revision in draft or rejected.
    #[error("rule has no draft or rejected revision to submit")]
    NotSubmittable,
    /// `ApproveRule` or `RejectRule` without a pending revision.
    #[error("rule has no revision pending review")]
    NotPending,
    /// The approver wrote (authored or edited) the revision.
    #[error("the author or an editor of a revision cannot approve it")]
    SelfApproval,
    /// The approver has already approved this revision.
    #[error("revision already approved by {approver}")]
    AlreadyApprovedBy {
        /// The approver.
        approver: UserId,
    },
    /// `ReviseRule` while a working revision is open (including a rule never approved yet).
    #[error("rule already has a revision open")]
    RevisionAlreadyOpen,
    /// `SetOrganizationEnforcement` on a team- or project-layer rule (those are enforced per team).
    #[error("only organization-layer rules have an organization enforcement")]
    NotOrganizationLayer,
    /// A revision's spec names another layer than the rule's.
    #[error("the layer of a rule cannot change from {from} to {to}")]
    LayerChanged {
        /// The rule's layer.
        from: Layer,
        /// The layer the spec asked for.
        to: Layer,
    },
    /// A spec on the organization or team layer has path triggers.
    #[error("only project-layer rules can have triggers")]
    TriggersOnlyForProjectLayer,
}
