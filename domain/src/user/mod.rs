//! The User aggregate (supporting): who someone is (email, name), their global roles, and whether they
//! may sign in. Credentials are not in the log: `PasswordChanged` only records that the password changed.
//!
//! Layout: `command.rs`, `event.rs` (with golden JSON tests), `error.rs`, `value.rs` (email, name, role),
//! `tests.rs`. This file holds the state, `decide` and `apply`.

mod command;
mod error;
mod event;
mod value;

#[cfg(test)]
mod tests;

pub use command::UserCommand;
pub use error::UserError;
pub use event::UserEvent;
pub use value::{Email, GlobalRole, PersonName};

use crate::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A user. `Default` is a user that does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    id: Option<UserId>,
    email: Option<Email>,
    name: Option<PersonName>,
    roles: BTreeSet<GlobalRole>,
    active: bool,
    created_at: Option<DateTime<Utc>>,
    password_changed_at: Option<DateTime<Utc>>,
    version: u64,
}

impl User {
    /// The user's id; `None` while they do not exist.
    pub fn id(&self) -> Option<UserId> {
        self.id
    }

    /// Whether the user exists (deactivated users exist).
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// Their email address.
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }

    /// Their display name.
    pub fn name(&self) -> Option<&PersonName> {
        self.name.as_ref()
    }

    /// Their global roles.
    pub fn roles(&self) -> &BTreeSet<GlobalRole> {
        &self.roles
    }

    /// Whether they have `role`.
    pub fn has_role(&self, role: GlobalRole) -> bool {
        self.roles.contains(&role)
    }

    /// Whether they exist and may sign in.
    pub fn active(&self) -> bool {
        self.active
    }

    /// When they were created.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    /// When their password last changed (tokens issued before may be refused).
    pub fn password_changed_at(&self) -> Option<DateTime<Utc>> {
        self.password_changed_at
    }

    /// The id of a user that exists (active or not).
    fn existing(&self) -> Result<UserId, UserError> {
        self.id.ok_or(UserError::NotFound)
    }

    /// The id of a user that exists and is active.
    fn live(&self) -> Result<UserId, UserError> {
        let id = self.existing()?;
        if !self.active {
            return Err(UserError::Deactivated);
        }
        Ok(id)
    }

    /// Decides which event `command` produces, without changing anything.
    fn decide(&self, command: UserCommand) -> Result<UserEvent, UserError> {
        Ok(match command {
            UserCommand::CreateUser {
                user_id,
                email,
                name,
                roles,
                by,
                at,
            } => {
                if self.exists() {
                    return Err(UserError::AlreadyExists);
                }
                UserEvent::UserCreated {
                    user_id,
                    email,
                    name,
                    roles,
                    by,
                    at,
                }
            }
            UserCommand::GrantRole { role, by, at } => {
                let user_id = self.live()?;
                if self.has_role(role) {
                    return Err(UserError::RoleAlreadyGranted { role });
                }
                UserEvent::RoleGranted {
                    user_id,
                    role,
                    by,
                    at,
                }
            }
            UserCommand::RevokeRole { role, by, at } => {
                let user_id = self.live()?;
                if !self.has_role(role) {
                    return Err(UserError::RoleNotGranted { role });
                }
                UserEvent::RoleRevoked {
                    user_id,
                    role,
                    by,
                    at,
                }
            }
            UserCommand::ChangePassword { by, at } => UserEvent::PasswordChanged {
                user_id: self.live()?,
                by,
                at,
            },
            UserCommand::DeactivateUser { by, at } => UserEvent::UserDeactivated {
                user_id: self.live()?,
                by,
                at,
            },
            UserCommand::ReactivateUser { by, at } => {
                let user_id = self.existing()?;
                if self.active {
                    return Err(UserError::NotDeactivated);
                }
                UserEvent::UserReactivated { user_id, by, at }
            }
        })
    }
}

aggregate!(User, UserCommand, UserEvent, UserError, |event| [event]);

impl User {
    fn evolve(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserCreated {
                user_id,
                email,
                name,
                roles,
                at,
                ..
            } => {
                self.id = Some(user_id);
                self.email = Some(email);
                self.name = Some(name);
                self.roles = roles;
                self.active = true;
                self.created_at = Some(at);
            }
            UserEvent::RoleGranted { role, .. } => {
                self.roles.insert(role);
            }
            UserEvent::RoleRevoked { role, .. } => {
                self.roles.remove(&role);
            }
            UserEvent::PasswordChanged { at, .. } => {
                self.password_changed_at = Some(at);
            }
            UserEvent::UserDeactivated { .. } => {
                self.active = false;
            }
            UserEvent::UserReactivated { .. } => {
                self.active = true;
            }
        }
    }
}
