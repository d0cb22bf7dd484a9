//! What happened to a team. Event payloads are a public, versioned contract: variants are never renamed
//! or deleted, new fields come with defaults, and each variant has a golden JSON test below.

use super::value::{TeamName, TeamRole};
use crate::value::{Enforcement, Layer};
use crate::{RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An event of the [`Team`](super::Team) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeamEvent {
    /// The team was created.
    TeamCreated {
        /// The team.
        team_id: TeamId,
        /// Its name.
        name: TeamName,
        /// Who created it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The team was renamed.
    TeamRenamed {
        /// The team.
        team_id: TeamId,
        /// The new name.
        name: TeamName,
        /// Who renamed it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A user joined the team.
    MemberAdded {
        /// The team.
        team_id: TeamId,
        /// The user.
        user: UserId,
        /// Their role.
        role: TeamRole,
        /// Who added them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A member's role changed.
    MemberRoleChanged {
        /// The team.
        team_id: TeamId,
        /// The member.
        user: UserId,
        /// The new role.
        role: TeamRole,
        /// Who changed it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A member left the team.
    MemberRemoved {
        /// The team.
        team_id: TeamId,
        /// The former member.
        user: UserId,
        /// Who removed them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A rule was attached to the team.
    RuleAttached {
        /// The team.
        team_id: TeamId,
        /// The rule.
        rule_id: RuleId,
        /// The rule's layer (team or project).
        rule_layer: Layer,
        /// The rule's approved revision at the time.
        rule_revision: u32,
        /// How the team enforces it.
        enforcement: Enforcement,
        /// Who attached it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The enforcement of an attached rule changed.
    EnforcementChanged {
        /// The team.
        team_id: TeamId,
        /// The rule.
        rule_id: RuleId,
        /// The new enforcement.
        enforcement: Enforcement,
        /// Who changed it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A rule was detached from the team.
    RuleDetached {
        /// The team.
        team_id: TeamId,
        /// The rule.
        rule_id: RuleId,
        /// Who detached it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The team was archived.
    TeamArchived {
        /// The team.
        team_id: TeamId,
        /// Who archived it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

domain_event! {
    TeamEvent:
    TeamCreated TeamRenamed MemberAdded MemberRoleChanged MemberRemoved RuleAttached
    EnforcementChanged RuleDetached TeamArchived
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{assert_golden, golden_time, uuid};

    const TEAM: TeamId = TeamId(uuid(2));
    const RULE: RuleId = RuleId(uuid(1));
    const ALICE: UserId = UserId(uuid(0xa));
    const BOB: UserId = UserId(uuid(0xb));

    #[test]
    fn team_created_has_a_stable_json_shape() {
        let event = TeamEvent::TeamCreated {
            team_id: TEAM,
            name: TeamName::parse("Platform").unwrap(),
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"TeamCreated":{"team_id":"00000000-0000-0000-0000-000000000002","name":"Platform","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "TeamCreated", json);
    }

    #[test]
    fn team_renamed_has_a_stable_json_shape() {
        let event = TeamEvent::TeamRenamed {
            team_id: TEAM,
            name: TeamName::parse("Platform Core").unwrap(),
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"TeamRenamed":{"team_id":"00000000-0000-0000-0000-000000000002","name":"Platform Core","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "TeamRenamed", json);
    }

    #[test]
    fn member_added_has_a_stable_json_shape() {
        let event = TeamEvent::MemberAdded {
            team_id: TEAM,
            user: BOB,
            role: TeamRole::TeamAdmin,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"MemberAdded":{"team_id":"00000000-0000-0000-0000-000000000002","user":"00000000-0000-0000-0000-00000000000b","role":"team_admin","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "MemberAdded", json);
    }

    #[test]
    fn member_role_changed_has_a_stable_json_shape() {
        let event = TeamEvent::MemberRoleChanged {
            team_id: TEAM,
            user: BOB,
            role: TeamRole::Member,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"MemberRoleChanged":{"team_id":"00000000-0000-0000-0000-000000000002","user":"00000000-0000-0000-0000-00000000000b","role":"member","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "MemberRoleChanged", json);
    }

    #[test]
    fn member_removed_has_a_stable_json_shape() {
        let event = TeamEvent::MemberRemoved {
            team_id: TEAM,
            user: BOB,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"MemberRemoved":{"team_id":"00000000-0000-0000-0000-000000000002","user":"00000000-0000-0000-0000-00000000000b","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "MemberRemoved", json);
    }

    #[test]
    fn rule_attached_has_a_stable_json_shape() {
        let event = TeamEvent::RuleAttached {
            team_id: TEAM,
            rule_id: RULE,
            rule_layer: Layer::Project,
            rule_revision: 3,
            enforcement: Enforcement::WARNING,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RuleAttached":{"team_id":"00000000-0000-0000-0000-000000000002","rule_id":"00000000-0000-0000-0000-000000000001","rule_layer":"project","rule_revision":3,"enforcement":{"mode":"warning"},"by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleAttached", json);
    }

    #[test]
    fn enforcement_changed_has_a_stable_json_shape() {
        let event = TeamEvent::EnforcementChanged {
            team_id: TEAM,
            rule_id: RULE,
            enforcement: Enforcement::temporary(3600).unwrap(),
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"EnforcementChanged":{"team_id":"00000000-0000-0000-0000-000000000002","rule_id":"00000000-0000-0000-0000-000000000001","enforcement":{"mode":"temporary","temporary_timeout_secs":3600},"by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "EnforcementChanged", json);
    }

    #[test]
    fn rule_detached_has_a_stable_json_shape() {
        let event = TeamEvent::RuleDetached {
            team_id: TEAM,
            rule_id: RULE,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RuleDetached":{"team_id":"00000000-0000-0000-0000-000000000002","rule_id":"00000000-0000-0000-0000-000000000001","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleDetached", json);
    }

    #[test]
    fn team_archived_has_a_stable_json_shape() {
        let event = TeamEvent::TeamArchived {
            team_id: TEAM,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"TeamArchived":{"team_id":"00000000-0000-0000-0000-000000000002","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "TeamArchived", json);
    }
}
