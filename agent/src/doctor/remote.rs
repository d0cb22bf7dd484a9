//! The checks that ask the server: its readiness and TLS, the clock, the gateways and the organization
//! key.

use super::Check;
use super::local::State;
use crate::ruleset::{KeyChain, KeySet};
use edict_api::protocol::{AgentMessage, GatewayMessage, PROTOCOL_HEADER, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// How long a connection may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A clock this far off the server's warns.
const CLOCK_WARN: i64 = 30;
/// A clock this far off the server's fails.
const CLOCK_FAIL: i64 = 120;

/// What to do about a TLS failure.
const TLS_HINT: &str =
    "give the agent your organization's CA with --ca-file PEM (at login, or to run)";

/// The server, the clock, each gateway and the organization key.
pub async fn checks(state: &State) -> Vec<Check> {
    let mut checks = Vec::new();
    match &state.api {
        Some(api) => {
            let (server, clock) = server(api).await;
            checks.push(server);
            checks.push(clock);
        }
        None => checks.push(Check::fail(
            "server",
            "no server URL stored",
            "run `edict-agent login --server URL`",
        )),
    }
    let mut keysets = None;
    if state.gateways.is_empty() {
        checks.push(Check::fail(
            "gateway",
            "no gateway URL stored",
            "log in again (`edict-agent login`), or pass --gateway to it",
        ));
    }
    for url in &state.gateways {
        let (check, sets) = gateway(url, state).await;
        checks.push(check);
        if keysets.is_none() {
            keysets = sets;
        }
    }
    checks.push(org_key(&state.chain, keysets.as_deref()));
    checks
}

/// Whether `error` (with its causes) is a certificate the agent does not trust.
fn is_tls(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}").to_ascii_lowercase();
    text.contains("certificate") || text.contains("unknownissuer") || text.contains("tls")
}

/// `GET <api>/health/ready`, and the clock from its `Date`.
async fn server(api: &str) -> (Check, Check) {
    let name = "server";
    let not_checked = |why: &str| {
        Check::warn(
            "clock",
            format!("not compared: {why}"),
            "check the clock once the server answers",
        )
    };
    let tls = crate::tls::policy();
    if let Err(e) = tls.check(api) {
        return (
            Check::fail(name, format!("{e:#}"), "log in with an https:// server URL"),
            not_checked("the server URL is refused"),
        );
    }
    let client = match tls.http_client(TIMEOUT) {
        Ok(client) => client,
        Err(e) => {
            return (
                Check::fail(name, format!("{e:#}"), TLS_HINT),
                not_checked("no HTTP client"),
            );
        }
    };
    let url = format!("{}/health/ready", api.trim_end_matches('/'));
    let before = chrono::Utc::now();
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(e) => {
            let e = anyhow::Error::from(e);
            let check = if is_tls(&e) && api.starts_with("https") {
                Check::fail(name, format!("TLS not trusted: {e:#}"), TLS_HINT)
            } else {
                Check::fail(
                    name,
                    format!("cannot reach {url}: {e:#}"),
                    "check the network, the server's address and that it runs",
                )
            };
            return (check, not_checked("the server did not answer"));
        }
    };
    let after = chrono::Utc::now();
    let status = response.status();
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok());
    let secure = if api.starts_with("https") {
        ", TLS trusted"
    } else {
        ""
    };
    let check = if status.is_success() {
        Check::ok(name, format!("{api} is ready{secure}"))
    } else {
        let detail: serde_json::Value = response.json().await.unwrap_or_default();
        Check::warn(
            name,
            format!(
                "{api} answers but is not ready ({status}{}){secure}",
                detail["detail"]
                    .as_str()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            "the agent keeps enforcing what it holds; tell the server's operator",
        )
    };
    let clock = match date {
        None => not_checked("the server sent no Date header"),
        Some(date) => {
            let local = before + (after - before) / 2;
            clock(date.with_timezone(&chrono::Utc) - local)
        }
    };
    (check, clock)
}

/// The clock check for a skew (server minus local).
fn clock(skew: chrono::TimeDelta) -> Check {
    let seconds = skew.num_seconds();
    let off = format!(
        "this machine's clock is {} s {} the server's",
        seconds.abs(),
        if seconds > 0 { "behind" } else { "ahead of" }
    );
    let hint = "synchronise the clock (NTP: `timedatectl set-ntp true`)";
    if seconds.abs() > CLOCK_FAIL {
        Check::fail(
            "clock",
            format!("{off}: tokens and signatures would be judged at the wrong time"),
            hint,
        )
    } else if seconds.abs() > CLOCK_WARN {
        Check::warn("clock", off, hint)
    } else {
        Check::ok(
            "clock",
            format!("within {} s of the server's", seconds.abs().max(1)),
        )
    }
}

