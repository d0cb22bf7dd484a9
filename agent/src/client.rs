//! The gateway client: one WebSocket connection at a time, reconnected with jittered exponential backoff
//! (100 ms doubling to 30 s, reset once a gateway welcomes the agent).
//!
//! Per connection: `Authorization: Bearer <agent token>` and `Edict-Protocol: 1` on the upgrade; `Hello`
//! with the holdings from the snapshot; after `Welcome`, every report of the outbox is sent (again on
//! each new connection, the gateway recognises a report id it has seen) and dropped on its `ReportAck`.
//! A `RuleSet` is committed to the snapshot, the files are reconciled, then `Applied` is sent; one of a
//! lower revision than the rule set held is not stored and answered with `Refused`
//! ([`Snapshot::put_ruleset`]). Buffers
//! are small (4 KiB read, no write buffering): an agent holds one idle connection most of the time.
//!
//! Layout: this module holds the connection loop and the session; `signed` what the agent takes from a
//! gateway only once it verifies (rule sets, decisions, removals) and the integrity failures it reports.

mod signed;
#[cfg(test)]
mod tests;

use crate::daemon::Command;
use crate::ruleset::RuleSetDoc;
use crate::snapshot::{Snapshot, StoredRuleSet, keys};
use anyhow::{Context, anyhow, bail};
use edict_api::protocol::{AgentMessage, GatewayMessage, PROTOCOL_HEADER, PROTOCOL_VERSION};
use edict_backoff::Backoff;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use signed::{report_integrity, take_removal, take_ruleset, trusted_decision};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientConfig {
    /// The gateway URLs (`http(s)://host[:port]` or full `ws(s)://…/ws`), tried in turn: a failed
    /// connection moves on to the next one.
    pub urls: Vec<String>,
    /// The agent token at start (each connection reads the snapshot's, renewed since perhaps).
    pub token: String,
    /// The reconnect delays (by connections in a row without a welcome).
    pub backoff: Backoff,
    /// How often a ping is sent on an idle connection.
    pub ping_interval: Duration,
    /// Notified to drop the connection and reconnect at once (`edict-agent sync`).
    pub reconnect: Arc<Notify>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("urls", &self.urls)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ClientConfig {
    /// The defaults for `urls` and `token`.
    pub fn new(urls: Vec<String>, token: String) -> Self {
        ClientConfig {
            urls,
            token,
            backoff: Backoff::jittered(Duration::from_millis(100), Duration::from_secs(30)),
            ping_interval: Duration::from_secs(20),
            reconnect: Arc::new(Notify::new()),
        }
    }
}

/// The WebSocket URL of a server URL: `http` → `ws`, `https` → `wss`, and `/ws` when no path is given.
///
/// # Errors
/// When the URL has no scheme this understands.
pub fn ws_url(server: &str) -> anyhow::Result<String> {
    let (scheme, rest) = server
        .split_once("://")
        .ok_or_else(|| anyhow!("server URL {server:?} has no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => bail!("unsupported server URL scheme {other:?}"),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        bail!("server URL {server:?} has no host");
    }
    let url = if rest.contains('/') {
        format!("{scheme}://{rest}")
    } else {
        format!("{scheme}://{rest}/ws")
    };
    Ok(url)
}

/// Connects, serves, reconnects, until `stop` turns true.
pub async fn run(
    config: ClientConfig,
    snapshot: Arc<Snapshot>,
    engine: Sender<Command>,
    outbox: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // Connections in a row without a welcome.
    let mut failures = 0;
    // Agents start on different gateways of the list, so one gateway does not take them all.
    let mut next = if config.urls.is_empty() {
        0
    } else {
        rand::thread_rng().gen_range(0..config.urls.len())
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(url) = config.urls.get(next % config.urls.len().max(1)) else {
            tracing::warn!("no gateway URL: log in again (`edict-agent login`)");
            break;
        };
        match session(url, &config, &snapshot, &engine, &outbox, &mut stop).await {
            Ok(true) => failures = 0,
            Ok(false) => next += 1,
            Err(e) => {
                tracing::warn!(url, error = format!("{e:#}"), "gateway connection");
                next += 1;
            }
        }
        set_connected(&snapshot, false).await;
        if *stop.borrow() {
            break;
        }
        let delay = config.backoff.delay(failures);
        tracing::debug!(?delay, "reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
        failures = failures.saturating_add(1);
    }
}

async fn set_connected(snapshot: &Arc<Snapshot>, connected: bool) {
    let snapshot = snapshot.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = snapshot.set_identity(keys::CONNECTED, if connected { "true" } else { "false" });
        let _ = snapshot.set_identity(keys::CONNECTED_SINCE, &chrono::Utc::now().to_rfc3339());
    })
    .await;
}

async fn blocking<T: Send + 'static>(
    snapshot: &Arc<Snapshot>,
    f: impl FnOnce(&Snapshot) -> Result<T, crate::snapshot::SnapshotError> + Send + 'static,
) -> anyhow::Result<T> {
    let snapshot = snapshot.clone();
    Ok(tokio::task::spawn_blocking(move || f(&snapshot)).await??)
}

