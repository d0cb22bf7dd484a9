//! Given/when/then tests of the Team aggregate.

use super::*;
use crate::testkit::*;
use crate::value::Enforcement;
use uuid::Uuid;

const TEAM: TeamId = TeamId(Uuid::from_u128(0x2));
const RULE: RuleId = RuleId(Uuid::from_u128(0x1));
const ADMIN: UserId = UserId(Uuid::from_u128(0xa));
const BOB: UserId = UserId(Uuid::from_u128(0xb));
const CAROL: UserId = UserId(Uuid::from_u128(0xc));

fn name(text: &str) -> TeamName {
    TeamName::parse(text).unwrap()
}

fn created() -> TeamEvent {
    TeamEvent::TeamCreated {
        team_id: TEAM,
        name: name("Platform"),
        by: ADMIN,
        at: at(0),
    }
}

fn bob_added() -> TeamEvent {
    TeamEvent::MemberAdded {
        team_id: TEAM,
        user: BOB,
        role: TeamRole::Member,
        by: ADMIN,
        at: at(1),
    }
}

fn rule_attached() -> TeamEvent {
    TeamEvent::RuleAttached {
        team_id: TEAM,
        rule_id: RULE,
        rule_layer: Layer::Team,
        rule_revision: 1,
        enforcement: Enforcement::BLOCK,
        by: ADMIN,
        at: at(2),
    }
}

fn archived() -> TeamEvent {
    TeamEvent::TeamArchived {
        team_id: TEAM,
        by: ADMIN,
        at: at(9),
    }
}

/// One of each command that needs an existing team; each would succeed on the team
/// `[created, bob_added, rule_attached]`.
fn commands_on_an_existing_team() -> Vec<TeamCommand> {
    vec![
        TeamCommand::RenameTeam {
            name: name("Core"),
            by: ADMIN,
            at: at(5),
        },
        TeamCommand::AddMember {
            user: CAROL,
            role: TeamRole::Member,
            by: ADMIN,
            at: at(5),
        },
        TeamCommand::ChangeMemberRole {
            user: BOB,
            role: TeamRole::TeamAdmin,
            by: ADMIN,
            at: at(5),
        },
        TeamCommand::RemoveMember {
            user: BOB,
            by: ADMIN,
            at: at(5),
        },
        TeamCommand::AttachRule {
            rule_id: RuleId(Uuid::from_u128(0x99)),
            rule_layer: Layer::Project,
            rule_revision: 1,
            enforcement: Enforcement::WARNING,
            by: ADMIN,
            at: at(5),
        },
        TeamCommand::ChangeEnforcement {
            rule_id: RULE,
            enforcement: Enforcement::WARNING,
            by: ADMIN,
            at: at(5),
        },
        TeamCommand::DetachRule {
            rule_id: RULE,
            by: ADMIN,
            at: at(5),
        },
        TeamCommand::ArchiveTeam {
            by: ADMIN,
            at: at(5),
        },
    ]
}

#[tokio::test]
async fn a_team_can_be_created() {
    when(
        vec![],
        TeamCommand::CreateTeam {
            team_id: TEAM,
            name: name("Platform"),
            by: ADMIN,
            at: at(0),
        },
    )
    .await
    .then_expect_events(vec![created()]);
}

#[tokio::test]
async fn creating_a_team_that_exists_fails_with_already_exists() {
    for given in [vec![created()], vec![created(), archived()]] {
        when(
            given,
            TeamCommand::CreateTeam {
                team_id: TEAM,
                name: name("Platform"),
                by: ADMIN,
                at: at(1),
            },
        )
        .await
        .then_expect_error(TeamError::AlreadyExists);
    }
}

#[tokio::test]
async fn every_other_command_on_a_missing_team_fails_with_not_found() {
    for command in commands_on_an_existing_team() {
        when(vec![], command)
            .await
            .then_expect_error(TeamError::NotFound);
    }
}

#[tokio::test]
async fn every_command_is_accepted_on_a_live_team() {
    // The counterpart of the archived test below: the same commands succeed before archiving.
    for command in commands_on_an_existing_team() {
        let result = when(
            vec![created(), bob_added(), rule_attached()],
            command.clone(),
        )
        .await
        .inspect_result();
        assert!(result.is_ok(), "{command:?} was refused: {result:?}");
    }
}

