//! The Team aggregate: a group of users with roles, and the team- and project-layer rules attached to it
//! with the enforcement the team chose for each.
//!
//! Organization-layer rules are never attached: they apply to every team, including teams created later,
//! through the rule's own organization enforcement (the team rule set projection combines the two).
//!
//! Layout: `command.rs`, `event.rs` (with golden JSON tests), `error.rs`, `value.rs` (name, role,
//! attachment), `tests.rs` (given/when/then). This file holds the state, `decide` and `apply`.

mod command;
mod error;
mod event;
mod value;

#[cfg(test)]
mod tests;

pub use command::TeamCommand;
pub use error::TeamError;
pub use event::TeamEvent;
pub use value::{Attachment, TeamName, TeamRole};

use crate::value::Layer;
use crate::{RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A team. `Default` is a team that does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    id: Option<TeamId>,
    name: Option<TeamName>,
    created_at: Option<DateTime<Utc>>,
    members: BTreeMap<UserId, TeamRole>,
    attachments: BTreeMap<RuleId, Attachment>,
    archived_at: Option<DateTime<Utc>>,
    version: u64,
}

impl Team {
    /// The team's id; `None` while it does not exist.
    pub fn id(&self) -> Option<TeamId> {
        self.id
    }

    /// Whether the team exists (archived teams exist).
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The team's current name.
    pub fn name(&self) -> Option<&TeamName> {
        self.name.as_ref()
    }

    /// When the team was created.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    /// The members and their roles.
    pub fn members(&self) -> &BTreeMap<UserId, TeamRole> {
        &self.members
    }

    /// The role of `user`, if they are a member.
    pub fn role_of(&self, user: UserId) -> Option<TeamRole> {
        self.members.get(&user).copied()
    }

    /// Whether `user` is a member (in any role).
    pub fn is_member(&self, user: UserId) -> bool {
        self.members.contains_key(&user)
    }

    /// Whether `user` is a team admin of this team.
    pub fn is_team_admin(&self, user: UserId) -> bool {
        self.role_of(user) == Some(TeamRole::TeamAdmin)
    }

    /// The attached rules, by rule id.
    pub fn attachments(&self) -> &BTreeMap<RuleId, Attachment> {
        &self.attachments
    }

    /// The attachment of `rule_id`, if attached.
    pub fn attachment(&self, rule_id: RuleId) -> Option<&Attachment> {
        self.attachments.get(&rule_id)
    }

    /// Whether the team is archived.
    pub fn archived(&self) -> bool {
        self.archived_at.is_some()
    }

    /// When the team was archived.
    pub fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.archived_at
    }

    fn live(&self) -> Result<TeamId, TeamError> {
        let id = self.id.ok_or(TeamError::NotFound)?;
        if self.archived_at.is_some() {
            return Err(TeamError::Archived);
        }
        Ok(id)
    }

    fn member(&self, user: UserId) -> Result<(), TeamError> {
        if self.is_member(user) {
            Ok(())
        } else {
            Err(TeamError::NotAMember { user })
        }
    }

    fn attached(&self, rule_id: RuleId) -> Result<(), TeamError> {
        if self.attachments.contains_key(&rule_id) {
            Ok(())
        } else {
            Err(TeamError::NotAttached { rule_id })
        }
    }

    /// Decides which event `command` produces, without changing anything.
    fn decide(&self, command: TeamCommand) -> Result<TeamEvent, TeamError> {
        if let TeamCommand::CreateTeam {
            team_id,
            name,
            by,
            at,
        } = command
        {
            if self.exists() {
                return Err(TeamError::AlreadyExists);
            }
            return Ok(TeamEvent::TeamCreated {
                team_id,
                name,
                by,
                at,
            });
        }
        let team_id = self.live()?;
        Ok(match command {
            TeamCommand::CreateTeam { .. } => return Err(TeamError::AlreadyExists),
            TeamCommand::RenameTeam { name, by, at } => TeamEvent::TeamRenamed {
                team_id,
                name,
                by,
                at,
            },
            TeamCommand::AddMember { user, role, by, at } => {
                if self.is_member(user) {
                    return Err(TeamError::AlreadyMember { user });
                }
                TeamEvent::MemberAdded {
                    team_id,
                    user,
                    role,
                    by,
                    at,
                }
            }
            TeamCommand::ChangeMemberRole { user, role, by, at } => {
                self.member(user)?;
                TeamEvent::MemberRoleChanged {
                    team_id,
                    user,
                    role,
                    by,
                    at,
                }
            }
            TeamCommand::RemoveMember { user, by, at } => {
                self.member(user)?;
                TeamEvent::MemberRemoved {
                    team_id,
                    user,
                    by,
                    at,
                }
            }
            TeamCommand::AttachRule {
                rule_id,
                rule_layer,
                rule_revision,
                enforcement,
                by,
                at,
            } => {
                if rule_layer == Layer::Organization {
                    return Err(TeamError::OrganizationRulesApplyToAllTeams);
                }
                if self.attachments.contains_key(&rule_id) {
                    return Err(TeamError::AlreadyAttached { rule_id });
                }
                TeamEvent::RuleAttached {
                    team_id,
                    rule_id,
                    rule_layer,
                    rule_revision,
                    enforcement,
                    by,
                    at,
                }
            }
            TeamCommand::ChangeEnforcement {
                rule_id,
                enforcement,
                by,
                at,
            } => {
                self.attached(rule_id)?;
                TeamEvent::EnforcementChanged {
                    team_id,
                    rule_id,
                    enforcement,
                    by,
                    at,
                }
            }
            TeamCommand::DetachRule { rule_id, by, at } => {
                self.attached(rule_id)?;
                TeamEvent::RuleDetached {
                    team_id,
                    rule_id,
                    by,
                    at,
                }
            }
            TeamCommand::ArchiveTeam { by, at } => TeamEvent::TeamArchived { team_id, by, at },
        })
    }
}

aggregate!(Team, TeamCommand, TeamEvent, TeamError, |event| [event]);

impl Team {
    fn evolve(&mut self, event: TeamEvent) {
        match event {
            TeamEvent::TeamCreated {
                team_id, name, at, ..
            } => {
                self.id = Some(team_id);
                self.name = Some(name);
                self.created_at = Some(at);
            }
            TeamEvent::TeamRenamed { name, .. } => {
                self.name = Some(name);
            }
            TeamEvent::MemberAdded { user, role, .. }
            | TeamEvent::MemberRoleChanged { user, role, .. } => {
                self.members.insert(user, role);
            }
            TeamEvent::MemberRemoved { user, .. } => {
                self.members.remove(&user);
            }
            TeamEvent::RuleAttached {
                rule_id,
                rule_layer,
                rule_revision,
                enforcement,
                by,
                at,
                ..
            } => {
                self.attachments.insert(
                    rule_id,
                    Attachment {
                        rule_layer,
                        rule_revision,
                        enforcement,
                        attached_by: by,
                        attached_at: at,
                    },
                );
            }
            TeamEvent::EnforcementChanged {
                rule_id,
                enforcement,
                ..
            } => {
                if let Some(attachment) = self.attachments.get_mut(&rule_id) {
                    attachment.enforcement = enforcement;
                }
            }
            TeamEvent::RuleDetached { rule_id, .. } => {
                self.attachments.remove(&rule_id);
            }
            TeamEvent::TeamArchived { at, .. } => {
                self.archived_at = Some(at);
            }
        }
    }
}
