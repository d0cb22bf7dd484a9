//! The values of a user: email address, display name and global role.

use crate::value::{ValueError, max_chars_check, string_enum, trimmed_text};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An email address: trimmed, lowercased, at most 254 characters, and of the simple shape
/// `local@domain.tld` where the local part uses `a-z 0-9 . _ % + -`, the domain is dot-separated labels
/// of `a-z 0-9 -` (not starting or ending with `-`), and the last label is at least two letters.
/// Deliverability is not this type's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// The longest address accepted, in characters.
    pub const MAX_CHARS: usize = 254;

    /// Parses an email address.
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooLong`], or [`ValueError::Malformed`] saying which part is
    /// wrong.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "email";
        let malformed = |reason: &str| ValueError::Malformed {
            field: FIELD,
            reason: reason.to_owned(),
        };
        let email = input.trim().to_lowercase();
        if email.is_empty() {
            return Err(ValueError::Empty { field: FIELD });
        }
        max_chars_check(FIELD, &email, Self::MAX_CHARS)?;
        let Some((local, domain)) = email.split_once('@') else {
            return Err(malformed("expected local@domain.tld"));
        };
        let local_ok = !local.is_empty()
            && local
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._%+-".contains(c));
        if !local_ok {
            return Err(malformed("invalid local part"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        let tld_ok = labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_lowercase()));
        if labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
            return Err(malformed("invalid domain"));
        }
        Ok(Self(email))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's display name: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonName(String);

impl PersonName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a person's name.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for a blank input, [`ValueError::TooLong`] past 200 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        trimmed_text("name", input, Self::MAX_CHARS).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_enum! {
    /// A role across the whole organization (team roles are the Team aggregate's business).
    pub enum GlobalRole as "role" {
        /// Manages rules, teams and users, and approves rules.
        OrgAdmin => "org_admin",
        /// Reads everything, including the audit history; changes nothing.
        Auditor => "auditor",
        /// A developer.
        Member => "member",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn email_is_trimmed_and_lowercased() {
        assert_eq!(
            Email::parse("  Alice.Smith+edict@Example.COM ")
                .unwrap()
                .as_str(),
            "alice.smith+edict@example.com"
        );
    }

    #[test]
    fn email_accepts_subdomains_digits_and_dashes() {
        for ok in ["a@b.co", "dev-1@mail.eu-west.example.org", "x_y%z@a1.io"] {
            assert_eq!(Email::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "alice@example.c",
            "alice@example.c0m",
            "alice@@example.com",
            "alice@exa mple.com",
            "al ice@example.com",
            "alice@-example.com",
            "alice@example..com",
            "alice@example.com.",
        ] {
            assert!(
                matches!(
                    Email::parse(bad),
                    Err(ValueError::Malformed { field: "email", .. })
                ),
                "{bad} was accepted"
            );
        }
        assert_eq!(
            Email::parse("  "),
            Err(ValueError::Empty { field: "email" })
        );
    }

    #[test]
    fn email_is_limited_to_254_characters() {
        let long = format!("{}@example.com", "a".repeat(243));
        assert!(Email::parse(&long[1..]).is_ok(), "254 characters");
        assert!(matches!(
            Email::parse(&long),
            Err(ValueError::TooLong { field: "email", .. })
        ));
    }

    #[test]
    fn person_name_is_trimmed_and_not_blank() {
        assert_eq!(PersonName::parse(" Ada ").unwrap().as_str(), "Ada");
        assert_eq!(
            PersonName::parse(""),
            Err(ValueError::Empty { field: "name" })
        );
        assert!(PersonName::parse(&"n".repeat(201)).is_err());
    }

    #[test]
    fn global_role_wire_names_match_serde() {
        for role in GlobalRole::ALL {
            assert_eq!(
                serde_json::to_string(role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert_eq!(GlobalRole::parse("org_admin"), Ok(GlobalRole::OrgAdmin));
    }

    proptest! {
        #[test]
        fn email_parse_never_panics_and_yields_a_normalized_address(input in any::<String>()) {
            if let Ok(email) = Email::parse(&input) {
                let normalized = input.trim().to_lowercase();
                prop_assert_eq!(email.as_str(), normalized.as_str());
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
            }
        }

        #[test]
        fn generated_addresses_are_accepted(
            local in "[a-z0-9._%+-]{1,20}",
            domain in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?",
            tld in "[a-zA-Z]{2,6}",
        ) {
            let address = format!("{local}@{domain}.{tld}");
            prop_assert_eq!(
                Email::parse(&address).map(|e| e.as_str().to_owned()),
                Ok(address.to_lowercase())
            );
        }
    }
}
