//! The upgrade request, read before the WebSocket handshake so that it can be authenticated (an async
//! call) first: the request head is *peeked* from the socket, never consumed, and tungstenite then reads
//! it again and answers with the verdict made here (101, or 401 / 404 / 426 / 429 without an upgrade).
//!
//! Caps: a socket holds one of the gateway's `max_unauthenticated` permits from its accept until its
//! upgrade request has been authenticated ([`unauthenticated`]; without a permit it is answered 503 at
//! once by [`refuse_busy`]), and an authenticated socket holds one of its agent's
//! `max_sockets_per_agent` slots ([`Sockets`]) until it ends.

use super::Shared;
use crate::protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_domain::{AgentId, UserId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
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
    /// The request method (`GET` for an upgrade).
    pub method: String,
    /// Whether it asks for an upgrade (an `Upgrade` header).
    pub upgrade: bool,
    /// Whether a proxy relayed it (`X-Forwarded-For` or `Forwarded`): its peer is not its client.
    pub forwarded: bool,
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
            return parse(&buffer[..end + 4]);
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

/// Where the head's closing blank line (`\r\n\r\n`) starts.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The most headers an upgrade request may carry.
const MAX_HEADERS: usize = 64;

/// Parses a complete request head (request line, headers and the closing blank line) with `httparse`:
/// `None` when it is not a well-formed HTTP/1.x request head, is incomplete, or has more than
/// [`MAX_HEADERS`] headers. Header names are matched case-insensitively; a header value that is not UTF-8
/// is ignored.
pub(crate) fn parse(head: &[u8]) -> Option<UpgradeRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !parsed.parse(head).ok()?.is_complete() {
        return None;
    }
    let target = parsed.path?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut request = UpgradeRequest {
        path,
        method: parsed.method.unwrap_or_default().to_owned(),
        ..UpgradeRequest::default()
    };
    for header in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            continue;
        };
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("authorization") {
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                request.bearer = Some(token.trim().to_owned());
            }
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            request.upgrade = true;
        } else if header.name.eq_ignore_ascii_case("x-forwarded-for")
            || header.name.eq_ignore_ascii_case("forwarded")
        {
            request.forwarded = true;
        } else if header.name.eq_ignore_ascii_case(PROTOCOL_HEADER) {
            request.protocol = Some(value.to_owned());
        }
    }
    Some(request)
}

tokio::task_local! {
    /// The permit of the socket this task serves while it is not authenticated yet.
    static UNAUTHENTICATED: RefCell<Option<OwnedSemaphorePermit>>;
}

/// Serves a socket (`serve`) holding `permit` until its upgrade request is authenticated (or the
/// socket ends).
pub(crate) async fn unauthenticated(permit: OwnedSemaphorePermit, serve: impl Future<Output = ()>) {
    UNAUTHENTICATED
        .scope(RefCell::new(Some(permit)), serve)
        .await;
}

/// Gives the permit of this task's socket back: it is authenticated (or refused).
fn authenticated() {
    let _ = UNAUTHENTICATED.try_with(|permit| permit.borrow_mut().take());
}

/// The answer to a socket over the cap of unauthenticated sockets.
const BUSY: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
Content-Type: text/plain\r\nContent-Length: 56\r\n\r\ntoo many connections are authenticating; retry shortly\r\n";

/// Answers a socket the gateway has no permit for (503, `Retry-After: 1`) and closes it, within a
/// second whatever the client does.
pub(crate) async fn refuse_busy(mut stream: TcpStream) {
    let answer = async {
        stream.write_all(BUSY.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes, so the answer is not lost to a reset.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// The sockets each agent holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sockets(Arc<Mutex<HashMap<AgentId, usize>>>);

impl Sockets {
    /// A slot for one more socket of `agent`, unless it already holds `max`.
    fn claim(&self, agent: AgentId, max: usize) -> Option<Slot> {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(agent).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            sockets: self.clone(),
            agent,
        })
    }

    /// How many sockets `agent` holds.
    #[cfg(test)]
    fn held(&self, agent: AgentId) -> usize {
        let held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.get(&agent).copied().unwrap_or(0)
    }
}

/// One socket of an agent; given back when dropped (when the connection ends).
pub(crate) struct Slot {
    sockets: Sockets,
    agent: AgentId,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("agent", &self.agent).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .sockets
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.agent) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.agent);
            }
        }
    }
}

/// Who is connected.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub(crate) id: AgentId,
    pub(crate) user: UserId,
    pub(crate) bearer: String,
    /// The socket's slot among its agent's: held as long as any clone of this is.
    #[allow(dead_code)]
    slot: Arc<Slot>,
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

