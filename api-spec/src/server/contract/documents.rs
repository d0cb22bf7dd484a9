//! The read-model documents the catalog, list and rule set endpoints answer, as typed schemas: each list
//! page's items, a rule's catalog entry with its revisions, a team's rule set document.
//!
//! The read models store each document as the JSON their projection serialized; these types describe
//! that JSON field for field, so the wire stays what it was while the spec gains a schema per document.
//! A document is read into its type with [`typed`], which refuses (500) a document that does not parse
//! and, in debug builds, one that its type would write back differently: the end-to-end tests, which
//! run debug binaries, thereby check that every type matches its projection's JSON exactly.
//!
//! Times inside documents are [`Timestamp`]s: the text the projection wrote (RFC 3339, UTC, `Z`),
//! passed through unchanged.
//!
//! Layout: this module holds [`Timestamp`], [`typed`] and the pages; one file per read model holds its
//! documents (`catalog`, `directory`, `change_inbox`, `fleet`, `rulesets`).

mod catalog;
mod change_inbox;
mod directory;
mod fleet;
mod rulesets;
#[cfg(test)]
mod tests;

use super::text::string_type;
use crate::server::problem::{ErrorResponse, Problem};
use crate::server::queries::FreshnessDto;
use chrono::{DateTime, SecondsFormat, Utc};
use edict_application::queries::{Fetched, Freshness, Listed};
use poem::http::StatusCode;
use poem_openapi::Object;
use poem_openapi::payload::Json;
use poem_openapi::registry::MetaSchema;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON};
use serde_json::Value;

pub use catalog::{RuleEntry, RuleEntryFresh};
pub use change_inbox::ChangeRequestEntry;
pub use directory::{TeamEntry, UserEntry};
pub use fleet::AgentEntry;
pub use rulesets::{AsOfEntry, RuleSetDocument};

/// An instant as an RFC 3339 string, kept as the read model wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(pub String);

impl From<DateTime<Utc>> for Timestamp {
    /// The same text serde writes for a `DateTime<Utc>` (the read models' format).
    fn from(time: DateTime<Utc>) -> Self {
        Timestamp(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

string_type!(
    Timestamp,
    "string_date-time",
    MetaSchema::new_with_format("string", "date-time")
);

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) if DateTime::parse_from_rfc3339(&text).is_ok() => {
                Ok(Timestamp(text))
            }
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

/// Reads a read-model document into its type.
///
/// # Errors
/// 500 when the document does not parse, or (debug builds) when its type would write it differently:
/// the type and the projection disagree, which is a defect.
pub fn typed<T: ParseFromJSON + ToJSON>(doc: Value, what: &str) -> Result<T, ErrorResponse> {
    let original = cfg!(debug_assertions).then(|| doc.clone());
    let parsed = T::parse_from_json(Some(doc)).map_err(|error| {
        mismatch(
            what,
            format!("does not match its schema: {}", error.into_message()),
        )
    })?;
    if let Some(original) = original {
        let written = parsed.to_json().unwrap_or_default();
        if written != original {
            return Err(mismatch(
                what,
                format!("is written back differently: {original} became {written}"),
            ));
        }
    }
    Ok(parsed)
}

fn mismatch(what: &str, message: String) -> ErrorResponse {
    tracing::error!(document = what, %message, "read model document and its schema disagree");
    ErrorResponse::Internal(Json(Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred; it has been logged",
    )))
}

/// How fresh a single document is, inside the document (as the read model side writes it).
#[derive(Debug, Clone, Object)]
#[oai(rename = "DocumentFreshness")]
pub struct DocumentFreshness {
    /// The read model that answered.
    pub projection: String,
    /// The global position of the last event it applied (compare with a command's `position`, or send
    /// it as `min_position` to wait for it).
    pub position: i64,
    /// Events committed after it that it has not applied yet.
    pub lag: i64,
    /// When it last moved.
    pub updated_at: Timestamp,
}

impl From<Freshness> for DocumentFreshness {
    fn from(f: Freshness) -> Self {
        DocumentFreshness {
            projection: f.projection,
            position: f.position,
            lag: f.lag,
            updated_at: f.updated_at.into(),
        }
    }
}

// ----- pages -----

macro_rules! page {
    ($(#[$doc:meta])* $name:ident of $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Object)]
        pub struct $name {
            /// The items, in a stable order.
            pub items: Vec<$item>,
            /// Pass as `after` to get the next page; absent on the last page.
            #[oai(skip_serializing_if_is_none)]
            pub next: Option<String>,
            /// How fresh the list is.
            pub freshness: FreshnessDto,
        }

        impl $name {
            /// The page of `listed`, each item read into its type.
            ///
            /// # Errors
            /// 500 when a document does not match its type.
            pub fn of(listed: Listed) -> Result<Self, ErrorResponse> {
                Ok($name {
                    items: listed
                        .items
                        .into_iter()
                        .map(|item| typed(item, stringify!($item)))
                        .collect::<Result<_, _>>()?,
                    next: listed.next,
                    freshness: listed.freshness.into(),
                })
            }
        }
    };
}

page!(
    /// A page of the rule catalog.
    RulePage of RuleEntry
);
page!(
    /// A page of teams.
    TeamPage of TeamEntry
);
page!(
    /// A page of users.
    UserPage of UserEntry
);
page!(
    /// A page of agents.
    AgentPage of AgentEntry
);
page!(
    /// A page of change requests.
    ChangeRequestPage of ChangeRequestEntry
);

/// A rule's catalog entry with the catalog's freshness.
///
/// # Errors
/// 500 when the document does not match its type.
pub fn rule_entry(fetched: Fetched) -> Result<RuleEntryFresh, ErrorResponse> {
    Ok(RuleEntryFresh {
        entry: typed(fetched.item, "RuleEntry")?,
        freshness: fetched.freshness.into(),
    })
}

/// A team's rule set document with the read model's freshness.
///
/// # Errors
/// 500 when the document does not match its type.
pub fn ruleset(fetched: Fetched) -> Result<RuleSetDocument, ErrorResponse> {
    let mut doc: RuleSetDocument = typed(fetched.item, "RuleSetDocument")?;
    doc.freshness = Some(fetched.freshness.into());
    Ok(doc)
}
