//! Value types shared by several aggregates, and the one error every value parser returns.
//!
//! Every constrained value follows "parse, don't validate": a private field, one fallible `parse`
//! constructor used on the command path, and `#[serde(transparent)]` (or a plain derive) so events
//! deserialize *without* re-validating. Tightening a rule later therefore never makes history unreadable.
//!
//! Layout: [`ValueError`] first, then the small helpers the parsers share, then the shared types
//! ([`Layer`], [`EnforcementMode`], [`Enforcement`], [`Reason`], [`Sha256Hex`]). Values that belong to one
//! aggregate live in that aggregate's `value.rs`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a raw input could not become a value type. Every variant names the field it is about, so the API
/// can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The input was empty (or only whitespace, for fields that are trimmed or must not be blank).
    #[error("{field} must not be empty")]
    Empty {
        /// The field, as the API names it.
        field: &'static str,
    },
    /// The input was longer than allowed.
    #[error("{field} must be at most {max} {unit} long, got {actual}")]
    TooLong {
        /// The field, as the API names it.
        field: &'static str,
        /// The largest length allowed.
        max: usize,
        /// The length of the input.
        actual: usize,
        /// What the lengths count.
        unit: LengthUnit,
    },
    /// The input contained a NUL character.
    #[error("{field} must not contain NUL characters")]
    ContainsNul {
        /// The field, as the API names it.
        field: &'static str,
    },
    /// The input does not have the required shape.
    #[error("{field} is malformed: {reason}")]
    Malformed {
        /// The field, as the API names it.
        field: &'static str,
        /// What is wrong, for a human.
        reason: String,
    },
    /// A number outside its allowed range.
    #[error("{field} must be between {min} and {max}, got {actual}")]
    OutOfRange {
        /// The field, as the API names it.
        field: &'static str,
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
        /// The value given.
        actual: u64,
    },
    /// A field that must be given in this combination was missing.
    #[error("{field} is required when {condition}")]
    Required {
        /// The field, as the API names it.
        field: &'static str,
        /// When the field is required.
        condition: &'static str,
    },
    /// A field was given in a combination where it means nothing.
    #[error("{field} is only allowed when {condition}")]
    NotAllowed {
        /// The field, as the API names it.
        field: &'static str,
        /// When the field is allowed.
        condition: &'static str,
    },
}

/// What a length limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthUnit {
    /// Unicode scalar values (`str::chars`), for text a person reads.
    Characters,
    /// UTF-8 bytes, for payloads and paths whose size matters to storage and file systems.
    Bytes,
}

impl fmt::Display for LengthUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Characters => "characters",
            Self::Bytes => "bytes",
        })
    }
}

/// Trims `input` and checks it is non-empty and at most `max_chars` characters long.
pub(crate) fn trimmed_text(
    field: &'static str,
    input: &str,
    max_chars: usize,
) -> Result<String, ValueError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(ValueError::Empty { field });
    }
    max_chars_check(field, trimmed, max_chars)?;
    Ok(trimmed.to_owned())
}

/// Checks that `input` is at most `max` characters long.
pub(crate) fn max_chars_check(
    field: &'static str,
    input: &str,
    max: usize,
) -> Result<(), ValueError> {
    // Every free text goes through a length check; none may carry a NUL (PostgreSQL's text and JSON
    // columns refuse it, and no instruction file needs it).
    no_nul_check(field, input)?;
    let actual = input.chars().count();
    if actual > max {
        return Err(ValueError::TooLong {
            field,
            max,
            actual,
            unit: LengthUnit::Characters,
        });
    }
    Ok(())
}

/// Checks that `input` is at most `max` UTF-8 bytes long.
pub(crate) fn max_bytes_check(
    field: &'static str,
    input: &str,
    max: usize,
) -> Result<(), ValueError> {
    no_nul_check(field, input)?;
    if input.len() > max {
        return Err(ValueError::TooLong {
            field,
            max,
            actual: input.len(),
            unit: LengthUnit::Bytes,
        });
    }
    Ok(())
}