/// A WebSocket upgrade on `url` with the agent token, then `hello` (key set 0, so the gateway sends
/// every key set) and its greeting: the check, and the key sets when it sent them.
async fn gateway(url: &str, state: &State) -> (Check, Option<Vec<KeySet>>) {
    let name = format!("gateway {url}");
    match tokio::time::timeout(TIMEOUT, greet(url, state)).await {
        Ok(Ok((teams, keysets))) => (
            Check::ok(
                name,
                format!(
                    "welcomed this agent ({teams} team{})",
                    if teams == 1 { "" } else { "s" }
                ),
            ),
            keysets,
        ),
        Ok(Err(e)) => {
            let text = format!("{e:#}");
            let check = if text.contains("401") {
                Check::fail(
                    name,
                    format!("refused the agent token: {text}"),
                    "the token was revoked or expired: log in again (`edict-agent login`)",
                )
            } else if is_tls(&e) && url.starts_with("wss") {
                Check::fail(name, format!("TLS not trusted: {text}"), TLS_HINT)
            } else {
                Check::fail(
                    name,
                    format!("does not answer: {text}"),
                    "check the network and that the gateway runs; the agent moves to the next gateway",
                )
            };
            (check, None)
        }
        Err(_) => (
            Check::fail(
                name,
                format!("no welcome within {} s", TIMEOUT.as_secs()),
                "check the network and that the gateway runs",
            ),
            None,
        ),
    }
}

/// Connects and greets; answers the number of teams and the key sets (`None`: the gateway sent none
/// before its first rule set answer, or within 2 s of its welcome).
async fn greet(url: &str, state: &State) -> anyhow::Result<(usize, Option<Vec<KeySet>>)> {
    let url = crate::client::ws_url(url)?;
    let tls = crate::tls::policy();
    tls.check(&url)?;
    let mut request = url.as_str().into_client_request()?;
    let token = state
        .token
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no agent token stored"))?;
    let headers = request.headers_mut();
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    headers.insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, tls.ws_connector()?)
            .await?;
    let hello = AgentMessage::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        holdings: state.holdings.clone(),
        key_sequence: 0,
    };
    ws.send(Message::text(serde_json::to_string(&hello)?))
        .await?;
    let mut teams = None;
    let mut keysets = None;
    loop {
        // After the welcome, the key sets come first if at all.
        let wait = if teams.is_some() {
            Duration::from_secs(2)
        } else {
            TIMEOUT
        };
        let message = match tokio::time::timeout(wait, ws.next()).await {
            Err(_) if teams.is_some() => break,
            Err(_) => anyhow::bail!("no welcome"),
            Ok(None) => anyhow::bail!("the gateway closed the connection"),
            Ok(Some(message)) => message?,
        };
        let Message::Text(text) = message else {
            continue;
        };
        match serde_json::from_str::<GatewayMessage>(text.as_str()) {
            Ok(GatewayMessage::Welcome { teams: named, .. }) => teams = Some(named.len()),
            Ok(GatewayMessage::Keys { keysets: sets }) => {
                keysets = Some(sets);
                break;
            }
            Ok(GatewayMessage::Error { code, message }) => {
                anyhow::bail!("the gateway answered {code}: {message}")
            }
            // The greeting went on past the key sets: the gateway has none to send.
            _ if teams.is_some() => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok((teams.unwrap_or_default(), keysets))
}

/// The pinned organization key against the key sets a gateway sent.
pub fn org_key(chain: &KeyChain, keysets: Option<&[KeySet]>) -> Check {
    let name = "org key";
    if chain.trusted.is_empty() {
        return Check::fail(
            name,
            "no organization key pinned: every rule set is refused",
            "log in again (`edict-agent login`, with --org-key from your administrator)",
        );
    }
    let pinned = crate::login::fingerprints(&chain.trusted);
    let Some(keysets) = keysets.filter(|sets| !sets.is_empty()) else {
        return Check::warn(
            name,
            format!("{pinned} pinned; not compared: no gateway sent the server's key sets"),
            "run `edict-agent doctor` again once a gateway answers",
        );
    };
    let Some(latest) = keysets.iter().max_by_key(|set| set.sequence) else {
        return Check::warn(name, format!("{pinned} pinned"), "");
    };
    let Some(active) = latest.active() else {
        return Check::warn(
            name,
            format!(
                "{pinned} pinned; the server's key set {} names no active key",
                latest.sequence
            ),
            "tell the server's operator",
        );
    };
    let mut advanced = chain.clone();
    let refused = advanced.advance(keysets);
    if advanced
        .trusted
        .iter()
        .any(|k| k.public_key == active.public_key)
    {
        Check::ok(
            name,
            format!(
                "{pinned} pinned; the server signs with {} (key set {}), which this agent trusts",
                active.key_id, latest.sequence
            ),
        )
    } else {
        Check::fail(
            name,
            format!(
                "the server signs with {} (key set {}), which does not follow from the pinned {pinned}{}: every new rule set would be refused",
                active.key_id,
                latest.sequence,
                refused
                    .first()
                    .map(|r| format!(" (key set {} refused: {})", r.sequence, r.error))
                    .unwrap_or_default()
            ),
            "compare the key with your administrator's, then log in again (`edict-agent login --org-key ...`)",
        )
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
