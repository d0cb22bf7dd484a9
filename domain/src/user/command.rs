//! What can be asked of a user. Authorization, and policies spanning users (e.g. "keep at least one
//! org admin"), are the application's job.

use super::value::{Email, GlobalRole, PersonName};
use crate::UserId;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// A command on the [`User`](super::User) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr)]
pub enum UserCommand {
    /// Creates the user, active.
    CreateUser {
        /// The new user's id, chosen by the caller.
        user_id: UserId,
        /// Their email address (uniqueness is checked by the application).
        email: Email,
        /// Their display name.
        name: PersonName,
        /// Their global roles.
        roles: BTreeSet<GlobalRole>,
        /// Who creates them; `None` when the system does (the first org admin at bootstrap).
        by: Option<UserId>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Grants a global role.
    GrantRole {
        /// The role.
        role: GlobalRole,
        /// Who grants it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Revokes a global role.
    RevokeRole {
        /// The role.
        role: GlobalRole,
        /// Who revokes it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Records that the password changed. The hash itself never enters the event log: credentials are
    /// stored outside it, so they can be replaced or erased.
    ChangePassword {
        /// Who changed it (the user, or an admin resetting it).
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deactivates the user: they can no longer sign in.
    DeactivateUser {
        /// Who deactivates them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Reactivates a deactivated user.
    ReactivateUser {
        /// Who reactivates them.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}
