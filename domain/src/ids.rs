//! Identifiers: newtypes over `Uuid`, one per kind of thing, so a rule id is never passed as a team id.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUID v7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self(Uuid::nil())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// Identifies a rule (a library entry, across all its revisions).
    RuleId
);
id_type!(
    /// Identifies a team.
    TeamId
);
id_type!(
    /// Identifies a change request opened from an agent's report.
    ChangeRequestId
);
id_type!(
    /// Identifies an exception requested on a rejected change request.
    ExceptionId
);
id_type!(
    /// Identifies a user.
    UserId
);
id_type!(
    /// Identifies an enrolled agent (one machine of one user).
    AgentId
);
