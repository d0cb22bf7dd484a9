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

/// Every command that needs an existing, active user; each would succeed on `[created]`.
fn commands_on_an_active_user() -> Vec<UserCommand> {
    vec![
        UserCommand::GrantRole {
            role: GlobalRole::Auditor,
            by: ADMIN,
            at: at(9),
        },
        UserCommand::RevokeRole {
            role: GlobalRole::Member,
            by: ADMIN,
            at: at(9),
        },
        UserCommand::ChangePassword { by: BOB, at: at(9) },
        UserCommand::DeactivateUser {
            by: ADMIN,
            at: at(9),
        },
    ]
}

#[tokio::test]
async fn a_user_can_be_created() {
    when(
        vec![],
        UserCommand::CreateUser {
            user_id: BOB,
            email: email(),
            name: name(),
            roles: [GlobalRole::Member].into(),
            by: Some(ADMIN),
            at: at(0),
        },
    )
    .await
    .then_expect_events(vec![created()]);
}

#[tokio::test]
async fn creating_a_user_that_exists_fails_with_already_exists() {
    when(
        vec![created()],
        UserCommand::CreateUser {
            user_id: BOB,
            email: email(),
            name: name(),
            roles: BTreeSet::new(),
            by: None,
            at: at(1),
        },
    )
    .await
    .then_expect_error(UserError::AlreadyExists);
}

#[tokio::test]
async fn every_other_command_on_a_missing_user_fails_with_not_found() {
    let mut commands = commands_on_an_active_user();
    commands.push(UserCommand::ReactivateUser {
        by: ADMIN,
        at: at(9),
    });
    for command in commands {
        when(vec![], command)
            .await
            .then_expect_error(UserError::NotFound);
    }
}

#[tokio::test]
async fn every_command_is_accepted_on_an_active_user() {
    for command in commands_on_an_active_user() {
        let result = when(vec![created()], command.clone())
            .await
            .inspect_result();
        assert!(result.is_ok(), "{command:?} was refused: {result:?}");
    }
}

#[tokio::test]
async fn a_deactivated_user_accepts_nothing_but_reactivation() {
    for command in commands_on_an_active_user() {
        when(vec![created(), deactivated()], command)
            .await
            .then_expect_error(UserError::Deactivated);
    }
}

#[tokio::test]
async fn a_role_can_be_granted() {
    when(
        vec![created()],
        UserCommand::GrantRole {
            role: GlobalRole::OrgAdmin,
            by: ADMIN,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![UserEvent::RoleGranted {
        user_id: BOB,
        role: GlobalRole::OrgAdmin,
        by: ADMIN,
        at: at(1),
    }]);
}

#[tokio::test]
async fn a_role_the_user_has_cannot_be_granted_again() {
    when(
        vec![created()],
        UserCommand::GrantRole {
            role: GlobalRole::Member,
            by: ADMIN,
            at: at(1),
        },
    )
    .await
    .then_expect_error(UserError::RoleAlreadyGranted {
        role: GlobalRole::Member,
    });
}

#[tokio::test]
async fn a_role_can_be_revoked() {
    when(
        vec![created()],
        UserCommand::RevokeRole {
            role: GlobalRole::Member,
            by: ADMIN,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![UserEvent::RoleRevoked {
        user_id: BOB,
        role: GlobalRole::Member,
        by: ADMIN,
        at: at(1),
    }]);
}

#[tokio::test]
async fn a_role_the_user_lacks_cannot_be_revoked() {
    when(
        vec![created()],
        UserCommand::RevokeRole {
            role: GlobalRole::OrgAdmin,
            by: ADMIN,
            at: at(1),
        },
    )
    .await
    .then_expect_error(UserError::RoleNotGranted {
        role: GlobalRole::OrgAdmin,
    });
}

#[tokio::test]
async fn a_password_change_is_recorded_without_the_password() {
    when(
        vec![created()],
        UserCommand::ChangePassword { by: BOB, at: at(2) },
    )
    .await
    .then_expect_events(vec![UserEvent::PasswordChanged {
        user_id: BOB,
        by: BOB,
        at: at(2),
    }]);
}

#[tokio::test]
async fn an_active_user_can_be_deactivated() {
    when(
        vec![created()],
        UserCommand::DeactivateUser {
            by: ADMIN,
            at: at(5),
        },
    )
    .await
    .then_expect_events(vec![deactivated()]);
}

#[tokio::test]
async fn a_deactivated_user_can_be_reactivated() {
    when(
        vec![created(), deactivated()],
        UserCommand::ReactivateUser {
            by: ADMIN,
            at: at(6),
        },
    )
    .await
    .then_expect_events(vec![UserEvent::UserReactivated {
        user_id: BOB,
        by: ADMIN,
        at: at(6),
    }]);
}

#[tokio::test]
async fn an_active_user_cannot_be_reactivated() {
    when(
        vec![created()],
        UserCommand::ReactivateUser {
            by: ADMIN,
            at: at(6),
        },
    )
    .await
    .then_expect_error(UserError::NotDeactivated);
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
