//! The values of an agent: the machine it runs on.

use crate::value::{ValueError, max_chars_check, string_enum, trimmed_text};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable identifier of the machine the agent runs on (e.g. `/etc/machine-id`): trimmed, 1 to 200
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MachineId(String);

impl MachineId {
    /// The longest machine id accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a machine id.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for a blank input, [`ValueError::TooLong`] past 200 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        trimmed_text("machine_id", input, Self::MAX_CHARS).map(Self)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The machine's human-readable name (its host name), for the fleet view: trimmed, possibly empty, at most
/// 200 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MachineName(String);

impl MachineName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a machine name (an empty one is allowed: not every machine reports one).
    ///
    /// # Errors
    /// [`ValueError::TooLong`] past 200 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let trimmed = input.trim();
        max_chars_check("machine_name", trimmed, Self::MAX_CHARS)?;
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_enum! {
    /// An enforcement action an agent reports that opens no change request (a change under a
    /// temporary-mode rule goes to a change request instead).
    pub enum EnforcementKind as "kind" {
        /// A block-mode managed section was edited; the agent restored it.
        BlockReverted => "block_reverted",
        /// A warning-mode managed section was edited; the agent kept it.
        WarningKept => "warning_kept",
        /// The agent and an editor kept overwriting each other; the agent stopped and flagged it.
        RevertLoop => "revert_loop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn machine_id_is_trimmed_and_not_blank() {
        assert_eq!(
            MachineId::parse(" 4c4c4544 \n").unwrap().as_str(),
            "4c4c4544"
        );
        assert_eq!(
            MachineId::parse(" "),
            Err(ValueError::Empty {
                field: "machine_id"
            })
        );
    }

    #[test]
    fn machine_id_is_limited_to_200_characters() {
        assert!(MachineId::parse(&"m".repeat(200)).is_ok());
        assert!(matches!(
            MachineId::parse(&"m".repeat(201)),
            Err(ValueError::TooLong {
                field: "machine_id",
                ..
            })
        ));
    }

    #[test]
    fn machine_name_may_be_empty_but_not_longer_than_200_characters() {
        assert_eq!(MachineName::parse("").unwrap().as_str(), "");
        assert_eq!(
            MachineName::parse(" dev-laptop ").unwrap().as_str(),
            "dev-laptop"
        );
        assert!(MachineName::parse(&"m".repeat(201)).is_err());
    }

    proptest! {
        #[test]
        fn machine_id_parse_never_panics_and_trims(input in any::<String>()) {
            match MachineId::parse(&input) {
                Ok(id) => prop_assert_eq!(id.as_str(), input.trim()),
                Err(_) => prop_assert!(
                    input.trim().is_empty() || input.trim().chars().count() > MachineId::MAX_CHARS
                ),
            }
        }
    }
}