/// Checks that `input` has no NUL character (which no file system and no C string accepts).
pub(crate) fn no_nul_check(field: &'static str, input: &str) -> Result<(), ValueError> {
    if input.contains('\0') {
        return Err(ValueError::ContainsNul { field });
    }
    Ok(())
}

/// Declares a fieldless enum with a fixed snake_case wire name per variant, used by serde, `as_str`,
/// `Display` and `parse`/`FromStr` alike so the four can never disagree.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $field:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The wire name of this variant (snake_case, exactly as serde writes it).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// Parses a wire name (exact, case-sensitive).
            ///
            /// # Errors
            /// [`ValueError::Malformed`](crate::value::ValueError::Malformed) when `input` is not one
            /// of the wire names.
            pub fn parse(input: &str) -> Result<Self, $crate::value::ValueError> {
                match input {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::value::ValueError::Malformed {
                        field: $field,
                        reason: format!(
                            "expected one of {}",
                            [$($text),+].join(", ")
                        ),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::value::ValueError;
            fn from_str(input: &str) -> Result<Self, Self::Err> {
                Self::parse(input)
            }
        }
    };
}
pub(crate) use string_enum;

string_enum! {
    /// Which managed section of `CLAUDE.md` a rule belongs to (and so which file the agent writes it to).
    pub enum Layer as "layer" {
        /// Every developer of the organization (`/etc/claude-code/CLAUDE.md`).
        Organization => "organization",
        /// The members of a team (`~/.claude/CLAUDE.md`).
        Team => "team",
        /// A project's own `CLAUDE.md`; the only layer whose rules may have path triggers.
        Project => "project",
    }
}

string_enum! {
    /// What the agent does when someone edits an enforced managed section.
    pub enum EnforcementMode as "mode" {
        /// Restore the managed section at once and report it.
        Block => "block",
        /// Keep the change, open a change request, revert when it is rejected or times out.
        Temporary => "temporary",
        /// Keep the change and report it.
        Warning => "warning",
    }
}

/// How a rule is enforced: the mode, plus how long a temporary change may stand before it is reverted.
///
/// Invariant (checked by [`Enforcement::parse`]): a timeout is present exactly when the mode is
/// [`EnforcementMode::Temporary`], and then lies in `1..=`[`Enforcement::MAX_TEMPORARY_TIMEOUT_SECS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Enforcement {
    mode: EnforcementMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temporary_timeout_secs: Option<u64>,
}

impl Enforcement {
    /// The longest a temporary change may stand: 30 days.
    pub const MAX_TEMPORARY_TIMEOUT_SECS: u64 = 30 * 24 * 60 * 60;

    /// Block mode: every edit is reverted at once.
    pub const BLOCK: Self = Self {
        mode: EnforcementMode::Block,
        temporary_timeout_secs: None,
    };

    /// Warning mode: every edit is kept and reported.
    pub const WARNING: Self = Self {
        mode: EnforcementMode::Warning,
        temporary_timeout_secs: None,
    };

    /// Builds an enforcement from its mode and optional timeout.
    ///
    /// # Errors
    /// - [`ValueError::Required`] when the mode is temporary and no timeout is given;
    /// - [`ValueError::NotAllowed`] when a timeout is given for block or warning;
    /// - [`ValueError::OutOfRange`] when the timeout is 0 or longer than 30 days.
    pub fn parse(
        mode: EnforcementMode,
        temporary_timeout_secs: Option<u64>,
    ) -> Result<Self, ValueError> {
        const FIELD: &str = "temporary_timeout_secs";
        match (mode, temporary_timeout_secs) {
            (EnforcementMode::Temporary, None) => Err(ValueError::Required {
                field: FIELD,
                condition: "mode is temporary",
            }),
            (EnforcementMode::Temporary, Some(secs))
                if secs == 0 || secs > Self::MAX_TEMPORARY_TIMEOUT_SECS =>
            {
                Err(ValueError::OutOfRange {
                    field: FIELD,
                    min: 1,
                    max: Self::MAX_TEMPORARY_TIMEOUT_SECS,
                    actual: secs,
                })
            }
            (EnforcementMode::Block | EnforcementMode::Warning, Some(_)) => {
                Err(ValueError::NotAllowed {
                    field: FIELD,
                    condition: "mode is temporary",
                })
            }
            (mode, timeout) => Ok(Self {
                mode,
                temporary_timeout_secs: timeout,
            }),
        }
    }

