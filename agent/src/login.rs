//! `edict-agent login`: getting this machine's agent token from the API.
//!
//! - With an enrollment token (unattended installs): one call, `POST /api/v1/agents/enroll`.
//! - Without: the device code flow. The agent asks for a code (`POST /api/v1/device/code`), prints it
//!   with the page where a signed-in user approves it, and polls `POST /api/v1/device/token` until the
//!   user approved (the agent token comes back once), denied, or the code expired.
//!
//! Either way the answer names the gateways to connect to.

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// What a login brings back.
#[derive(Debug, Clone, Deserialize)]
pub struct Credentials {
    /// The enrolled agent.
    pub agent_id: String,
    /// Its agent token.
    pub token: String,
    /// Where to connect.
    pub gateway_urls: Vec<String>,
}

/// What the device code flow asks the person to do.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceCode {
    /// Kept secret, polled with.
    device_code: String,
    /// The code to type.
    pub user_code: String,
    /// Where to type it.
    pub verification_uri: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Seconds between polls.
    interval: u64,
}

#[derive(Debug, Deserialize)]
struct Problem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    detail: String,
}

/// This machine as the server sees it: a stable id derived from `/etc/machine-id` (hashed, so the raw
/// id never leaves the machine) or the host name, and the host name.
pub fn machine() -> (String, String) {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let seed = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let id = hex::encode(Sha256::digest(format!("edict-agent:{seed}").as_bytes()));
    (id[..32].to_owned(), name)
}

fn api(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

fn client() -> anyhow::Result<reqwest::Client> {
    // Trusts --ca-file beside the public roots.
    crate::tls::policy().http_client(Duration::from_secs(30))
}

async fn problem(response: reqwest::Response) -> Problem {
    let status = response.status();
    response.json::<Problem>().await.unwrap_or(Problem {
        kind: String::new(),
        detail: format!("the server answered {status}"),
    })
}

/// Trades an enrollment token for this machine's credentials.
///
/// # Errors
/// When the server cannot be reached or refuses the token.
pub async fn with_enrollment_token(
    server: &str,
    enrollment_token: &str,
    machine_id: &str,
    machine_name: &str,
) -> anyhow::Result<Credentials> {
    if enrollment_token.starts_with("eda_") {
        bail!(
            "that is an agent token, not an enrollment token (ede_…): create one with \
             POST /api/v1/enrollment-tokens, or run `edict-agent login` without a token"
        );
    }
    let response = client()?
        .post(api(server, "/api/v1/agents/enroll"))
        .json(&json!({
            "enrollment_token": enrollment_token,
            "machine_id": machine_id,
            "machine_name": machine_name,
        }))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if response.status().is_success() {
        return response.json().await.context("reading the enrollment");
    }
    let status = response.status();
    let problem = problem(response).await;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!("the enrollment token was refused: unknown, revoked, expired or used up");
    }
    bail!("enrollment failed ({status}): {}", problem.detail)
}

/// Starts the device code flow.
///
/// # Errors
/// When the server cannot be reached or refuses.
pub async fn start_device_flow(
    server: &str,
    machine_id: &str,
    machine_name: &str,
) -> anyhow::Result<DeviceCode> {
    let response = client()?
        .post(api(server, "/api/v1/device/code"))
        .json(&json!({"machine_id": machine_id, "machine_name": machine_name}))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "the server refused a device code ({status}): {}",
            problem(response).await.detail
        );
    }
    response.json().await.context("reading the device code")
}

/// Polls until the person approved or denied, or the code expired.
///
/// # Errors
/// Denied, expired, or the server unreachable for the code's whole lifetime.
pub async fn finish_device_flow(server: &str, code: &DeviceCode) -> anyhow::Result<Credentials> {
    let http = client()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
    let mut interval = Duration::from_secs(code.interval.max(1));
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            bail!("the code expired before anyone approved it: run `edict-agent login` again");
        }
        let response = match http
            .post(api(server, "/api/v1/device/token"))
            .json(&json!({"device_code": code.device_code}))
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(error = %e, "polling for approval; retrying");
                continue;
            }
        };
        if response.status().is_success() {
            return response.json().await.context("reading the credentials");
        }
        let problem = problem(response).await;
        match problem.kind.rsplit(':').next().unwrap_or_default() {
            "authorization-pending" => {}
            "slow-down" => interval += Duration::from_secs(1),
            "access-denied" => bail!("the request was denied"),
            "expired-token" => {
                bail!("the code expired or was used: run `edict-agent login` again")
            }
            _ => return Err(anyhow!("login failed: {}", problem.detail)),
        }
    }
}
