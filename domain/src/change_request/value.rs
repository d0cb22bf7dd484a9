//! The values of a change request: the file it is about, the diff, the agent's report id, its status,
//! the decision taken, and the exceptions asked for afterwards.

use crate::value::{Reason, ValueError, max_bytes_check, no_nul_check, string_enum, trimmed_text};
use crate::{ExceptionId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The path of the file whose managed section was edited, as the agent reports it: not blank, at most
/// 4096 bytes, no NUL. Kept exactly as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FilePath(String);

impl FilePath {
    /// The longest path accepted, in UTF-8 bytes.
    pub const MAX_BYTES: usize = 4096;

    /// Parses a file path.
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooLong`] past 4096 bytes, [`ValueError::ContainsNul`].
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "file";
        if input.trim().is_empty() {
            return Err(ValueError::Empty { field: FIELD });
        }
        max_bytes_check(FIELD, input, Self::MAX_BYTES)?;
        no_nul_check(FIELD, input)?;
        Ok(Self(input.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The unified diff of the edit: at most 256 KiB; may be empty (e.g. a change of line endings only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diff(String);

impl Diff {
    /// The largest diff accepted, in UTF-8 bytes.
    pub const MAX_BYTES: usize = 256 * 1024;

    /// Parses a diff.
    ///
    /// # Errors
    /// [`ValueError::TooLong`] past 262,144 bytes.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        max_bytes_check("diff", input, Self::MAX_BYTES)?;
        Ok(Self(input.to_owned()))
    }

    /// The diff as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id the agent gave its report, so that a report delivered twice is recognized: trimmed, 1 to 200
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReportId(String);

impl ReportId {
    /// The longest report id accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a report id.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for a blank input, [`ValueError::TooLong`] past 200 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        trimmed_text("report_id", input, Self::MAX_CHARS).map(Self)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_enum! {
    /// Where a change request is in its life.
    pub enum ChangeRequestStatus as "status" {
        /// Awaiting a team admin's decision (or its timeout).
        Pending => "pending",
        /// The change is kept.
        Approved => "approved",
        /// The change is reverted.
        Rejected => "rejected",
        /// Nobody decided before the timeout: the change is reverted.
        AutoReverted => "auto_reverted",
        /// After a rejection or revert, the developer asked to keep the change anyway.
        ExceptionRequested => "exception_requested",
        /// The change may stand, permanently or until the exception expires.
        ExceptionGranted => "exception_granted",
        /// The exception was refused: the change stays reverted.
        ExceptionDenied => "exception_denied",
        /// The developer withdrew the change request before it was decided.
        Withdrawn => "withdrawn",
    }
}

/// What kind of exception a developer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExceptionKind {
    /// Keep the change until a time.
    TimeLimited {
        /// When the exception should end.
        until: DateTime<Utc>,
    },
    /// Keep the change for good.
    Permanent,
}

/// Who ended the pending phase of a change request, how and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The team admin who approved or rejected, or the developer who withdrew; `None` for an automatic
    /// revert.
    pub by: Option<UserId>,
    /// The reason given for a rejection.
    pub reason: Option<Reason>,
    /// When.
    pub at: DateTime<Utc>,
}

/// How an exception request was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ExceptionResolution {
    /// The change may stand.
    Granted {
        /// The team admin.
        by: UserId,
        /// When the exception ends; `None` for a permanent one.
        until: Option<DateTime<Utc>>,
        /// When it was granted.
        at: DateTime<Utc>,
    },
    /// The exception was refused.
    Denied {
        /// The team admin.
        by: UserId,
        /// Why.
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
}

/// One request to keep a rejected or reverted change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionRequest {
    /// The exception's id.
    pub id: ExceptionId,
    /// The developer who asked (the one who made the change).
    pub requested_by: UserId,
    /// Why the change should stand.
    pub justification: Reason,
    /// What was asked for.
    pub kind: ExceptionKind,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// The decision; `None` while pending.
    pub resolution: Option<ExceptionResolution>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::LengthUnit;
    use proptest::prelude::*;

    #[test]
    fn file_path_is_kept_verbatim() {
        let path = "/home/dev/project/CLAUDE.md";
        assert_eq!(FilePath::parse(path).unwrap().as_str(), path);
    }

    #[test]
    fn file_path_must_not_be_blank_contain_nul_or_exceed_4096_bytes() {
        assert_eq!(
            FilePath::parse(" "),
            Err(ValueError::Empty { field: "file" })
        );
        assert_eq!(
            FilePath::parse("/a\0b"),
            Err(ValueError::ContainsNul { field: "file" })
        );
        assert!(FilePath::parse(&"/".repeat(4096)).is_ok());
        assert_eq!(
            FilePath::parse(&"/".repeat(4097)),
            Err(ValueError::TooLong {
                field: "file",
                max: 4096,
                actual: 4097,
                unit: LengthUnit::Bytes
            })
        );
    }

    #[test]
    fn diff_may_be_empty_but_not_larger_than_256_kib() {
        assert_eq!(Diff::parse("").unwrap().as_str(), "");
        assert!(Diff::parse(&"d".repeat(262_144)).is_ok());
        assert!(matches!(
            Diff::parse(&"d".repeat(262_145)),
            Err(ValueError::TooLong { field: "diff", .. })
        ));
    }

    #[test]
    fn report_id_is_trimmed_and_not_blank() {
        assert_eq!(ReportId::parse(" r-1 ").unwrap().as_str(), "r-1");
        assert_eq!(
            ReportId::parse(""),
            Err(ValueError::Empty { field: "report_id" })
        );
        assert!(ReportId::parse(&"r".repeat(201)).is_err());
    }

    #[test]
    fn status_wire_names_match_serde() {
        for status in ChangeRequestStatus::ALL {
            assert_eq!(
                serde_json::to_string(status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
        }
    }

    #[test]
    fn exception_kind_is_tagged_by_type() {
        assert_eq!(
            serde_json::to_string(&ExceptionKind::Permanent).unwrap(),
            r#"{"type":"permanent"}"#
        );
    }

    proptest! {
        #[test]
        fn file_path_parse_keeps_its_promises(input in any::<String>()) {
            if let Ok(path) = FilePath::parse(&input) {
                prop_assert_eq!(path.as_str(), input.as_str());
                prop_assert!(!input.contains('\0') && input.len() <= FilePath::MAX_BYTES);
                prop_assert!(!input.trim().is_empty());
            }
        }
    }
}
