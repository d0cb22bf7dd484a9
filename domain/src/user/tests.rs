//! Given/when/then tests of the User aggregate.

use super::*;
use crate::testkit::*;
use uuid::Uuid;

const ADMIN: UserId = UserId(Uuid::from_u128(0xa));
const BOB: UserId = UserId(Uuid::from_u128(0xb));

fn email() -> Email {
    Email::parse("bob@example.com").unwrap()
}

fn name() -> PersonName {
    PersonName::parse("Bob").unwrap()
}

fn created() -> UserEvent {
    UserEvent::UserCreated {
        user_id: BOB,
        email: email(),
        name: name(),
        roles: [GlobalRole::Member].into(),
        by: Some(ADMIN),
        at: at(0),
    }
}

fn deactivated() -> UserEvent {
    UserEvent::UserDeactivated {
        user_id: BOB,
        by: ADMIN,
        at: at(5),
    }
}

fn create(roles: BTreeSet<GlobalRole>, by: Option<UserId>, minute: i64) -> UserCommand {
    UserCommand::CreateUser {
        user_id: BOB,
        email: email(),
        name: name(),
        roles,
        by,
        at: at(minute),
    }
}

fn grant(role: GlobalRole, minute: i64) -> UserCommand {
    let (by, at) = (ADMIN, at(minute));
    UserCommand::GrantRole { role, by, at }
}

fn revoke(role: GlobalRole, minute: i64) -> UserCommand {
    let (by, at) = (ADMIN, at(minute));
    UserCommand::RevokeRole { role, by, at }
}

/// Every command that needs an existing, active user; each would succeed on `[created]`.
fn commands_on_an_active_user() -> Vec<UserCommand> {
    vec![
        grant(GlobalRole::Auditor, 9),
        revoke(GlobalRole::Member, 9),
        UserCommand::ChangePassword { by: BOB, at: at(9) },
        UserCommand::DeactivateUser {
            by: ADMIN,
            at: at(9),
        },
    ]
}

#[tokio::test]
async fn every_other_command_on_a_missing_user_fails_with_not_found() {
    let mut commands = commands_on_an_active_user();
    commands.push(UserCommand::ReactivateUser {
        by: ADMIN,
        at: at(9),
    });
    check_every(vec![vec![]], commands, Err(UserError::NotFound)).await;
}

#[tokio::test]
async fn every_command_is_accepted_on_an_active_user() {
    accepts_each(vec![created()], commands_on_an_active_user()).await;
}

#[tokio::test]
async fn a_deactivated_user_accepts_nothing_but_reactivation() {
    let (given, commands) = (vec![created(), deactivated()], commands_on_an_active_user());
    check_every(vec![given], commands, Err(UserError::Deactivated)).await;
}

#[tokio::test]
async fn each_command_records_its_events_or_fails() {
    use {GlobalRole::Member, GlobalRole::OrgAdmin, UserCommand::*, UserEvent::*};
    cases! {
        "a user can be created": [] => create([Member].into(), Some(ADMIN), 0) => Ok(vec![created()]);
        "creating a user that exists fails with already exists":
            [created()] => create(BTreeSet::new(), None, 1) => Err(UserError::AlreadyExists);
        "a role can be granted": [created()] => grant(OrgAdmin, 1)
            => Ok(vec![RoleGranted { user_id: BOB, role: OrgAdmin, by: ADMIN, at: at(1) }]);
        "a role the user has cannot be granted again": [created()] => grant(Member, 1)
            => Err(UserError::RoleAlreadyGranted { role: Member });
        "a role can be revoked": [created()] => revoke(Member, 1)
            => Ok(vec![RoleRevoked { user_id: BOB, role: Member, by: ADMIN, at: at(1) }]);
        "a role the user lacks cannot be revoked": [created()] => revoke(OrgAdmin, 1)
            => Err(UserError::RoleNotGranted { role: OrgAdmin });
        "a password change is recorded without the password": [created()] => ChangePassword { by: BOB, at: at(2) }
            => Ok(vec![PasswordChanged { user_id: BOB, by: BOB, at: at(2) }]);
        "an active user can be deactivated":
            [created()] => DeactivateUser { by: ADMIN, at: at(5) } => Ok(vec![deactivated()]);
        "a deactivated user can be reactivated": [created(), deactivated()] => ReactivateUser { by: ADMIN, at: at(6) }
            => Ok(vec![UserReactivated { user_id: BOB, by: ADMIN, at: at(6) }]);
        "an active user cannot be reactivated":
            [created()] => ReactivateUser { by: ADMIN, at: at(6) } => Err(UserError::NotDeactivated);
    }
}

#[test]
fn the_state_tracks_roles_activity_and_password_changes() {
    let user = state(vec![
        created(),
        UserEvent::RoleGranted {
            user_id: BOB,
            role: GlobalRole::Auditor,
            by: ADMIN,
            at: at(1),
        },
        UserEvent::RoleRevoked {
            user_id: BOB,
            role: GlobalRole::Member,
            by: ADMIN,
            at: at(2),
        },
        UserEvent::PasswordChanged {
            user_id: BOB,
            by: BOB,
            at: at(3),
        },
        deactivated(),
    ]);
    assert_eq!(user.id(), Some(BOB));
    assert_eq!(user.email(), Some(&email()));
    assert_eq!(user.name(), Some(&name()));
    assert_eq!(user.roles(), &BTreeSet::from([GlobalRole::Auditor]));
    assert!(user.has_role(GlobalRole::Auditor) && !user.has_role(GlobalRole::Member));
    assert_eq!(user.password_changed_at(), Some(at(3)));
    assert_eq!(user.created_at(), Some(at(0)));
    assert!(!user.active());
    assert_eq!(user.version(), 5);
    assert!(!User::default().active());
}

#[test]
fn user_state_round_trips_through_json() {
    let user = state(vec![created(), deactivated()]);
    let json = serde_json::to_string(&user).unwrap();
    let back: User = serde_json::from_str(&json).unwrap();
    assert_eq!(back, user);
}
