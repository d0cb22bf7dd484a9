//! The plain HTTP pages of the gateway port, for orchestrators and scrapers: `GET /health/live`,
//! `GET /health/ready` (the same checks and answer shape as the API's: 200, or 503 problem+json
//! naming what failed) and `GET /metrics` (the Prometheus exposition, to the clients the
//! [`Exposition`](edict_application::metrics::Exposition) allows; 404 without one). A request for
//! them carries no `Upgrade`; the answer closes the connection.

use super::Shared;
use super::handshake::UpgradeRequest;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether `request` asks for one of these pages.
pub(crate) fn is_probe(request: &UpgradeRequest) -> bool {
    !request.upgrade
        && request.method == "GET"
        && matches!(
            request.path.as_str(),
            "/health/live" | "/health/ready" | "/metrics"
        )
}

/// Answers `request` (see [`is_probe`]) on `stream` and closes it, within a few seconds whatever the
/// client does.
pub(crate) async fn answer(shared: &Shared, mut stream: TcpStream, request: &UpgradeRequest) {
    let (status, content_type, body, retry) = match request.path.as_str() {
        "/health/live" => (
            200,
            "application/json",
            json!({"status": "ok"}).to_string(),
            false,
        ),
        "/health/ready" => ready(shared).await,
        _ => metrics(shared, &stream, request.forwarded),
    };
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let retry = if retry { "Retry-After: 5\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{retry}Connection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        // The request head was only peeked: read it away so closing does not reset the answer.
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut sink)).await;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

async fn ready(shared: &Shared) -> (u16, &'static str, String, bool) {
    let readiness = shared.edict.readiness().await;
    let checks: Vec<_> = readiness
        .checks
        .iter()
        .map(|check| match &check.failure {
            None => json!({"name": check.name, "status": "ok"}),
            Some(reason) => json!({"name": check.name, "status": "failed", "reason": reason}),
        })
        .collect();
    if readiness.is_ready() {
        return (
            200,
            "application/json",
            json!({"status": "ok", "checks": checks}).to_string(),
            false,
        );
    }
    let detail = readiness
        .failed()
        .map(|check| format!("{}: {}", check.name, check.failure.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("; ");
    let body = json!({
        "type": "urn:edict:problem:not_ready",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
        "checks": checks,
    });
    (503, "application/problem+json", body.to_string(), true)
}

/// The metrics page, to an allowed peer; a request a proxy relayed is refused (the gateway trusts no
/// proxy: its peer says nothing about the client).
fn metrics(
    shared: &Shared,
    stream: &TcpStream,
    forwarded: bool,
) -> (u16, &'static str, String, bool) {
    let Some(exposition) = &shared.settings.metrics else {
        return problem(404, "not_found", "no metrics in this process");
    };
    match stream.peer_addr() {
        Ok(peer) if !forwarded && exposition.allows(peer.ip()) => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            exposition.render(),
            false,
        ),
        _ => problem(
            403,
            "metrics_not_allowed",
            "the metrics are served to the addresses EDICT_METRICS_ALLOW names (loopback by default)",
        ),
    }
}

fn problem(status: u16, slug: &str, detail: &str) -> (u16, &'static str, String, bool) {
    let title = if status == 404 {
        "Not Found"
    } else {
        "Forbidden"
    };
    let body = json!({
        "type": format!("urn:edict:problem:{slug}"),
        "title": title,
        "status": status,
        "detail": detail,
    });
    (status, "application/problem+json", body.to_string(), false)
}
