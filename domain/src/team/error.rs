//! Why a team command was refused.

use crate::{RuleId, UserId};

/// A team command broke one of the team's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeamError {
    /// The team does not exist.
    #[error("team not found")]
    NotFound,
    /// `CreateTeam` on a team that already exists.
    #[error("team already exists")]
    AlreadyExists,
    /// The team is archived and accepts no command.
    #[error("team is archived")]
    Archived,
    /// `AddMember` for a user who is already a member.
    #[error("user {user} is already a member")]
    AlreadyMember {
        /// The user.
        user: UserId,
    },
    /// A member command for a user who is not a member.
    #[error("user {user} is not a member")]
    NotAMember {
        /// The user.
        user: UserId,
    },
    /// `AttachRule` with an organization-layer rule: those apply to every team through their
    /// organization enforcement, including teams created later.
    #[error("organization rules apply to all teams and are not attached")]
    OrganizationRulesApplyToAllTeams,
    /// `AttachRule` for a rule that is already attached.
    #[error("rule {rule_id} is already attached")]
    AlreadyAttached {
        /// The rule.
        rule_id: RuleId,
    },
    /// A command about an attachment that does not exist.
    #[error("rule {rule_id} is not attached")]
    NotAttached {
        /// The rule.
        rule_id: RuleId,
    },
}
