//! The one error type of the use cases; the HTTP layer maps each variant to a status in one place.

use crate::auth::AuthError;
use crate::command::CommandError;
use crate::event_log::EventLogError;

/// Why a use case did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// No valid credentials (401).
    #[error("authentication required")]
    Unauthenticated,
    /// Authenticated, but not allowed (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The thing does not exist (404).
    #[error("{0} not found")]
    NotFound(String),
    /// The aggregate is not at the expected version, or a concurrent change won (409).
    #[error("version conflict: the current version is {current}")]
    Conflict {
        /// The current version.
        current: u64,
    },
    /// A domain rule refused the command (422); `rule` names it in snake_case.
    #[error("{message}")]
    Rule {
        /// The broken rule, e.g. `self_approval`.
        rule: String,
        /// What happened, for a human.
        message: String,
    },
    /// An input value is not acceptable (422), e.g. a name too long.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A request parameter is malformed (400), e.g. an `as_of` that is neither a time nor a position
    /// of the log.
    #[error("invalid parameter {parameter}: {message}")]
    BadParameter {
        /// The parameter.
        parameter: String,
        /// What is wrong with it.
        message: String,
    },
    /// A read asked to see a write (`min_position`) its read model has not applied yet (503, retry).
    #[error("the {projection} read model has not reached position {position} yet")]
    NotYetConsistent {
        /// The projection.
        projection: String,
        /// The position asked for.
        position: i64,
    },
    /// A dependency (the store) is down (503).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure (500); the message is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A 422 for a domain error: its rule name comes from the error's `Debug` variant name.
    pub fn rule<E: std::error::Error + std::fmt::Debug>(error: &E) -> Self {
        AppError::Rule {
            rule: snake_case(variant_name(&format!("{error:?}"))),
            message: error.to_string(),
        }
    }

    /// A 422 for an input value that does not parse.
    pub fn invalid(field: &str, error: impl std::fmt::Display) -> Self {
        AppError::Invalid {
            field: field.to_owned(),
            message: error.to_string(),
        }
    }
}

/// The variant name at the start of a `Debug` rendering: `SelfApproval { .. }` → `SelfApproval`.
fn variant_name(debug: &str) -> &str {
    let end = debug
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(debug.len());
    &debug[..end]
}

/// `SelfApproval` → `self_approval`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl From<AuthError> for AppError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::EmailTaken => AppError::Rule {
                rule: "email_taken".into(),
                message: "another user already has this email".into(),
            },
            AuthError::Backend(e) => AppError::Unavailable(e),
        }
    }
}

impl From<crate::read_models::ReadModelError> for AppError {
    fn from(error: crate::read_models::ReadModelError) -> Self {
        match error {
            crate::read_models::ReadModelError::UnknownProjection(name) => {
                AppError::NotFound(format!("projection {name}"))
            }
            crate::read_models::ReadModelError::Unavailable(e) => AppError::Unavailable(e),
        }
    }
}

impl From<EventLogError> for AppError {
    fn from(error: EventLogError) -> Self {
        match error {
            EventLogError::Unavailable(e) => AppError::Unavailable(e),
            corrupt @ EventLogError::Corrupt { .. } => AppError::Internal(corrupt.to_string()),
        }
    }
}

/// Domain errors that mean "no such aggregate" become 404s; the rest are broken rules (422).
pub trait DomainFailure: std::error::Error + std::fmt::Debug {
    /// Whether the error says the aggregate does not exist.
    fn is_not_found(&self) -> bool;
}

impl<E: DomainFailure> From<CommandError<E>> for AppError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Domain(e) if e.is_not_found() => AppError::NotFound(e.to_string()),
            CommandError::Domain(e) => AppError::rule(&e),
            CommandError::Conflict { current } => AppError::Conflict { current },
            CommandError::Store(e) => AppError::Unavailable(e),
        }
    }
}

impl From<edict_domain::value::ValueError> for AppError {
    fn from(error: edict_domain::value::ValueError) -> Self {
        use edict_domain::value::ValueError as V;
        let field = match &error {
            V::Empty { field }
            | V::TooLong { field, .. }
            | V::ContainsNul { field }
            | V::Malformed { field, .. }
            | V::OutOfRange { field, .. }
            | V::Required { field, .. }
            | V::NotAllowed { field, .. } => *field,
        };
        AppError::Invalid {
            field: field.to_owned(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_come_from_the_variant_in_snake_case() {
        assert_eq!(snake_case(variant_name("SelfApproval")), "self_approval");
        assert_eq!(
            snake_case(variant_name("NotPending { revision: 2 }")),
            "not_pending"
        );
        assert_eq!(
            snake_case(variant_name("AlreadyApprovedBy(UserId(..))")),
            "already_approved_by"
        );
    }
}
