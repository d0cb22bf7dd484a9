//! The values of a team: its name, the role of a member, and a rule attached to it.

use crate::UserId;
use crate::value::{Enforcement, Layer, ValueError, string_enum, trimmed_text};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A team's name: trimmed, 1 to 100 characters. Not unique: teams are told apart by their id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TeamName(String);

impl TeamName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 100;

    /// Parses a team name.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for a blank input, [`ValueError::TooLong`] past 100 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        trimmed_text("name", input, Self::MAX_CHARS).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_enum! {
    /// What a member may do in a team.
    pub enum TeamRole as "role" {
        /// Manages the team's members and rules, and decides its change requests.
        TeamAdmin => "team_admin",
        /// Receives the team's rules.
        Member => "member",
    }
}

/// A team- or project-layer rule attached to a team, with the enforcement the team chose for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub(super) rule_layer: Layer,
    pub(super) rule_revision: u32,
    pub(super) enforcement: Enforcement,
    pub(super) attached_by: UserId,
    pub(super) attached_at: DateTime<Utc>,
}

impl Attachment {
    /// The rule's layer (team or project).
    pub fn rule_layer(&self) -> Layer {
        self.rule_layer
    }

    /// The rule's approved revision when it was attached, for the record. What a team receives is
    /// always the rule's revision in force, which the team rule set projection follows.
    pub fn rule_revision(&self) -> u32 {
        self.rule_revision
    }

    /// How the rule is enforced on this team's machines.
    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// Who attached it.
    pub fn attached_by(&self) -> UserId {
        self.attached_by
    }

    /// When it was attached.
    pub fn attached_at(&self) -> DateTime<Utc> {
        self.attached_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::LengthUnit;
    use proptest::prelude::*;

    #[test]
    fn team_name_is_trimmed() {
        assert_eq!(TeamName::parse(" Platform ").unwrap().as_str(), "Platform");
    }

    #[test]
    fn blank_team_name_is_rejected() {
        assert_eq!(
            TeamName::parse("\t"),
            Err(ValueError::Empty { field: "name" })
        );
    }

    #[test]
    fn team_name_is_limited_to_100_characters() {
        assert!(TeamName::parse(&"t".repeat(100)).is_ok());
        assert_eq!(
            TeamName::parse(&"t".repeat(101)),
            Err(ValueError::TooLong {
                field: "name",
                max: 100,
                actual: 101,
                unit: LengthUnit::Characters
            })
        );
    }

    #[test]
    fn team_role_wire_names_match_serde() {
        for role in TeamRole::ALL {
            assert_eq!(
                serde_json::to_string(role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert_eq!(TeamRole::parse("team_admin"), Ok(TeamRole::TeamAdmin));
        assert!(TeamRole::parse("admin").is_err());
    }

    proptest! {
        #[test]
        fn team_name_parse_never_panics_and_trims(input in any::<String>()) {
            if let Ok(name) = TeamName::parse(&input) {
                prop_assert_eq!(name.as_str(), input.trim());
                prop_assert!(!name.as_str().is_empty());
            }
        }
    }
}
