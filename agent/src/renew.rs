//! Renewing the agent token without the user (ADR 0025).
//!
//! Every agent token has a lifetime. The daemon renews its token once past half of it
//! (`POST /api/v1/agent/token`, authenticated by the token itself), checking at start and then whenever
//! the renewal falls due (at least hourly, so a token replaced by `edict-agent login` meanwhile is
//! noticed). When the token was received is measured on this machine's clock and its lifetime taken from
//! the server's answer (`expires_at - issued_at`), so a skewed clock neither renews too late nor in a
//! loop. A token whose expiry is unknown (stored by an agent or a server older than this, or given with
//! `login --agent-token`) is renewed at the first chance.
//!
//! The new token is stored in one snapshot transaction with its expiry and next renewal time, and only if
//! the token held is still the one renewed. The gateway connection is then made again with it (the old
//! token works only for the server's short grace). A renewal that fails keeps the old token and is tried
//! again with backoff (30 s doubling to 5 min); one refused (401: revoked or expired) is logged as an
//! error: the machine must log in again.

use crate::snapshot::{Snapshot, keys};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use edict_backoff::Backoff;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The longest the renewer sleeps before looking at the snapshot again.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// The retry delays after failed renewals: 30 s doubling to 5 min.
const RETRY: Backoff = Backoff::exact(Duration::from_secs(30), Duration::from_secs(300));

/// What the server answers a renewal (and, in part, an enrollment).
#[derive(Debug, Clone, Deserialize)]
pub struct RenewedToken {
    /// The new agent token.
    pub token: String,
    /// When it was issued (server clock).
    pub issued_at: DateTime<Utc>,
    /// When it stops working (server clock).
    pub expires_at: DateTime<Utc>,
}

/// When a token received at `received` (seconds, local clock) with the server's `issued_at` and
/// `expires_at` should be renewed: half its lifetime after it was received. `None` for an unknown
/// lifetime (renew at the first chance).
pub fn renew_at(
    received: i64,
    issued_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
) -> Option<i64> {
    let (issued, expires) = (issued_at?, expires_at?);
    let lifetime = (expires - issued).num_seconds().max(0);
    Some(received.saturating_add(lifetime / 2))
}

/// Whether a token whose renewal time is `stored` (as in the snapshot) is due at `now`: an empty,
/// absent or unreadable time is due at once.
pub fn due(stored: Option<&str>, now: i64) -> bool {
    match stored.and_then(|s| s.trim().parse::<i64>().ok()) {
        Some(at) => at <= now,
        None => true,
    }
}

/// How long to sleep before the renewal stored as `stored` falls due (at most [`MAX_SLEEP`]).
fn sleep_before(stored: Option<&str>, now: i64) -> Duration {
    match stored.and_then(|s| s.trim().parse::<i64>().ok()) {
        Some(at) => Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
            .min(MAX_SLEEP)
            .max(Duration::from_secs(1)),
        None => Duration::ZERO,
    }
}

/// The snapshot values of a token received now.
pub fn stored_values(received: &RenewedToken) -> (String, String) {
    let renew = renew_at(
        Utc::now().timestamp(),
        Some(received.issued_at),
        Some(received.expires_at),
    )
    .map(|at| at.to_string())
    .unwrap_or_default();
    (received.expires_at.to_rfc3339(), renew)
}

/// Asks the API at `api` for a new token with `token`.
///
/// # Errors
/// When the API cannot be reached, refuses (the status is in the message), or answers something else.
pub async fn renew(api: &str, token: &str) -> anyhow::Result<RenewedToken> {
    let policy = crate::tls::policy();
    policy.check(api)?;
    let response = policy
        .http_client(Duration::from_secs(30))?
        .post(format!("{}/api/v1/agent/token", api.trim_end_matches('/')))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .with_context(|| format!("cannot reach {api}"))?;
    let status = response.status();
    if !status.is_success() {
        let detail: serde_json::Value = response.json().await.unwrap_or_default();
        bail!(
            "the renewal was refused ({status}): {}",
            detail["detail"].as_str().unwrap_or("no detail")
        );
    }
    response
        .json::<RenewedToken>()
        .await
        .context("an unreadable renewal answer")
}

/// Renews the token whenever it falls due, until `stop` turns true; after each renewal `reconnect`
/// is notified, so the gateway connection is made again with the new token.
pub async fn run(snapshot: Arc<Snapshot>, reconnect: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    // Failed renewals in a row.
    let mut failures = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match attempt(&snapshot, &reconnect).await {
            Ok(Some(wait)) => {
                failures = 0;
                wait
            }
            Ok(None) => {
                failures = 0;
                MAX_SLEEP
            }
            Err(error) => {
                let wait = RETRY.delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in = ?wait,
                    "cannot renew the agent token; keeping the current one"
                );
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One look at the snapshot: renews the token if due. Answers how long to wait before the next look
/// (`None`: not logged in).
async fn attempt(snapshot: &Arc<Snapshot>, reconnect: &Notify) -> anyhow::Result<Option<Duration>> {
    let read = snapshot.clone();
    let (api, token, renew_at) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::snapshot::SnapshotError>((
            read.identity(keys::API)?,
            read.identity(keys::TOKEN)?,
            read.identity(keys::TOKEN_RENEW_AT)?,
        ))
    })
    .await??;
    let (Some(api), Some(token)) = (api, token) else {
        return Ok(None);
    };
    let now = Utc::now().timestamp();
    if !due(renew_at.as_deref(), now) {
        return Ok(Some(sleep_before(renew_at.as_deref(), now)));
    }
    let renewed = renew(&api, &token).await?;
    let (expires, next) = stored_values(&renewed);
    let write = snapshot.clone();
    let new_token = renewed.token.clone();
    let stored = tokio::task::spawn_blocking(move || {
        write.replace_token(Some(&token), &new_token, &expires, &next)
    })
    .await??;
    if stored {
        tracing::info!(expires_at = %renewed.expires_at, "renewed the agent token");
        reconnect.notify_one();
    } else {
        tracing::info!(
            "the agent token changed during its renewal (a new login); keeping the login's"
        );
    }
    Ok(Some(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap()
    }

    #[test]
    fn a_token_is_renewed_half_its_lifetime_after_it_was_received_whatever_the_clocks() {
        // The server's clock is an hour ahead: the lifetime counts, not its dates.
        assert_eq!(
            renew_at(1_000, Some(at(4_600)), Some(at(4_600 + 200))),
            Some(1_100)
        );
    }

    #[test]
    fn a_token_of_unknown_lifetime_is_renewed_at_once() {
        assert_eq!(renew_at(1_000, None, Some(at(2_000))), None);
        assert!(due(None, 1_000));
        assert!(due(Some(""), 1_000));
        assert!(due(Some("garbage"), 1_000));
    }

    #[test]
    fn a_renewal_is_due_from_its_time_on() {
        assert!(!due(Some("1001"), 1_000));
        assert!(due(Some("1000"), 1_000));
        assert_eq!(sleep_before(Some("1030"), 1_000), Duration::from_secs(30));
        assert_eq!(sleep_before(Some("999999"), 1_000), MAX_SLEEP);
        assert_eq!(sleep_before(Some("10"), 1_000), Duration::from_secs(1));
    }
}