/// Decides the upgrade: the agent, or the refusal. Either way the socket stops counting as
/// unauthenticated.
pub(crate) async fn admit(
    shared: &Shared,
    request: &UpgradeRequest,
) -> Result<Agent, ErrorResponse> {
    let verdict = decide(shared, request).await;
    authenticated();
    verdict
}

async fn decide(shared: &Shared, request: &UpgradeRequest) -> Result<Agent, ErrorResponse> {
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
            let max = shared.settings.max_sockets_per_agent;
            let Some(slot) = shared.sockets.claim(id, max) else {
                tracing::info!(agent = %id, max, "refused a socket over the agent's cap");
                let mut refused = refusal(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("this agent token already holds {max} connections"),
                );
                refused
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(5u32));
                return Err(refused);
            };
            Ok(Agent {
                id,
                user,
                bearer: bearer.clone(),
                slot: Arc::new(slot),
            })
        }
        Ok(Principal::User { .. }) => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "an agent token is required",
        )),
        Err(AppError::Unauthenticated) => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "the agent token is unknown, revoked or expired",
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
        let head =
            b"GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nauthorization: bearer eda_abc\r\nedict-protocol: 1\r\n\r\n";
        assert_eq!(
            parse(head),
            Some(UpgradeRequest {
                path: "/ws".into(),
                bearer: Some("eda_abc".into()),
                protocol: Some("1".into()),
                method: "GET".into(),
                upgrade: false,
                forwarded: false,
            })
        );
    }

    #[test]
    fn an_agent_holds_at_most_its_cap_of_sockets_and_gets_them_back() {
        let sockets = Sockets::default();
        let agent = AgentId::new();
        let first = sockets.claim(agent, 2);
        let second = sockets.claim(agent, 2);
        assert!(first.is_some() && second.is_some());
        assert!(sockets.claim(agent, 2).is_none());
        assert!(
            sockets.claim(AgentId::new(), 2).is_some(),
            "another agent has its own cap"
        );
        drop(first);
        assert_eq!(sockets.held(agent), 1);
        assert!(sockets.claim(agent, 2).is_some());
        assert_eq!(
            sockets.held(agent),
            1,
            "the claim above was dropped at once"
        );
    }

    #[test]
    fn a_request_without_credentials_has_no_bearer() {
        let head = b"GET /ws HTTP/1.1\r\nAuthorization: Basic Zm9v\r\n\r\n";
        assert_eq!(parse(head).and_then(|r| r.bearer), None);
    }

    #[test]
    fn an_incomplete_or_malformed_head_is_refused() {
        assert_eq!(parse(b"GET /ws HTTP/1.1\r\nAuthorization: Bearer x"), None);
        assert_eq!(parse(b"GET /ws HTTP/1.1\r\nBad Header: x\r\n\r\n"), None);
        assert_eq!(parse(b"\x16\x03\x01 not http\r\n\r\n"), None);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse(format!("GET /ws HTTP/1.1\r\n{many}\r\n").as_bytes()),
            None
        );
    }

    proptest::proptest! {
        /// Any bytes a client sends as its head: an answer, never a panic.
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
            let _ = find_head_end(&bytes);
        }

        /// A well-formed upgrade request, whatever the case of its header names, the headers around them
        /// and the query, gives back its path, bearer token and protocol.
        #[test]
        fn a_well_formed_head_gives_back_its_parts(
            path in "/[a-z0-9_/-]{0,40}",
            query in proptest::option::of("[a-z0-9=&]{0,20}"),
            token in "[A-Za-z0-9_.-]{1,80}",
            protocol in "[0-9]{1,3}",
            upper in proptest::prelude::any::<bool>(),
            extra in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,20}", "[ -~]{0,40}"), 0..10),
        ) {
            let case = |name: &str| if upper { name.to_ascii_uppercase() } else { name.to_owned() };
            let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
            let mut head = format!("GET {target} HTTP/1.1\r\nHost: gateway\r\n");
            for (name, value) in &extra {
                if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case(PROTOCOL_HEADER) {
                    continue;
                }
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!("{}: Bearer {token}\r\n", case("Authorization")));
            head.push_str(&format!("{}: {protocol}\r\n\r\n", case(PROTOCOL_HEADER)));
            let request = parse(head.as_bytes());
            proptest::prop_assert_eq!(request, Some(UpgradeRequest {
                path: path.clone(),
                bearer: Some(token.clone()),
                protocol: Some(protocol.clone()),
                method: "GET".into(),
                upgrade: extra.iter().any(|(name, _)| name.eq_ignore_ascii_case("upgrade")),
                forwarded: extra.iter().any(|(name, _)| {
                    name.eq_ignore_ascii_case("x-forwarded-for") || name.eq_ignore_ascii_case("forwarded")
                }),
            }));
        }
    }
}
