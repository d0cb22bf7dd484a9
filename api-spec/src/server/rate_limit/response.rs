//! A refused request's answer: `429 Too Many Requests` with `Retry-After` and a problem+json body, and
//! the error type of the operations that may be refused for their rate.

use crate::server::problem::{ErrorResponse, Problem};
use edict_application::error::AppError;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaResponses, Registry};
use std::time::Duration;

/// A request refused for its rate: when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// What was limited, for the problem's detail (`sign-in attempts from this address`).
    pub what: &'static str,
    /// How long until the next request would be let through.
    pub retry_after: Duration,
}

impl Throttled {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        let secs = self.retry_after_secs();
        TooManyRequests::Limited(
            Json(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!("too many {}; retry in {secs} s", self.what),
            )),
            secs,
        )
        .into_response()
    }
}

/// The 429 answer, as documented in the spec.
#[derive(Debug, ApiResponse)]
enum TooManyRequests {
    /// Too many requests of this kind: wait `Retry-After` seconds (the problem says what was limited).
    #[oai(status = 429, content_type = "application/problem+json")]
    Limited(
        Json<Problem>,
        /// Seconds until a request of this kind is let through again.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

/// The error of an operation that has a rate limit: every [`ErrorResponse`], and 429.
#[derive(Debug)]
pub enum LimitedError {
    /// Refused for its rate.
    Throttled(Throttled),
    /// Any other error.
    Error(ErrorResponse),
}

/// The result of an operation that has a rate limit.
pub type LimitedResult<T> = Result<T, LimitedError>;

impl From<Throttled> for LimitedError {
    fn from(throttled: Throttled) -> Self {
        LimitedError::Throttled(throttled)
    }
}

impl From<ErrorResponse> for LimitedError {
    fn from(error: ErrorResponse) -> Self {
        LimitedError::Error(error)
    }
}

impl From<AppError> for LimitedError {
    fn from(error: AppError) -> Self {
        LimitedError::Error(error.into())
    }
}

impl IntoResponse for LimitedError {
    fn into_response(self) -> Response {
        match self {
            LimitedError::Throttled(throttled) => throttled.into_response(),
            LimitedError::Error(error) => error.into_response(),
        }
    }
}

impl From<LimitedError> for poem::Error {
    fn from(error: LimitedError) -> Self {
        poem::Error::from_response(error.into_response())
    }
}

impl ApiResponse for LimitedError {
    const BAD_REQUEST_HANDLER: bool = true;

    fn meta() -> MetaResponses {
        let mut meta = ErrorResponse::meta();
        meta.responses.extend(TooManyRequests::meta().responses);
        meta.responses.sort_by_key(|r| r.status);
        meta
    }

    fn register(registry: &mut Registry) {
        ErrorResponse::register(registry);
        TooManyRequests::register(registry);
    }

    fn from_parse_request_error(error: poem::Error) -> Self {
        LimitedError::Error(ErrorResponse::from_parse_request_error(error))
    }
}

/// `Retry-After` on a response (for limits enforced outside an operation's handler).
pub fn with_retry_after(mut response: Response, secs: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