#[tokio::test]
async fn an_archived_team_accepts_no_further_command() {
    for command in commands_on_an_existing_team() {
        when(
            vec![created(), bob_added(), rule_attached(), archived()],
            command,
        )
        .await
        .then_expect_error(TeamError::Archived);
    }
}

#[tokio::test]
async fn a_team_can_be_renamed() {
    when(
        vec![created()],
        TeamCommand::RenameTeam {
            name: name("Core"),
            by: ADMIN,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![TeamEvent::TeamRenamed {
        team_id: TEAM,
        name: name("Core"),
        by: ADMIN,
        at: at(1),
    }]);
}

#[tokio::test]
async fn a_user_can_be_added_as_a_member() {
    when(
        vec![created()],
        TeamCommand::AddMember {
            user: BOB,
            role: TeamRole::Member,
            by: ADMIN,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![bob_added()]);
}

#[tokio::test]
async fn a_member_cannot_be_added_twice() {
    when(
        vec![created(), bob_added()],
        TeamCommand::AddMember {
            user: BOB,
            role: TeamRole::TeamAdmin,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_error(TeamError::AlreadyMember { user: BOB });
}

#[tokio::test]
async fn a_members_role_can_be_changed() {
    when(
        vec![created(), bob_added()],
        TeamCommand::ChangeMemberRole {
            user: BOB,
            role: TeamRole::TeamAdmin,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![TeamEvent::MemberRoleChanged {
        team_id: TEAM,
        user: BOB,
        role: TeamRole::TeamAdmin,
        by: ADMIN,
        at: at(2),
    }]);
}

#[tokio::test]
async fn the_role_of_a_non_member_cannot_be_changed() {
    when(
        vec![created()],
        TeamCommand::ChangeMemberRole {
            user: CAROL,
            role: TeamRole::TeamAdmin,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_error(TeamError::NotAMember { user: CAROL });
}

#[tokio::test]
async fn a_member_can_be_removed() {
    when(
        vec![created(), bob_added()],
        TeamCommand::RemoveMember {
            user: BOB,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![TeamEvent::MemberRemoved {
        team_id: TEAM,
        user: BOB,
        by: ADMIN,
        at: at(2),
    }]);
}

#[tokio::test]
async fn a_non_member_cannot_be_removed() {
    when(
        vec![created(), bob_added()],
        TeamCommand::RemoveMember {
            user: CAROL,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_error(TeamError::NotAMember { user: CAROL });
}

#[tokio::test]
async fn a_team_rule_can_be_attached() {
    when(
        vec![created()],
        TeamCommand::AttachRule {
            rule_id: RULE,
            rule_layer: Layer::Team,
            rule_revision: 1,
            enforcement: Enforcement::BLOCK,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![rule_attached()]);
}

#[tokio::test]
async fn a_project_rule_can_be_attached_with_temporary_enforcement() {
    let temporary = Enforcement::temporary(86_400).unwrap();
    when(
        vec![created()],
        TeamCommand::AttachRule {
            rule_id: RULE,
            rule_layer: Layer::Project,
            rule_revision: 4,
            enforcement: temporary,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![TeamEvent::RuleAttached {
        team_id: TEAM,
        rule_id: RULE,
        rule_layer: Layer::Project,
        rule_revision: 4,
        enforcement: temporary,
        by: ADMIN,
        at: at(2),
    }]);
}

#[tokio::test]
async fn an_organization_rule_cannot_be_attached() {
    when(
        vec![created()],
        TeamCommand::AttachRule {
            rule_id: RULE,
            rule_layer: Layer::Organization,
            rule_revision: 1,
            enforcement: Enforcement::BLOCK,
            by: ADMIN,
            at: at(2),
        },
    )
    .await
    .then_expect_error(TeamError::OrganizationRulesApplyToAllTeams);
}

#[tokio::test]
async fn a_rule_cannot_be_attached_twice() {
    when(
        vec![created(), rule_attached()],
        TeamCommand::AttachRule {
            rule_id: RULE,
            rule_layer: Layer::Team,
            rule_revision: 2,
            enforcement: Enforcement::WARNING,
            by: ADMIN,
            at: at(3),
        },
    )
    .await
    .then_expect_error(TeamError::AlreadyAttached { rule_id: RULE });
}

#[tokio::test]
async fn the_enforcement_of_an_attached_rule_can_be_changed() {
    when(
        vec![created(), rule_attached()],
        TeamCommand::ChangeEnforcement {
            rule_id: RULE,
            enforcement: Enforcement::WARNING,
            by: ADMIN,
            at: at(3),
        },
    )
    .await
    .then_expect_events(vec![TeamEvent::EnforcementChanged {
        team_id: TEAM,
        rule_id: RULE,
        enforcement: Enforcement::WARNING,
        by: ADMIN,
        at: at(3),
    }]);
}

#[tokio::test]
async fn the_enforcement_of_a_rule_that_is_not_attached_cannot_be_changed() {
    when(
        vec![created()],
        TeamCommand::ChangeEnforcement {
            rule_id: RULE,
            enforcement: Enforcement::WARNING,
            by: ADMIN,
            at: at(3),
        },
    )
    .await
    .then_expect_error(TeamError::NotAttached { rule_id: RULE });
}

#[tokio::test]
async fn an_attached_rule_can_be_detached() {
    when(
        vec![created(), rule_attached()],
        TeamCommand::DetachRule {
            rule_id: RULE,
            by: ADMIN,
            at: at(3),
        },
    )
    .await
    .then_expect_events(vec![TeamEvent::RuleDetached {
        team_id: TEAM,
        rule_id: RULE,
        by: ADMIN,
        at: at(3),
    }]);
}

#[tokio::test]
async fn a_rule_that_is_not_attached_cannot_be_detached() {
    when(
        vec![created(), rule_attached()],
        TeamCommand::DetachRule {
            rule_id: RuleId(Uuid::from_u128(0x99)),
            by: ADMIN,
            at: at(3),
        },
    )
    .await
    .then_expect_error(TeamError::NotAttached {
        rule_id: RuleId(Uuid::from_u128(0x99)),
    });
}

#[tokio::test]
async fn a_team_can_be_archived() {
    when(
        vec![created()],
        TeamCommand::ArchiveTeam {
            by: ADMIN,
            at: at(9),
        },
    )
    .await
    .then_expect_events(vec![archived()]);
}

#[test]
fn the_state_knows_members_roles_and_attachments() {
    let team = state(vec![
        created(),
        bob_added(),
        TeamEvent::MemberAdded {
            team_id: TEAM,
            user: CAROL,
            role: TeamRole::TeamAdmin,
            by: ADMIN,
            at: at(1),
        },
        rule_attached(),
        TeamEvent::EnforcementChanged {
            team_id: TEAM,
            rule_id: RULE,
            enforcement: Enforcement::WARNING,
            by: ADMIN,
            at: at(3),
        },
        TeamEvent::TeamRenamed {
            team_id: TEAM,
            name: name("Core"),
            by: ADMIN,
            at: at(4),
        },
    ]);
    assert_eq!(team.id(), Some(TEAM));
    assert_eq!(team.name().map(TeamName::as_str), Some("Core"));
    assert_eq!(team.created_at(), Some(at(0)));
    assert!(team.is_member(BOB) && !team.is_team_admin(BOB));
    assert!(team.is_member(CAROL) && team.is_team_admin(CAROL));
    assert!(!team.is_member(ADMIN));
    assert_eq!(team.members().len(), 2);
    let attachment = team.attachment(RULE).unwrap();
    assert_eq!(attachment.enforcement(), Enforcement::WARNING);
    assert_eq!(attachment.rule_layer(), Layer::Team);
    assert_eq!(attachment.rule_revision(), 1);
    assert_eq!(attachment.attached_by(), ADMIN);
    assert_eq!(attachment.attached_at(), at(2));
    assert!(!team.archived());
    assert_eq!(team.version(), 6);
}

#[test]
fn removing_and_detaching_empties_the_state() {
    let team = state(vec![
        created(),
        bob_added(),
        rule_attached(),
        TeamEvent::MemberRemoved {
            team_id: TEAM,
            user: BOB,
            by: ADMIN,
            at: at(3),
        },
        TeamEvent::RuleDetached {
            team_id: TEAM,
            rule_id: RULE,
            by: ADMIN,
            at: at(3),
        },
        archived(),
    ]);
    assert!(team.members().is_empty());
    assert!(team.attachments().is_empty());
    assert!(team.archived());
    assert_eq!(team.archived_at(), Some(at(9)));
}

#[test]
fn team_state_round_trips_through_json() {
    let team = state(vec![created(), bob_added(), rule_attached()]);
    let json = serde_json::to_string(&team).unwrap();
    let back: Team = serde_json::from_str(&json).unwrap();
    assert_eq!(back, team);
}
