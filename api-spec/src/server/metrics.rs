//! `GET /metrics`: the Prometheus exposition of this process, outside the OpenAPI spec (it is for
//! scrapers, not clients). Served only to the clients the [`Exposition`] allows (loopback unless
//! `EDICT_METRICS_ALLOW` says otherwise); a request relayed by a proxy that is not trusted
//! (`EDICT_TRUSTED_PROXIES`) is refused, so a reverse proxy on the same machine does not expose it.
//! Without an exposition attached (no recorder in this process) the page is 404.

use super::problem::Problem;
use super::rate_limit::RateLimits;
use edict_application::metrics::Exposition;
use poem::http::StatusCode;
use poem::{IntoResponse, Request, Response, handler};
use std::sync::Arc;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics page.
#[handler]
pub fn page(request: &Request) -> Response {
    let Some(exposition) = request.data::<Exposition>() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "no metrics in this process",
        );
    };
    let peer = request
        .remote_addr()
        .as_socket_addr()
        .map(|addr| addr.ip().to_canonical());
    let relayed = request.headers().contains_key("x-forwarded-for")
        || request.headers().contains_key("forwarded");
    let client = match (request.data::<Arc<RateLimits>>(), peer) {
        (Some(limits), Some(peer)) => {
            let client = limits.origin(request);
            // A proxy relayed it and is not trusted: the client behind it is unknown.
            if relayed && client == peer {
                None
            } else {
                Some(client)
            }
        }
        (None, Some(peer)) if !relayed => Some(peer),
        _ => None,
    };
    match client {
        Some(client) if exposition.allows(client) => exposition
            .render()
            .with_content_type(CONTENT_TYPE)
            .into_response(),
        _ => refuse(
            StatusCode::FORBIDDEN,
            "metrics_not_allowed",
            "the metrics are served to the addresses EDICT_METRICS_ALLOW names (loopback by default)",
        ),
    }
}

fn refuse(status: StatusCode, slug: &str, detail: &str) -> Response {
    let body = serde_json::to_string(&Problem::new(status, slug, detail)).unwrap_or_default();
    body.with_content_type("application/problem+json")
        .with_status(status)
        .into_response()
}
