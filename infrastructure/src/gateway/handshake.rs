//! The upgrade request, read before the WebSocket handshake so that it can be authenticated (an async
//! call) first: the request head is *peeked* from the socket, never consumed, and tungstenite then reads
//! it again and answers with the verdict made here (101, or 401 / 404 / 426 without an upgrade).

use super::Shared;
use edict_api::protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_domain::{AgentId, UserId};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::ErrorResponse;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// The longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// The first peek: an agent's upgrade request fits (the buffer grows to [`MAX_HEAD`] when not).
const FIRST_PEEK: usize = 1024;

/// What the gateway needs from the upgrade request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UpgradeRequest {
    /// The request path (without the query).
    pub path: String,
    /// The bearer token of `Authorization`.
    pub bearer: Option<String>,
    /// The `Edict-Protocol` header.
    pub protocol: Option<String>,
}

/// Peeks the request head of `stream` (until the blank line), for at most `timeout`. `None` when the
/// head is not complete in time, too long, or not HTTP.
pub(crate) async fn peek_request(stream: &TcpStream, timeout: Duration) -> Option<UpgradeRequest> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = vec![0u8; FIRST_PEEK];
    let mut seen = 0;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.peek(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        if let Some(end) = find_head_end(&buffer[..read]) {
            return parse(&buffer[..end]);
        }
        if read == buffer.len() {
            if buffer.len() == MAX_HEAD {
                return None;
            }
            buffer.resize(MAX_HEAD, 0);
            continue;
        }
        if read == seen {
            // Peeking again returns the same bytes at once: wait for more to arrive.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
        seen = read;
    }
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses a request head (request line and headers).
pub(crate) fn parse(head: &[u8]) -> Option<UpgradeRequest> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let _method = request_line.next()?;
    let target = request_line.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut request = UpgradeRequest {
        path,
        ..UpgradeRequest::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("authorization") {
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                request.bearer = Some(token.trim().to_owned());
            }
        } else if name
            .trim()
            .eq_ignore_ascii_case(edict_api::protocol::PROTOCOL_HEADER)
        {
            request.protocol = Some(value.to_owned());
        }
    }
    Some(request)
}

/// Who is connected.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub(crate) id: AgentId,
    pub(crate) user: UserId,
    pub(crate) bearer: String,
}

/// Why the upgrade is refused.
fn refusal(status: StatusCode, message: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_owned()));
    *response.status_mut() = status;
    if status == StatusCode::UPGRADE_REQUIRED {
        response
            .headers_mut()
            .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    }
    response
}

/// Decides the upgrade: the agent, or the refusal.
pub(crate) async fn admit(
    shared: &Shared,
    request: &UpgradeRequest,
) -> Result<Agent, ErrorResponse> {
    if request.path != "/ws" {
        return Err(refusal(StatusCode::NOT_FOUND, "not found"));
    }
    let Some(bearer) = &request.bearer else {
        return Err(refusal(StatusCode::UNAUTHORIZED, "agent token required"));
    };
    match shared.edict.authenticate(bearer).await {
        Ok(Principal::Agent { id, user }) => {
            if request.protocol.as_deref().map(str::trim) != Some(&PROTOCOL_VERSION.to_string()) {
                return Err(refusal(
                    StatusCode::UPGRADE_REQUIRED,
                    "unsupported protocol version",
                ));
            }
            Ok(Agent {
                id,
                user,
                bearer: bearer.clone(),
            })
        }
        Ok(Principal::User { .. }) | Err(AppError::Unauthenticated) => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "an agent token is required",
        )),
        Err(error) => {
            tracing::warn!(%error, "cannot authenticate an agent");
            Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot authenticate now",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_bearer_and_protocol_are_read_case_insensitively() {
        let head = b"GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nauthorization: bearer eda_abc\r\nedict-protocol: 1";
        assert_eq!(
            parse(head),
            Some(UpgradeRequest {
                path: "/ws".into(),
                bearer: Some("eda_abc".into()),
                protocol: Some("1".into()),
            })
        );
    }

    #[test]
    fn a_request_without_credentials_has_no_bearer() {
        let head = b"GET /ws HTTP/1.1\r\nAuthorization: Basic Zm9v";
        assert_eq!(parse(head).and_then(|r| r.bearer), None);
    }
}
