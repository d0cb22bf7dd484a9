//! Cross-cutting HTTP behaviour: request ids and tracing spans, problem+json for every error, and
//! `Idempotency-Key` replays.

use super::problem::{ErrorResponse, Problem};
use edict_application::Edict;
use edict_application::auth::IdempotencyClaim;
use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

/// The header carrying the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id of the current request (from `X-Request-Id`, or generated).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives every request an id, a tracing span that carries it on every log line, and the id in the
/// response; logs each request's outcome.
pub async fn trace_request<E: Endpoint>(next: E, mut request: Request) -> poem::Result<Response> {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    super::trace_context::adopt_remote_parent(&span, request.headers());
    let method = request.method().clone();
    let route = route_label(&method, request.uri().path());
    async move {
        let started = std::time::Instant::now();
        let result = next.call(request).await;
        let mut response = match result {
            Ok(response) => response.into_response(),
            Err(error) => problem_response(error),
        };
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        record(&method, route, status, elapsed);
        let millis = elapsed.as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::error!(status, millis, "request failed");
        } else {
            tracing::info!(status, millis, "request");
        }
        Ok(response)
    }
    .instrument(span)
    .await
}

/// The `route` label of a request: the template of its route (`/api/v1/rules/{id}`), one of the
/// pages outside the API, or `unmatched` (so a label never carries what a client typed).
fn route_label(method: &poem::http::Method, path: &str) -> &'static str {
    if let Some(row) = super::authorization::route(method, path) {
        return row.path;
    }
    match path {
        "/metrics" => "/metrics",
        "/device" => "/device",
        "/openapi.json" => "/openapi.json",
        _ if path == "/docs" || path.starts_with("/docs/") => "/docs",
        _ => "unmatched",
    }
}

/// Counts a served request and its duration (`edict_http_*`).
fn record(
    method: &poem::http::Method,
    route: &'static str,
    status: u16,
    elapsed: std::time::Duration,
) {
    use edict_application::metrics::names;
    let method = match *method {
        poem::http::Method::GET => "GET",
        poem::http::Method::POST => "POST",
        poem::http::Method::PUT => "PUT",
        poem::http::Method::PATCH => "PATCH",
        poem::http::Method::DELETE => "DELETE",
        poem::http::Method::HEAD => "HEAD",
        poem::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    metrics::counter!(names::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status.to_string())
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route, "method" => method).record(elapsed);
}

/// Any error that is not already problem+json becomes one, keeping its status.
pub fn problem_response(error: poem::Error) -> Response {
    let status = error.status();
    let message = error.to_string();
    let response = error.into_response();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if is_problem {
        return response;
    }
    let (slug, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "method not allowed on this route".to_owned(),
        ),
        StatusCode::UNAUTHORIZED => (
            "unauthenticated",
            "a valid bearer token is required".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", message),
        s if s.is_server_error() => (
            "internal",
            "an internal error occurred; it has been logged".to_owned(),
        ),
        _ => ("malformed-request", message),
    };
    if status.is_server_error() {
        tracing::error!(%status, "unhandled error");
    }
    problem_with_status(status, slug, detail)
}

fn problem_with_status(status: StatusCode, slug: &str, detail: String) -> Response {
    let body = serde_json::to_string(&Problem::new(status, slug, detail)).unwrap_or_default();
    Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(body)
}

/// The largest request body this server accepts (`EDICT_MAX_BODY_BYTES`), as request data; without it,
/// [`super::MAX_BODY_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl Default for BodyLimit {
    fn default() -> Self {
        BodyLimit(super::MAX_BODY_BYTES)
    }
}

/// Refuses request bodies larger than the [`BodyLimit`] with a 413 on every transport: announced by
/// `Content-Length` (refused before a byte is read), streamed in HTTP/1.1 chunks, or sent as HTTP/2 data
/// frames without a length. Every body is read here, up to the limit and never beyond it, and handed on
/// in memory, so no extractor behind it can buffer more (poem's `Json` reads a body whole). poem's
/// `SizeLimit` only reads `Content-Length` and would refuse bodiless GETs that send none.
pub async fn limit_body<E: Endpoint>(next: E, mut request: Request) -> poem::Result<Response> {
    let limit = request.data::<BodyLimit>().copied().unwrap_or_default().0;
    let too_large = || {
        problem_with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("request bodies are limited to {limit} bytes"),
        )
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Ok(too_large());
    }
    match request.take_body().into_bytes_limit(limit).await {
        Ok(bytes) => {
            request.set_body(bytes);
            next.call(request).await.map(IntoResponse::into_response)
        }
        Err(poem::error::ReadBodyError::PayloadTooLarge) => Ok(too_large()),
        // A body that breaks off, or (HTTP/2) runs past its own content-length.
        Err(error) => Ok(problem_with_status(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            format!("cannot read the request body: {error}"),
        )),
    }
}

/// The operations whose successful response carries a secret: tokens of every kind (sign-in and
/// refresh, device codes and the agent token a poll collects, enrollment tokens, agent tokens).
pub fn carries_secret(method: &Method, path: &str) -> bool {
    method == Method::POST
        && (path.starts_with("/api/v1/auth/")
            || path.starts_with("/api/v1/device/code")
            || path.starts_with("/api/v1/device/token")
            || path == "/api/v1/enrollment-tokens"
            || path == "/api/v1/agents"
            || path == "/api/v1/agents/enroll"
            || path == "/api/v1/agent/token")
}

