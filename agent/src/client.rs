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

use crate::daemon::Command;
use crate::enforce::Decision;
use crate::ruleset::RuleSetDoc;
use crate::snapshot::{PutOutcome, Snapshot, StoredRuleSet, keys};
use anyhow::{Context, anyhow, bail};
use edict_api::protocol::{
    AgentMessage, GatewayMessage, Holding, PROTOCOL_HEADER, PROTOCOL_VERSION,
};
use edict_backoff::Backoff;
use futures::{SinkExt, StreamExt};
use rand::Rng;
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

/// Stores a rule set a gateway sent once it verifies (ADR 0018), reconciles the files and answers
/// `applied`; answers `refused` for a lower revision than the one held, and reports an untrusted one.
/// One signed by a key not trusted yet waits in `awaiting_keys` for the next key set.
async fn take_ruleset<S>(
    snapshot: &Arc<Snapshot>,
    engine: &Sender<Command>,
    sink: &mut S,
    stored: StoredRuleSet,
    awaiting_keys: &mut Vec<StoredRuleSet>,
) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let (team, revision, hash) = (stored.team.clone(), stored.revision, stored.hash.clone());
    let kept = stored.clone();
    // Durable first: `applied` promises the rule set survives a crash. A rule set older than the one
    // held is not stored (the snapshot records why). Verified against the trusted organization keys
    // before anything is stored: an untrusted rule set is recorded and reported, never applied.
    let outcome = blocking(snapshot, move |s| s.accept_ruleset(&stored)).await?;
    if let PutOutcome::Untrusted(failure) = &outcome {
        tracing::error!(
            team,
            revision,
            reason = failure.reason,
            detail = failure.detail,
            "refused an untrusted rule set; still enforcing the last good one"
        );
        if failure.reason == "unknown_key" {
            awaiting_keys.retain(|held| held.team != team);
            awaiting_keys.push(kept);
        }
        return report_integrity(snapshot, sink).await;
    }
    if let PutOutcome::Refused(refused) = outcome {
        tracing::warn!(
            team,
            offered_revision = revision,
            held_revision = refused.held_revision,
            "refused a rule set older than the one held; still enforcing the held one"
        );
        return send(
            sink,
            &AgentMessage::Refused {
                team,
                revision,
                hash,
                held_revision: refused.held_revision,
                held_hash: refused.held_hash,
            },
        )
        .await;
    }
    if let Err(e) = resync(engine).await {
        tracing::warn!(error = %e, team, "rule set stored; some files not written yet");
    }
    tracing::info!(team, revision, "rule set applied");
    send(
        sink,
        &AgentMessage::Applied(Holding {
            team,
            revision,
            hash,
        }),
    )
    .await
}

