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

fn create(minute: i64) -> TeamCommand {
    TeamCommand::CreateTeam {
        team_id: TEAM,
        name: name("Platform"),
        by: ADMIN,
        at: at(minute),
    }
}

/// `rule_id` attached to the team with `layer`, `revision` and `enforcement` at minute `minute`.
fn attach(
    rule_id: RuleId,
    layer: Layer,
    revision: u32,
    enforcement: Enforcement,
    minute: i64,
) -> TeamCommand {
    TeamCommand::AttachRule {
        rule_id,
        rule_layer: layer,
        rule_revision: revision,
        enforcement,
        by: ADMIN,
        at: at(minute),
    }
}

#[tokio::test]
async fn creating_a_team_that_exists_fails_with_already_exists() {
    let givens = vec![vec![created()], vec![created(), archived()]];
    check_every(givens, vec![create(1)], Err(TeamError::AlreadyExists)).await;
}

#[tokio::test]
async fn every_other_command_on_a_missing_team_fails_with_not_found() {
    let commands = commands_on_an_existing_team();
    check_every(vec![vec![]], commands, Err(TeamError::NotFound)).await;
}

#[tokio::test]
async fn every_command_is_accepted_on_a_live_team() {
    // The counterpart of the archived test below: the same commands succeed before archiving.
    accepts_each(
        vec![created(), bob_added(), rule_attached()],
        commands_on_an_existing_team(),
    )
    .await;
}

#[tokio::test]
async fn an_archived_team_accepts_no_further_command() {
    let given = vec![created(), bob_added(), rule_attached(), archived()];
    let commands = commands_on_an_existing_team();
    check_every(vec![given], commands, Err(TeamError::Archived)).await;
}

#[tokio::test]
async fn each_command_records_its_events_or_fails() {
    use {Enforcement as E, Layer::*, TeamCommand::*, TeamEvent::*, TeamRole::*};
    let temporary = E::temporary(86_400).unwrap();
    let other_rule = RuleId(Uuid::from_u128(0x99));
    cases! {
        "a team can be created": [] => create(0) => Ok(vec![created()]);
        "a team can be renamed": [created()] => RenameTeam { name: name("Core"), by: ADMIN, at: at(1) }
            => Ok(vec![TeamRenamed { team_id: TEAM, name: name("Core"), by: ADMIN, at: at(1) }]);
        "a user can be added as a member":
            [created()] => AddMember { user: BOB, role: Member, by: ADMIN, at: at(1) } => Ok(vec![bob_added()]);
        "a member cannot be added twice": [created(), bob_added()]
            => AddMember { user: BOB, role: TeamAdmin, by: ADMIN, at: at(2) }
            => Err(TeamError::AlreadyMember { user: BOB });
        "a members role can be changed": [created(), bob_added()]
            => ChangeMemberRole { user: BOB, role: TeamAdmin, by: ADMIN, at: at(2) }
            => Ok(vec![MemberRoleChanged { team_id: TEAM, user: BOB, role: TeamAdmin, by: ADMIN, at: at(2) }]);
        "the role of a non member cannot be changed":
            [created()] => ChangeMemberRole { user: CAROL, role: TeamAdmin, by: ADMIN, at: at(2) }
            => Err(TeamError::NotAMember { user: CAROL });
        "a member can be removed": [created(), bob_added()] => RemoveMember { user: BOB, by: ADMIN, at: at(2) }
            => Ok(vec![MemberRemoved { team_id: TEAM, user: BOB, by: ADMIN, at: at(2) }]);
        "a non member cannot be removed": [created(), bob_added()]
            => RemoveMember { user: CAROL, by: ADMIN, at: at(2) } => Err(TeamError::NotAMember { user: CAROL });
        "a team rule can be attached": [created()] => attach(RULE, Team, 1, E::BLOCK, 2) => Ok(vec![rule_attached()]);
        "a project rule can be attached with temporary enforcement":
            [created()] => attach(RULE, Project, 4, temporary, 2)
            => Ok(vec![RuleAttached { team_id: TEAM, rule_id: RULE, rule_layer: Project, rule_revision: 4,
                enforcement: temporary, by: ADMIN, at: at(2) }]);
        "an organization rule cannot be attached": [created()] => attach(RULE, Organization, 1, E::BLOCK, 2)
            => Err(TeamError::OrganizationRulesApplyToAllTeams);
        "a rule cannot be attached twice": [created(), rule_attached()] => attach(RULE, Team, 2, E::WARNING, 3)
            => Err(TeamError::AlreadyAttached { rule_id: RULE });
        "the enforcement of an attached rule can be changed": [created(), rule_attached()]
            => ChangeEnforcement { rule_id: RULE, enforcement: E::WARNING, by: ADMIN, at: at(3) }
            => Ok(vec![EnforcementChanged { team_id: TEAM, rule_id: RULE, enforcement: E::WARNING, by: ADMIN, at: at(3) }]);
        "the enforcement of a rule that is not attached cannot be changed": [created()]
            => ChangeEnforcement { rule_id: RULE, enforcement: E::WARNING, by: ADMIN, at: at(3) }
            => Err(TeamError::NotAttached { rule_id: RULE });
        "an attached rule can be detached": [created(), rule_attached()] => DetachRule { rule_id: RULE, by: ADMIN, at: at(3) }
            => Ok(vec![RuleDetached { team_id: TEAM, rule_id: RULE, by: ADMIN, at: at(3) }]);
        "a rule that is not attached cannot be detached": [created(), rule_attached()]
            => DetachRule { rule_id: other_rule, by: ADMIN, at: at(3) } => Err(TeamError::NotAttached { rule_id: other_rule });
        "a team can be archived": [created()] => ArchiveTeam { by: ADMIN, at: at(9) } => Ok(vec![archived()]);
    }
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
