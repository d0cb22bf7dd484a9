//! Why a user command was refused.

use super::value::GlobalRole;

/// A user command broke one of the user's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The user does not exist.
    #[error("user not found")]
    NotFound,
    /// `CreateUser` on a user that already exists.
    #[error("user already exists")]
    AlreadyExists,
    /// The user is deactivated; only `ReactivateUser` is accepted.
    #[error("user is deactivated")]
    Deactivated,
    /// `ReactivateUser` on an active user.
    #[error("user is not deactivated")]
    NotDeactivated,
    /// `GrantRole` of a role the user has.
    #[error("user already has role {role}")]
    RoleAlreadyGranted {
        /// The role.
        role: GlobalRole,
    },
    /// `RevokeRole` of a role the user does not have.
    #[error("user does not have role {role}")]
    RoleNotGranted {
        /// The role.
        role: GlobalRole,
    },
}