/// The decision `message` carries when it is signed by a trusted key for this agent (ADR 0022); else
/// `None`, the failure recorded (and reported by the caller): the change stays as it is.
async fn trusted_decision(
    snapshot: &Arc<Snapshot>,
    message: &GatewayMessage,
) -> anyhow::Result<Option<Decision>> {
    let GatewayMessage::Decision {
        change_request,
        file,
        action,
        until,
        rule,
        content_hash,
        decision_id,
        signature,
        ..
    } = message
    else {
        return Ok(None);
    };
    let agent = blocking(snapshot, |s| s.identity(keys::AGENT_ID))
        .await?
        .unwrap_or_default();
    let keys = blocking(snapshot, Snapshot::org_keys).await?;
    let verdict = message
        .decision_statement()
        .map(|statement| statement.verify(&agent, signature.as_ref(), &keys));
    match verdict {
        Some(Ok(())) => Ok(Some(Decision {
            change_request: change_request.clone(),
            file: file.clone(),
            rule: rule.clone(),
            content_hash: content_hash.clone(),
            decision_id: decision_id.clone(),
            action: *action,
            until: until.clone(),
        })),
        Some(Err(error)) => {
            tracing::error!(
                change_request,
                reason = error.code(),
                %error,
                "refused an untrusted decision; the change stays as it is"
            );
            let failure = crate::snapshot::IntegrityFailure {
                team: "decision".to_owned(),
                revision: 0,
                hash: decision_id
                    .clone()
                    .unwrap_or_else(|| change_request.clone()),
                reason: error.code().to_owned(),
                detail: format!("decision on change request {change_request}: {error}"),
                at: chrono::Utc::now().to_rfc3339(),
                reported: false,
            };
            blocking(snapshot, move |s| s.record_integrity_failure(&failure)).await?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Drops a team's sections on a `removed` that verifies (ADR 0024): signed by a trusted key, for
/// this agent, and later in the log than any removal of the team taken before. Any other is not
/// acted on (the team's rules stay enforced), recorded as an integrity failure (team `removal`, hash =
/// the team) and reported.
async fn take_removal<S>(
    snapshot: &Arc<Snapshot>,
    engine: &Sender<Command>,
    sink: &mut S,
    message: &GatewayMessage,
) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let Some(statement) = message.removal_statement() else {
        return Ok(());
    };
    let team = statement.team.to_owned();
    let t = team.clone();
    let (agent, keys, floor, held) = blocking(snapshot, move |s| {
        let held = s.holdings()?.iter().any(|holding| holding.team == t);
        Ok((
            s.identity(keys::AGENT_ID)?.unwrap_or_default(),
            s.org_keys()?,
            s.removal_floor(&t)?,
            held,
        ))
    })
    .await?;
    let signature = match message {
        GatewayMessage::Removed { signature, .. } => signature.as_ref(),
        _ => None,
    };
    match statement.verify(&agent, floor, signature, &keys) {
        Ok(()) => {
            let (t, position) = (team.clone(), statement.position);
            blocking(snapshot, move |s| s.take_removal(&t, position)).await?;
            if let Err(e) = resync(engine).await {
                tracing::warn!(error = %e, team, "removing the sections of a team");
            }
            tracing::info!(team, position, held, "team removed");
            Ok(())
        }
        Err(error) => {
            tracing::error!(
                team,
                reason = error.code(),
                %error,
                "refused an untrusted removal; still enforcing the team's rules"
            );
            let failure = crate::snapshot::IntegrityFailure {
                team: "removal".to_owned(),
                revision: statement.position,
                hash: team.clone(),
                reason: error.code().to_owned(),
                detail: format!("removal of team {team}: {error}"),
                at: chrono::Utc::now().to_rfc3339(),
                reported: false,
            };
            blocking(snapshot, move |s| s.record_integrity_failure(&failure)).await?;
            report_integrity(snapshot, sink).await
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

/// Sends every integrity failure no gateway was told of yet, and marks each told.
async fn report_integrity<S>(snapshot: &Arc<Snapshot>, sink: &mut S) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let failures = blocking(snapshot, Snapshot::integrity_failures).await?;
    for (sequence, failure) in failures.into_iter().filter(|(_, f)| !f.reported) {
        send(
            sink,
            &AgentMessage::IntegrityFailure {
                team: failure.team,
                revision: failure.revision,
                hash: failure.hash,
                reason: failure.reason,
                detail: failure.detail,
            },
        )
        .await?;
        blocking(snapshot, move |s| s.mark_integrity_reported(sequence)).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_become_websocket_urls() -> anyhow::Result<()> {
        assert_eq!(ws_url("http://localhost:8080")?, "ws://localhost:8080/ws");
        assert_eq!(ws_url("https://edict.example/")?, "wss://edict.example/ws");
        assert_eq!(ws_url("ws://gw:1/custom/ws")?, "ws://gw:1/custom/ws");
        assert!(ws_url("ftp://x").is_err());
        assert!(ws_url("localhost").is_err());
        Ok(())
    }
}
