//! What can be asked of a team. Whether the actor may do it (org admin, team admin) is checked by the
//! application before the command gets here.

use super::value::{TeamName, TeamRole};
use crate::value::{Enforcement, Layer};
use crate::{RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};

/// A command on the [`Team`](super::Team) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr)]
pub enum TeamCommand {
    /// Creates the team (without members: add them, team admins first).
    CreateTeam {
        /// The new team's id, chosen by the caller.
        team_id: TeamId,
        /// Its name.
        name: TeamName,
        /// Who creates it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Renames the team.
    RenameTeam {
        /// The new name.
        name: TeamName,
        /// Who renames it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Adds a user to the team.
    AddMember {
        /// The user.
        user: UserId,
        /// The role they get.
        role: TeamRole,
        /// Who adds them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Changes a member's role. Keeping at least one team admin is the caller's policy.
    ChangeMemberRole {
        /// The member.
        user: UserId,
        /// The new role.
        role: TeamRole,
        /// Who changes it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Removes a member.
    RemoveMember {
        /// The member.
        user: UserId,
        /// Who removes them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Attaches a team- or project-layer rule. The caller has checked that the rule exists and has an
    /// approved revision, and passes its layer and that revision.
    AttachRule {
        /// The rule.
        rule_id: RuleId,
        /// The rule's layer; organization is refused.
        rule_layer: Layer,
        /// The rule's approved revision at the time of attaching.
        rule_revision: u32,
        /// How the team enforces it.
        enforcement: Enforcement,
        /// Who attaches it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Changes how an attached rule is enforced.
    ChangeEnforcement {
        /// The attached rule.
        rule_id: RuleId,
        /// The new enforcement.
        enforcement: Enforcement,
        /// Who changes it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Detaches a rule.
    DetachRule {
        /// The attached rule.
        rule_id: RuleId,
        /// Who detaches it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Archives the team; it accepts no command afterwards.
    ArchiveTeam {
        /// Who archives it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}
