//! What happened to a user. Event payloads are a public, versioned contract: variants are never renamed
//! or deleted, new fields come with defaults, and each variant has a golden JSON test below.

use super::value::{Email, GlobalRole, PersonName};
use crate::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// An event of the [`User`](super::User) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The user was created, active.
    UserCreated {
        /// The user.
        user_id: UserId,
        /// Their email address.
        email: Email,
        /// Their display name.
        name: PersonName,
        /// Their global roles.
        roles: BTreeSet<GlobalRole>,
        /// Who created them; `None` for the system.
        by: Option<UserId>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A global role was granted.
    RoleGranted {
        /// The user.
        user_id: UserId,
        /// The role.
        role: GlobalRole,
        /// Who granted it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A global role was revoked.
    RoleRevoked {
        /// The user.
        user_id: UserId,
        /// The role.
        role: GlobalRole,
        /// Who revoked it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The password changed (the hash is stored outside the log).
    PasswordChanged {
        /// The user.
        user_id: UserId,
        /// Who changed it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The user was deactivated.
    UserDeactivated {
        /// The user.
        user_id: UserId,
        /// Who deactivated them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The user was reactivated.
    UserReactivated {
        /// The user.
        user_id: UserId,
        /// Who reactivated them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

domain_event! {
    UserEvent:
    UserCreated RoleGranted RoleRevoked PasswordChanged UserDeactivated UserReactivated
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{assert_golden, golden_time, uuid};

    const ALICE: UserId = UserId(uuid(0xa));
    const BOB: UserId = UserId(uuid(0xb));

    #[test]
    fn user_created_has_a_stable_json_shape() {
        let event = UserEvent::UserCreated {
            user_id: BOB,
            email: Email::parse("bob@example.com").unwrap(),
            name: PersonName::parse("Bob").unwrap(),
            roles: [GlobalRole::Member, GlobalRole::OrgAdmin].into(),
            by: Some(ALICE),
            at: golden_time(),
        };
        let json = r#"{"UserCreated":{"user_id":"00000000-0000-0000-0000-00000000000b","email":"bob@example.com","name":"Bob","roles":["org_admin","member"],"by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "UserCreated", json);
    }

    #[test]
    fn a_user_created_by_the_system_has_a_null_actor() {
        let event = UserEvent::UserCreated {
            user_id: ALICE,
            email: Email::parse("alice@example.com").unwrap(),
            name: PersonName::parse("Alice").unwrap(),
            roles: [GlobalRole::OrgAdmin].into(),
            by: None,
            at: golden_time(),
        };
        let json = r#"{"UserCreated":{"user_id":"00000000-0000-0000-0000-00000000000a","email":"alice@example.com","name":"Alice","roles":["org_admin"],"by":null,"at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "UserCreated", json);
    }

    #[test]
    fn role_granted_has_a_stable_json_shape() {
        let event = UserEvent::RoleGranted {
            user_id: BOB,
            role: GlobalRole::Auditor,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RoleGranted":{"user_id":"00000000-0000-0000-0000-00000000000b","role":"auditor","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RoleGranted", json);
    }

    #[test]
    fn role_revoked_has_a_stable_json_shape() {
        let event = UserEvent::RoleRevoked {
            user_id: BOB,
            role: GlobalRole::OrgAdmin,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RoleRevoked":{"user_id":"00000000-0000-0000-0000-00000000000b","role":"org_admin","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RoleRevoked", json);
    }

    #[test]
    fn password_changed_has_a_stable_json_shape_without_the_hash() {
        let event = UserEvent::PasswordChanged {
            user_id: BOB,
            by: BOB,
            at: golden_time(),
        };
        let json = r#"{"PasswordChanged":{"user_id":"00000000-0000-0000-0000-00000000000b","by":"00000000-0000-0000-0000-00000000000b","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "PasswordChanged", json);
    }

    #[test]
    fn user_deactivated_has_a_stable_json_shape() {
        let event = UserEvent::UserDeactivated {
            user_id: BOB,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"UserDeactivated":{"user_id":"00000000-0000-0000-0000-00000000000b","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "UserDeactivated", json);
    }

    #[test]
    fn user_reactivated_has_a_stable_json_shape() {
        let event = UserEvent::UserReactivated {
            user_id: BOB,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"UserReactivated":{"user_id":"00000000-0000-0000-0000-00000000000b","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "UserReactivated", json);
    }
}
