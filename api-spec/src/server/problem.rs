//! Errors as `application/problem+json` (RFC 9457), mapped from [`AppError`] in one place.

use edict_application::error::AppError;
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

/// A problem detail (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:edict:problem:<slug>`).
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a human.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For 422: the domain rule that refused the request (e.g. `self_approval`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For 422 on an input value, or 400 on a malformed query parameter: the field or parameter.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For 409: the version the resource is at now (send it in `If-Match` to retry).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

impl Problem {
    /// A problem of `status` with a slug and a detail.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:edict:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            rule: None,
            field: None,
            current_version: None,
        }
    }
}

/// Every error an endpoint can answer with.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "malformed_request")]
pub enum ErrorResponse {
    /// The request is malformed: bad JSON, a missing field, a wrong type, a bad path parameter.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid bearer token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// The caller's role does not allow this.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such resource.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The resource changed: `current_version` says where it is now.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The request body is larger than the server accepts (`EDICT_MAX_BODY_BYTES`, 1 MiB by
    /// default), whether announced by `Content-Length` or streamed (HTTP/1.1 chunks, HTTP/2 frames);
    /// it is not read past the limit.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body's `Content-Type` is not one the operation takes (`application/json`), or is
    /// missing.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// A domain rule refused the request: `rule` names it.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// Something failed on our side; the cause is in the server's log.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// A dependency is down; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

/// Turns poem-openapi's request-parsing errors (bad JSON, bad parameters) into problem+json 400s.
fn malformed_request(error: poem::Error) -> ErrorResponse {
    let status = error.status();
    if status == StatusCode::UNAUTHORIZED {
        return ErrorResponse::Unauthorized(Json(Problem::new(
            status,
            "unauthenticated",
            "a valid bearer token is required",
        )));
    }
    ErrorResponse::BadRequest(Json(Problem::new(
        StatusCode::BAD_REQUEST,
        "malformed-request",
        error.to_string(),
    )))
}

impl From<AppError> for ErrorResponse {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Unauthenticated => ErrorResponse::Unauthorized(Json(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required",
            ))),
            AppError::Forbidden(why) => ErrorResponse::Forbidden(Json(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                why,
            ))),
            AppError::NotFound(what) => {
                let detail = if what.ends_with("not found") {
                    what
                } else {
                    format!("{what} not found")
                };
                ErrorResponse::NotFound(Json(Problem::new(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    detail,
                )))
            }
            AppError::Conflict { current } => {
                let mut problem = Problem::new(
                    StatusCode::CONFLICT,
                    "version-conflict",
                    format!("the resource is at version {current}; reload it and retry"),
                );
                problem.current_version = Some(current);
                ErrorResponse::Conflict(Json(problem))
            }
            AppError::Rule { rule, message } => {
                let mut problem =
                    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "domain-rule", message);
                problem.rule = Some(rule);
                ErrorResponse::Unprocessable(Json(problem))
            }
            AppError::Invalid { field, message } => {
                let mut problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-value",
                    format!("invalid {field}: {message}"),
                );
                problem.rule = Some("invalid_value".into());
                problem.field = Some(field);
                ErrorResponse::Unprocessable(Json(problem))
            }
            AppError::BadParameter { parameter, message } => {
                let mut problem = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-request",
                    format!("invalid {parameter}: {message}"),
                );
                problem.field = Some(parameter);
                ErrorResponse::BadRequest(Json(problem))
            }
            AppError::NotYetConsistent {
                projection,
                position,
            } => ErrorResponse::Unavailable(Json(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-yet-consistent",
                format!(
                    "the {projection} read model has not applied position {position} yet; retry shortly"
                ),
            ))),
            AppError::Unavailable(cause) => {
                tracing::error!(%cause, "dependency unavailable");
                ErrorResponse::Unavailable(Json(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a dependency is unavailable; retry later",
                )))
            }
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                ErrorResponse::Internal(Json(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error occurred; it has been logged",
                )))
            }
        }
    }
}

/// The result of an endpoint.
pub type ApiResult<T> = Result<T, ErrorResponse>;
