//! What every resource module shares: the request context from headers, the command answer, a single
//! resource's `ETag` (its version) and `If-None-Match`, parsing ids and values with errors that name the
//! field.

use super::middleware::RequestId;
use super::problem::{ApiResult, ErrorResponse};
use edict_application::error::AppError;
use edict_application::{Outcome, RequestContext};
use edict_domain::value::ValueError;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object};

/// The answer to a command.
#[derive(Debug, Clone, Object)]
pub struct CommandAccepted {
    /// The id of the resource the command addressed (new for a create).
    pub id: String,
    /// The resource's version after the command; send it as `If-Match` to change only this version.
    pub version: u64,
    /// The global log position of the command's last event (absent when the command changed nothing).
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<i64>,
}

impl From<Outcome> for CommandAccepted {
    fn from(outcome: Outcome) -> Self {
        CommandAccepted {
            id: outcome.id,
            version: outcome.version,
            position: outcome.position,
        }
    }
}

/// What a command answers.
pub type Accepted = ApiResult<Json<CommandAccepted>>;

/// The request context of a command: request id, correlation id and `If-Match`.
///
/// # Errors
/// 400 when `If-Match` is not a version number.
pub fn context(request: &Request) -> Result<RequestContext, ErrorResponse> {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let correlation_id = request
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    let expected_version = match request.headers().get("if-match") {
        None => None,
        Some(value) => parse_if_match(value.to_str().unwrap_or_default()).ok_or_else(|| {
            ErrorResponse::BadRequest(poem_openapi::payload::Json(super::problem::Problem::new(
                poem::http::StatusCode::BAD_REQUEST,
                "malformed-request",
                "If-Match must carry a version number, e.g. If-Match: \"3\"",
            )))
        })?,
    };
    Ok(RequestContext {
        request_id,
        correlation_id,
        expected_version,
        traceparent: super::trace_context::current_traceparent(),
    })
}

/// `3`, `"3"` or `W/"3"` → `Some(Some(3))`; `*` (any version) → `Some(None)`; anything else → `None`.
fn parse_if_match(value: &str) -> Option<Option<u64>> {
    let value = value.trim();
    if value == "*" {
        return Some(None);
    }
    let value = value.strip_prefix("W/").unwrap_or(value);
    value.trim_matches('"').parse().ok().map(Some)
}

/// Parses an id from a path, as a 404 when it is not a UUID (no such resource can exist).
pub fn id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ErrorResponse> {
    raw.parse()
        .map_err(|_| ErrorResponse::from(AppError::NotFound(what.to_owned())))
}

/// Parses an id given in a request body, as a 422 naming `field` when it is not a UUID.
pub fn body_id<T: std::str::FromStr>(raw: &str, field: &'static str) -> Result<T, ErrorResponse> {
    raw.parse().map_err(|_| {
        invalid(ValueError::Malformed {
            field,
            reason: "must be a UUID".into(),
        })
    })
}

/// A value that failed to parse, as a 422 naming the field.
pub fn invalid(error: ValueError) -> ErrorResponse {
    ErrorResponse::from(AppError::from(error))
}

/// A single resource, with its version as a strong `ETag`; 304 when `If-None-Match` names that version.
#[derive(Debug, ApiResponse)]
pub enum Tagged<T: ToJSON + Send + Sync> {
    /// The resource. `ETag` is its version (`"7"`): send it as `If-None-Match` to be told when it has
    /// not changed, or as `If-Match` on a write to change only this version.
    #[oai(status = 200)]
    Ok(
        Json<T>,
        /// The resource's version, as a strong entity tag.
        #[oai(header = "ETag")]
        String,
    ),
    /// `If-None-Match` names the current version: the resource has not changed. No body.
    #[oai(status = 304)]
    NotModified(
        /// The resource's version, as a strong entity tag.
        #[oai(header = "ETag")]
        String,
    ),
}

/// `body` at `version`, or 304 when `if_none_match` (the request's `If-None-Match`) names that
/// version.
pub fn tagged<T: ToJSON + Send + Sync>(
    body: T,
    version: u64,
    if_none_match: Option<&str>,
) -> Tagged<T> {
    let etag = format!("\"{version}\"");
    if if_none_match.is_some_and(|header| none_match_names(header, version)) {
        Tagged::NotModified(etag)
    } else {
        Tagged::Ok(Json(body), etag)
    }
}

/// A resource as its DTO (`None`, a 404 naming `what`: not yet created) at the version `version` reads,
/// tagged as [`tagged`] does.
pub fn found<T: ToJSON + Send + Sync>(
    dto: Option<T>,
    what: &str,
    version: fn(&T) -> u64,
    if_none_match: Option<&str>,
) -> ApiResult<Tagged<T>> {
    let dto = dto.ok_or_else(|| AppError::NotFound(what.to_owned()))?;
    let version = version(&dto);
    Ok(tagged(dto, version, if_none_match))
}

/// Whether an `If-None-Match` value names `version`: `*`, or a list of entity tags compared weakly
/// (RFC 9110 §13.1.2), one of which is `"version"` or `W/"version"`.
fn none_match_names(header: &str, version: u64) -> bool {
    let header = header.trim();
    header == "*"
        || header.split(',').any(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.strip_prefix('"')
                .and_then(|tag| tag.strip_suffix('"'))
                .and_then(|tag| tag.parse::<u64>().ok())
                == Some(version)
        })
}

#[cfg(test)]
mod tests {
    use super::{none_match_names, parse_if_match};

    #[test]
    fn if_none_match_names_a_version_by_strong_or_weak_tag_in_a_list_or_star() {
        assert!(none_match_names("\"3\"", 3));
        assert!(none_match_names("W/\"3\"", 3));
        assert!(none_match_names("\"1\", \"3\"", 3));
        assert!(none_match_names("*", 3));
        assert!(!none_match_names("\"4\"", 3));
        assert!(!none_match_names("3", 3));
        assert!(!none_match_names("\"-3\"", 3));
        assert!(!none_match_names("", 3));
    }

    #[test]
    fn if_match_accepts_bare_quoted_and_weak_versions() {
        assert_eq!(parse_if_match("3"), Some(Some(3)));
        assert_eq!(parse_if_match("\"3\""), Some(Some(3)));
        assert_eq!(parse_if_match("W/\"12\""), Some(Some(12)));
        assert_eq!(parse_if_match("*"), Some(None));
        assert_eq!(parse_if_match("abc"), None);
    }
}

/// An acknowledgement without a resource.
#[derive(Debug, Clone, Object)]
pub struct Done {
    /// Always true.
    pub done: bool,
}
