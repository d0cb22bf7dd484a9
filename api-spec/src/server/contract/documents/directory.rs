//! The directory's documents: users, and teams with their members and attached rules.

use super::Timestamp;
use crate::server::rules::{EnforcementDto, LayerDto};
use crate::server::teams::TeamRoleDto;
use crate::server::users::GlobalRoleDto;
use poem_openapi::Object;
use std::collections::BTreeMap;

/// A user as the directory lists them.
#[derive(Debug, Clone, Object)]
pub struct UserEntry {
    /// The user.
    pub id: String,
    /// Their email address (lowercase, unique).
    pub email: String,
    /// Their display name.
    pub name: String,
    /// Their global roles.
    pub roles: Vec<GlobalRoleDto>,
    /// Whether they may sign in.
    pub active: bool,
    /// When they were created.
    pub created_at: Timestamp,
    /// When their password last changed.
    #[oai(nullable)]
    pub password_changed_at: Option<Timestamp>,
    /// The user's version (send as `If-Match`).
    pub version: u64,
    /// The teams they belong to (by team id), with their role in each.
    pub teams: BTreeMap<String, TeamRoleDto>,
}

/// A rule attached to a team.
#[derive(Debug, Clone, Object)]
pub struct AttachedRuleEntry {
    /// The rule's layer (team or project).
    pub layer: LayerDto,
    /// The rule's approved revision when it was attached.
    pub rule_revision: u32,
    /// How the team enforces it.
    pub enforcement: EnforcementDto,
    /// Who attached it.
    pub attached_by: String,
    /// When.
    pub attached_at: Timestamp,
}

/// A team as the directory lists it.
#[derive(Debug, Clone, Object)]
pub struct TeamEntry {
    /// The team.
    pub id: String,
    /// Its current name.
    pub name: String,
    /// Whether it is archived.
    pub archived: bool,
    /// When it was archived.
    #[oai(nullable)]
    pub archived_at: Option<Timestamp>,
    /// Its members (by user id) and their roles.
    pub members: BTreeMap<String, TeamRoleDto>,
    /// The team- and project-layer rules attached to it (by rule id).
    pub rules: BTreeMap<String, AttachedRuleEntry>,
    /// When it was created.
    pub created_at: Timestamp,
    /// The team's version (send as `If-Match`).
    pub version: u64,
}
