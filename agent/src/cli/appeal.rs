//! `edict-agent appeal`: asks the server for an exception on a change made on this machine.

use crate::output;
use crate::snapshot::{Snapshot, keys};
use anyhow::{Context, bail};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Requests an exception through the API, with this machine's agent token.
pub(super) async fn appeal(
    data_dir: &Path,
    change: &str,
    reason: &str,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    let snapshot = Snapshot::open(data_dir)?;
    let (Some(api), Some(token)) = (
        snapshot.identity(keys::API)?,
        snapshot.identity(keys::TOKEN)?,
    ) else {
        bail!("not logged in: run `edict-agent login` first");
    };
    drop(snapshot);
    let body = match until {
        Some(until) => json!({"justification": reason, "kind": "time_limited", "until": until}),
        None => json!({"justification": reason, "kind": "permanent"}),
    };
    crate::tls::policy().check(&api)?;
    let response = crate::tls::policy()
        .http_client(Duration::from_secs(30))?
        .post(format!(
            "{}/api/v1/change-requests/{change}/exception",
            api.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("cannot reach {api}: appeal again when online"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the appeal was refused ({status}): {}",
            answer["detail"].as_str().unwrap_or("no detail")
        );
    }
    output::line(&format!(
        "exception requested on change request {change}; a team admin decides it (the agent applies the decision)"
    ));
    Ok(())
}