/// Replays the first successful response of a POST retried with the same `Idempotency-Key` and body.
///
/// The key belongs to the authenticated user (a request without valid credentials is not looked up;
/// it goes on to fail with 401, or, for the operations that need no credentials, runs as if it had no
/// key). A key reused with another body is a 422; a key whose first request is still running is a 409.
///
/// A response that carries a secret ([`carries_secret`]) is never stored: the key remembers only
/// that its request succeeded, and a retry gets a 409 `idempotency-response-withheld` (the request
/// is not run again). Such responses are also marked `Cache-Control: no-store`.
pub async fn idempotency<E: Endpoint>(next: E, request: Request) -> poem::Result<Response> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let secret = carries_secret(request.method(), request.uri().path());
    let (Some(key), true) = (key, request.method() == Method::POST) else {
        return call_marking_secrets(next, request, secret).await;
    };
    let Some(edict) = request.data::<Arc<Edict>>().cloned() else {
        return call_marking_secrets(next, request, secret).await;
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let principal = match token {
        Some(token) => edict.authenticate(&token).await.ok(),
        None => None,
    };
    let Some(principal) = principal else {
        return call_marking_secrets(next, request, secret).await;
    };
    if key.is_empty() || key.len() > 255 {
        return Ok(
            ErrorResponse::from(edict_application::error::AppError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 characters",
            ))
            .into_response(),
        );
    }
    let (parts, body) = request.into_parts();
    // `limit_body` runs before this middleware: the body is already in memory, within the limit.
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .copied()
        .unwrap_or_default()
        .0;
    let bytes = body
        .into_bytes_limit(limit)
        .await
        .map_err(|e| poem::Error::from_string(e.to_string(), StatusCode::PAYLOAD_TOO_LARGE))?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());
    let owner = principal.actor();
    let claim = edict
        .idempotency()
        .claim(&owner, &key, &request_hash)
        .await
        .map_err(|e| {
            poem::Error::from_response(
                ErrorResponse::from(edict_application::error::AppError::Unavailable(e))
                    .into_response(),
            )
        })?;
    match claim {
        IdempotencyClaim::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok(Response::builder()
                .status(status)
                .content_type("application/json; charset=utf-8")
                .header("idempotent-replayed", "true")
                .body(body))
        }
        IdempotencyClaim::Withheld { status } => {
            let mut problem = Problem::new(
                StatusCode::CONFLICT,
                "idempotency-response-withheld",
                format!(
                    "the request with this Idempotency-Key succeeded (status {status}) and was not run \
                     again; its response held a secret, which is never kept: look the resource up, \
                     or revoke it and make another"
                ),
            );
            problem.rule = Some("idempotency_response_withheld".into());
            Ok(ErrorResponse::Conflict(Json(problem)).into_response())
        }
        IdempotencyClaim::Mismatch => {
            let mut problem = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "this Idempotency-Key was used for a different request",
            );
            problem.rule = Some("idempotency_key_reused".into());
            Ok(ErrorResponse::Unprocessable(Json(problem)).into_response())
        }
        IdempotencyClaim::InProgress => Ok(ErrorResponse::Conflict(Json(Problem::new(
            StatusCode::CONFLICT,
            "idempotency-key-in-progress",
            "a request with this Idempotency-Key is still running; retry shortly",
        )))
        .into_response()),
        IdempotencyClaim::Fresh => {
            let request = Request::from_parts(parts, Body::from(bytes));
            let response = match next.call(request).await {
                Ok(response) => response.into_response(),
                Err(error) => problem_response(error),
            };
            if response.status().is_success() && secret {
                if let Err(e) = edict
                    .idempotency()
                    .complete_withheld(&owner, &key, response.status().as_u16())
                    .await
                {
                    tracing::warn!(error = %e, "could not remember an idempotent request");
                }
                Ok(no_store(response))
            } else if response.status().is_success() {
                let (parts, body) = response.into_parts();
                let bytes = match body.into_vec().await {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        let _ = edict.idempotency().release(&owner, &key).await;
                        return Err(poem::Error::from_string(
                            format!("cannot read the response: {error}"),
                            StatusCode::INTERNAL_SERVER_ERROR,
                        ));
                    }
                };
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if let Err(e) = edict
                    .idempotency()
                    .complete(&owner, &key, parts.status.as_u16(), &text)
                    .await
                {
                    tracing::warn!(error = %e, "could not remember an idempotent response");
                }
                Ok(Response::from_parts(parts, Body::from(bytes)))
            } else {
                if let Err(e) = edict.idempotency().release(&owner, &key).await {
                    tracing::warn!(error = %e, "could not release an idempotency key");
                }
                Ok(response)
            }
        }
    }
}

/// Runs a request without idempotency; a response that carries a secret is marked `no-store`.
async fn call_marking_secrets<E: Endpoint>(
    next: E,
    request: Request,
    secret: bool,
) -> poem::Result<Response> {
    let response = next.call(request).await.map(IntoResponse::into_response)?;
    Ok(if secret { no_store(response) } else { response })
}

/// `Cache-Control: no-store` (RFC 6749 §5.1: responses with tokens must not be cached).
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