async fn resync(engine: &Sender<Command>) -> anyhow::Result<()> {
    let (tx, rx) = oneshot::channel();
    engine
        .send(Command::Sync(tx))
        .map_err(|_| anyhow!("the engine stopped"))?;
    rx.await
        .map_err(|_| anyhow!("the engine stopped"))?
        .map_err(|e| anyhow!(e))
}

/// The largest message the agent reads from a gateway by default: 16 MiB. A gateway sends whole rule
/// sets (at most 8 MiB each as the server sends them), so this is generous; it only keeps a rogue
/// gateway from making the agent buffer tungstenite's default of 64 MiB per message.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The read limit: `EDICT_AGENT_MAX_MESSAGE_BYTES` when set to a number (at least 64 KiB), else
/// [`MAX_MESSAGE_BYTES`].
fn max_message_bytes() -> usize {
    std::env::var("EDICT_AGENT_MAX_MESSAGE_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(MAX_MESSAGE_BYTES, |v| v.max(64 << 10))
}

/// One connection; `Ok(true)` when the gateway welcomed the agent before it ended.
async fn session(
    url: &str,
    config: &ClientConfig,
    snapshot: &Arc<Snapshot>,
    engine: &Sender<Command>,
    outbox: &Notify,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let url = ws_url(url)?;
    // Plain ws:// off loopback only with --insecure; --ca-file trusts a private PKI.
    let tls = crate::tls::policy();
    tls.check(&url)?;
    let connector = tls.ws_connector()?;
    let mut request = url.as_str().into_client_request()?;
    // The token as the snapshot holds it now: renewed since the start, perhaps (ADR 0025).
    let token = blocking(snapshot, |s| s.identity(keys::TOKEN))
        .await?
        .filter(|token| !token.is_empty())
        .unwrap_or_else(|| config.token.clone());
    let headers = request.headers_mut();
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the agent token is not a valid header value")?,
    );
    headers.insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    let max_message = max_message_bytes();
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, connector);
    let (ws, _) = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(15), connect) => r.context("connect timed out")??,
        _ = stop.changed() => return Ok(false),
    };
    tracing::info!(url, "connected");
    let (mut sink, mut stream) = ws.split();
    let holdings = blocking(snapshot, Snapshot::holdings).await?;
    let key_sequence = blocking(snapshot, Snapshot::key_chain).await?.sequence;
    send(
        &mut sink,
        &AgentMessage::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            holdings,
            key_sequence,
        },
    )
    .await?;
    // Rule sets signed by a key not trusted yet, kept until the next key set taken (the key set that
    // announces a new key can reach the agent after the first rule set signed with it).
    let mut awaiting_keys: Vec<StoredRuleSet> = Vec::new();
    let mut welcomed = false;
    let mut sent: HashSet<String> = HashSet::new();
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = sink.send(Message::Close(None)).await;
                return Ok(welcomed);
            }
            () = config.reconnect.notified() => {
                tracing::info!("reconnecting on request");
                let _ = sink.send(Message::Close(None)).await;
                return Ok(true);
            }
            () = outbox.notified(), if welcomed => {
                flush(snapshot, &mut sink, &mut sent).await?;
            }
            _ = ping.tick() => {
                sink.send(Message::Ping(Default::default())).await?;
            }
            message = stream.next() => {
                let text = match message {
                    None => bail!("the gateway closed the connection"),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        tracing::info!(?frame, "the gateway closed the connection");
                        return Ok(welcomed);
                    }
                    Some(Ok(_)) => continue,
                };
                let message = match crate::frame::decode(text.as_str()) {
                    crate::frame::Frame::Message(message) => *message,
                    // An unreadable rule set is not applied: the agent keeps enforcing the
                    // revision it holds, and the server sees it has not converged.
                    crate::frame::Frame::UnreadableRuleSet { team, revision, error } => {
                        tracing::error!(team, revision, %error, "unreadable rule set; not applied");
                        continue;
                    }
                    crate::frame::Frame::Malformed(error) => {
                        return Err(anyhow::Error::from(error).context("a malformed gateway message"));
                    }
                };
                match message {
                    GatewayMessage::Welcome { agent_id, teams, .. } => {
                        tracing::info!(agent_id, ?teams, "welcomed");
                        welcomed = true;
                        // The id from the login answer stands: a gateway that names another agent
                        // must not make this one take that agent's signed decisions and removals.
                        let named = agent_id.clone();
                        let known = blocking(snapshot, |s| s.identity(keys::AGENT_ID)).await?;
                        match known {
                            Some(known) if !known.is_empty() => {
                                if known != named {
                                    tracing::error!(
                                        known,
                                        named,
                                        "the gateway named another agent id; keeping the one from the login"
                                    );
                                }
                            }
                            _ => {
                                blocking(snapshot, move |s| s.set_identity(keys::AGENT_ID, &named))
                                    .await?;
                            }
                        }
                        set_connected(snapshot, true).await;
                        flush(snapshot, &mut sink, &mut sent).await?;
                        report_integrity(snapshot, &mut sink).await?;
                    }
                    GatewayMessage::Current(holding) => {
                        tracing::debug!(team = holding.team, revision = holding.revision, "current");
                    }
                    GatewayMessage::RuleSet { team, revision, hash, ruleset } => {
                        let doc: RuleSetDoc = *ruleset;
                        let stored = StoredRuleSet { team, revision, hash, doc };
                        take_ruleset(snapshot, engine, &mut sink, stored, &mut awaiting_keys).await?;
                    }
                    GatewayMessage::Keys { keysets } => {
                        let (advanced, failures) =
                            blocking(snapshot, move |s| s.accept_keysets(&keysets)).await?;
                        for failure in &failures {
                            tracing::error!(
                                reason = failure.reason,
                                detail = failure.detail,
                                "refused an organization key set; still trusting the keys held"
                            );
                        }
                        if advanced {
                            let chain = blocking(snapshot, Snapshot::key_chain).await?;
                            tracing::info!(
                                sequence = chain.sequence,
                                trusted = ?chain.trusted.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(),
                                "took the organization's new key set"
                            );
                            for stored in std::mem::take(&mut awaiting_keys) {
                                take_ruleset(snapshot, engine, &mut sink, stored, &mut Vec::new()).await?;
                            }
                        }
                        if !failures.is_empty() {
                            report_integrity(snapshot, &mut sink).await?;
                        }
                    }
                    message @ GatewayMessage::Removed { .. } => {
                        take_removal(snapshot, engine, &mut sink, &message).await?;
                    }
                    GatewayMessage::ReportAck { report_id, change_request } => {
                        let _ = engine.send(Command::Ack { report_id, change_request });
                    }
                    message @ GatewayMessage::Decision { .. } => {
                        if let Some(decision) = trusted_decision(snapshot, &message).await? {
                            let _ = engine.send(Command::Decision(decision));
                        } else {
                            report_integrity(snapshot, &mut sink).await?;
                        }
                    }
                    GatewayMessage::Error { code, message } => match code.as_str() {
                        // The gateway closes next; the next connection reads the token again.
                        edict_api::protocol::TOKEN_EXPIRED => tracing::warn!(
                            message,
                            "the agent token expired; reconnecting with the renewed token if there is one, else log in again"
                        ),
                        edict_api::protocol::REVOKED => tracing::error!(
                            message,
                            "the agent token was revoked (agent revoked, or its user deactivated or their password changed): log in again"
                        ),
                        _ => tracing::warn!(code, message, "the gateway reported an error"),
                    },
                }
            }
        }
    }
}

async fn send<S>(sink: &mut S, message: &AgentMessage) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    sink.send(Message::text(serde_json::to_string(message)?))
        .await?;
    Ok(())
}

async fn flush<S>(
    snapshot: &Arc<Snapshot>,
    sink: &mut S,
    sent: &mut HashSet<String>,
) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let reports = blocking(snapshot, Snapshot::outbox).await?;
    for report in reports {
        if sent.insert(report.report_id.clone()) {
            tracing::info!(report_id = report.report_id, kind = ?report.kind, "sending report");
            send(sink, &AgentMessage::Report(report)).await?;
        }
    }
    Ok(())
}