    /// Temporary mode with the given timeout in seconds.
    ///
    /// # Errors
    /// [`ValueError::OutOfRange`] when `secs` is 0 or longer than 30 days.
    pub fn temporary(secs: u64) -> Result<Self, ValueError> {
        Self::parse(EnforcementMode::Temporary, Some(secs))
    }

    /// The mode.
    pub fn mode(&self) -> EnforcementMode {
        self.mode
    }

    /// The timeout of a temporary change in seconds; `None` unless the mode is temporary.
    pub fn temporary_timeout_secs(&self) -> Option<u64> {
        self.temporary_timeout_secs
    }
}

/// A reason a person gives for a decision (rejecting a rule or a change, justifying an exception):
/// trimmed, non-blank, at most 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reason(String);

impl Reason {
    /// The longest reason accepted, in characters.
    pub const MAX_CHARS: usize = 2000;

    /// Parses a reason.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for a blank input, [`ValueError::TooLong`] past 2000 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        trimmed_text("reason", input, Self::MAX_CHARS).map(Self)
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest as 64 lowercase hexadecimal digits (uppercase input is lowercased).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Parses a hex digest for the field named `field` (e.g. `"original_hash"`).
    ///
    /// # Errors
    /// [`ValueError::Malformed`] unless `input` is exactly 64 hexadecimal digits.
    pub fn parse(field: &'static str, input: &str) -> Result<Self, ValueError> {
        if input.len() != 64 || !input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ValueError::Malformed {
                field,
                reason: "expected 64 hexadecimal digits".to_owned(),
            });
        }
        Ok(Self(input.to_ascii_lowercase()))
    }

    /// The digest as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layer_wire_names_match_serde() {
        for layer in Layer::ALL {
            let json = serde_json::to_string(layer).unwrap();
            assert_eq!(json, format!("\"{}\"", layer.as_str()));
            assert_eq!(Layer::parse(layer.as_str()), Ok(*layer));
        }
    }

    #[test]
    fn enforcement_mode_wire_names_match_serde() {
        for mode in EnforcementMode::ALL {
            let json = serde_json::to_string(mode).unwrap();
            assert_eq!(json, format!("\"{}\"", mode.as_str()));
            assert_eq!(mode.as_str().parse::<EnforcementMode>(), Ok(*mode));
        }
    }

    #[test]
    fn layer_rejects_the_legacy_aliases() {
        for alias in ["enterprise", "user", "global", "local", "Organization", ""] {
            assert!(
                matches!(
                    Layer::parse(alias),
                    Err(ValueError::Malformed { field: "layer", .. })
                ),
                "{alias} was accepted"
            );
        }
    }

    #[test]
    fn temporary_enforcement_needs_a_timeout() {
        assert_eq!(
            Enforcement::parse(EnforcementMode::Temporary, None),
            Err(ValueError::Required {
                field: "temporary_timeout_secs",
                condition: "mode is temporary"
            })
        );
    }

    #[test]
    fn block_and_warning_enforcement_refuse_a_timeout() {
        for mode in [EnforcementMode::Block, EnforcementMode::Warning] {
            assert_eq!(
                Enforcement::parse(mode, Some(60)),
                Err(ValueError::NotAllowed {
                    field: "temporary_timeout_secs",
                    condition: "mode is temporary"
                })
            );
        }
    }

    #[test]
    fn temporary_timeout_must_be_between_one_second_and_thirty_days() {
        assert!(matches!(
            Enforcement::temporary(0),
            Err(ValueError::OutOfRange { actual: 0, .. })
        ));
        assert!(matches!(
            Enforcement::temporary(Enforcement::MAX_TEMPORARY_TIMEOUT_SECS + 1),
            Err(ValueError::OutOfRange { .. })
        ));
        let longest = Enforcement::temporary(Enforcement::MAX_TEMPORARY_TIMEOUT_SECS).unwrap();
        assert_eq!(
            longest.temporary_timeout_secs(),
            Some(2_592_000),
            "30 days in seconds"
        );
        assert_eq!(longest.mode(), EnforcementMode::Temporary);
    }

    #[test]
    fn block_and_warning_parse_to_the_constants() {
        assert_eq!(
            Enforcement::parse(EnforcementMode::Block, None),
            Ok(Enforcement::BLOCK)
        );
        assert_eq!(
            Enforcement::parse(EnforcementMode::Warning, None),
            Ok(Enforcement::WARNING)
        );
    }

    #[test]
    fn enforcement_serializes_without_a_timeout_unless_temporary() {
        assert_eq!(
            serde_json::to_string(&Enforcement::BLOCK).unwrap(),
            r#"{"mode":"block"}"#
        );
        assert_eq!(
            serde_json::to_string(&Enforcement::temporary(3600).unwrap()).unwrap(),
            r#"{"mode":"temporary","temporary_timeout_secs":3600}"#
        );
    }

    #[test]
    fn reason_is_trimmed() {
        assert_eq!(
            Reason::parse("  too broad \n").unwrap().as_str(),
            "too broad"
        );
    }

    #[test]
    fn blank_reason_is_rejected() {
        assert_eq!(
            Reason::parse(" \t\n"),
            Err(ValueError::Empty { field: "reason" })
        );
    }

    #[test]
    fn reason_longer_than_2000_characters_is_rejected() {
        assert!(Reason::parse(&"é".repeat(2000)).is_ok());
        assert_eq!(
            Reason::parse(&"é".repeat(2001)),
            Err(ValueError::TooLong {
                field: "reason",
                max: 2000,
                actual: 2001,
                unit: LengthUnit::Characters
            })
        );
    }

    #[test]
    fn sha256_hex_is_lowercased() {
        let upper = "AB".repeat(32);
        assert_eq!(
            Sha256Hex::parse("hash", &upper).unwrap().as_str(),
            "ab".repeat(32)
        );
    }

    #[test]
    fn sha256_hex_needs_exactly_64_hex_digits() {
        for bad in ["", &"a".repeat(63), &"a".repeat(65), &"g".repeat(64)] {
            assert!(
                matches!(
                    Sha256Hex::parse("original_hash", bad),
                    Err(ValueError::Malformed {
                        field: "original_hash",
                        ..
                    })
                ),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn value_error_messages_name_the_field() {
        let err = ValueError::TooLong {
            field: "name",
            max: 200,
            actual: 201,
            unit: LengthUnit::Characters,
        };
        assert_eq!(
            err.to_string(),
            "name must be at most 200 characters long, got 201"
        );
    }

    proptest! {
        #[test]
        fn sha256_hex_accepts_exactly_64_hex_digits(input in "[0-9a-fA-Fg-z]{60,68}") {
            let valid = input.len() == 64 && input.chars().all(|c| c.is_ascii_hexdigit());
            prop_assert_eq!(Sha256Hex::parse("hash", &input).is_ok(), valid);
        }

        #[test]
        fn enforcement_parse_holds_its_invariant(
            mode in prop::sample::select(EnforcementMode::ALL.to_vec()),
            timeout in prop::option::of(0u64..=3_000_000),
        ) {
            if let Ok(enforcement) = Enforcement::parse(mode, timeout) {
                let is_temporary = enforcement.mode() == EnforcementMode::Temporary;
                prop_assert_eq!(enforcement.temporary_timeout_secs().is_some(), is_temporary);
                if let Some(secs) = enforcement.temporary_timeout_secs() {
                    prop_assert!((1..=Enforcement::MAX_TEMPORARY_TIMEOUT_SECS).contains(&secs));
                }
            }
        }

        #[test]
        fn reason_parse_never_panics_and_keeps_trimmed_text(input in any::<String>()) {
            if let Ok(reason) = Reason::parse(&input) {
                prop_assert_eq!(reason.as_str(), input.trim());
            }
        }
    }
}
