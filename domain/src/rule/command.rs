//! What can be asked of a rule. Each command carries its actor and the time it is decided at; values
//! arrive already parsed, so the aggregate only checks rules that depend on its state.

use super::value::RuleSpec;
use crate::value::{Enforcement, Reason};
use crate::{RuleId, UserId};
use chrono::{DateTime, Utc};
use std::num::NonZeroU32;

/// A command on the [`Rule`](super::Rule) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr)]
pub enum RuleCommand {
    /// Creates the rule with revision 1 as a draft. On the organization layer it also sets the
    /// organization enforcement to block.
    DraftRule {
        /// The new rule's id, chosen by the caller.
        rule_id: RuleId,
        /// The first revision's spec.
        spec: RuleSpec,
        /// The author.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Replaces the spec of the working revision while it is draft or rejected; a rejected revision goes
    /// back to draft.
    EditDraft {
        /// The new spec (same layer).
        spec: RuleSpec,
        /// The editor, who then may not approve this revision.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Sends the working revision (draft or rejected) to review.
    SubmitRule {
        /// Who submits.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Records one approval of the pending revision; when the approvals reach `quorum` the revision comes
    /// into force in the same command.
    ApproveRule {
        /// The reviewer; must not have written the revision, and approves at most once.
        approver: UserId,
        /// The approvals the rule's layer needs, from [`ApprovalQuorum::for_layer`](super::ApprovalQuorum::for_layer).
        quorum: NonZeroU32,
        /// When.
        at: DateTime<Utc>,
    },
    /// Sends the pending revision back to its authors. The author may reject their own revision: that is
    /// how a submission is withdrawn for more work.
    RejectRule {
        /// The reviewer.
        reviewer: UserId,
        /// Why (required: a blank reason cannot be parsed).
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
    /// Opens revision n+1 as a draft of a rule whose revision n is in force; revision n stays in force
    /// until n+1 is approved.
    ReviseRule {
        /// The new revision's spec (same layer).
        spec: RuleSpec,
        /// The new revision's author.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Sets how an organization-layer rule is enforced on every team.
    SetOrganizationEnforcement {
        /// The enforcement.
        enforcement: Enforcement,
        /// Who sets it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Archives the rule; it accepts no command afterwards.
    ArchiveRule {
        /// Who archives it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}
