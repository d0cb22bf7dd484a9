//! `edict-agent login`: getting this machine's agent token from the API.
//!
//! - With an enrollment token (unattended installs): one call, `POST /api/v1/agents/enroll`.
//! - Without: the device code flow. The agent asks for a code (`POST /api/v1/device/code`), prints it
//!   with the page where a signed-in user approves it, and polls `POST /api/v1/device/token` until the
//!   user approved (the agent token comes back once), denied, or the code expired.
//!
//! Either way the answer names the gateways to connect to.

use anyhow::{Context, anyhow, bail};
use edict_api::ruleset::{OrgKey, key_id_of, parse_public_key};
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
    /// When the token was issued (absent from a server older than ADR 0025).
    #[serde(default)]
    pub issued_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the token stops working (absent from a server older than ADR 0025: the agent renews
    /// such a token at its first chance).
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Where to connect.
    pub gateway_urls: Vec<String>,
    /// The organization's public keys that sign rule sets (none from a server that predates them).
    #[serde(default)]
    pub org_keys: Vec<OrgKey>,
    /// The key set they come from (0 from a server that predates key sets).
    #[serde(default)]
    pub key_sequence: u64,
}

/// What `--org-key` names: a key id (fingerprint) or a whole public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedKey {
    /// 16 hex digits: one key of the login answer must have this id.
    Fingerprint(String),
    /// 64 hex digits: the key itself (the login answer, if any, must carry it).
    Key(OrgKey),
}

/// Reads `--org-key`: a fingerprint or a public key in hex, or the path of a file holding one.
///
/// # Errors
/// When it is neither.
pub fn parse_org_key(value: &str) -> anyhow::Result<PinnedKey> {
    let path = std::path::Path::new(value);
    let text = if path.is_file() {
        std::fs::read_to_string(path).with_context(|| format!("reading {value}"))?
    } else {
        value.to_owned()
    };
    let text = text.trim().to_ascii_lowercase();
    if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(PinnedKey::Fingerprint(text));
    }
    match parse_public_key(&text) {
        Ok(key) => Ok(PinnedKey::Key(OrgKey::of(&key))),
        Err(_) => bail!(
            "--org-key must be the organization key's fingerprint (16 hex digits), its public key \
             (64 hex digits), or a file holding either"
        ),
    }
}

/// The keys to pin: those of the login answer, checked against `pinned` when given (a mismatch is an
/// error: the answer did not come from the organization the administrator named).
///
/// # Errors
/// A mismatch, or no key at all.
pub fn keys_to_pin(answer: &[OrgKey], pinned: Option<&PinnedKey>) -> anyhow::Result<Vec<OrgKey>> {
    let keys = match pinned {
        None => answer.to_vec(),
        Some(PinnedKey::Fingerprint(id)) => {
            let matching: Vec<OrgKey> = answer
                .iter()
                .filter(|key| {
                    // The id the answer states must be its key's own.
                    key.key_id == *id
                        && parse_public_key(&key.public_key)
                            .is_ok_and(|k| key_id_of(&k) == key.key_id)
                })
                .cloned()
                .collect();
            if matching.is_empty() {
                bail!(
                    "the server's rule set key is not the one given with --org-key {id} (it sent {}): \
                     login aborted",
                    fingerprints(answer)
                );
            }
            matching
        }
        Some(PinnedKey::Key(key)) => {
            if !answer.is_empty() && !answer.iter().any(|k| k.public_key == key.public_key) {
                bail!(
                    "the server's rule set key is not the one given with --org-key {} (it sent {}): \
                     login aborted",
                    key.key_id,
                    fingerprints(answer)
                );
            }
            vec![key.clone()]
        }
    };
    if keys.is_empty() {
        bail!(
            "the server sent no rule set signing key and none was given with --org-key: the agent \
             would trust no rule set"
        );
    }
    Ok(keys)
}

/// The key ids, comma-separated (`none` for none).
pub fn fingerprints(keys: &[OrgKey]) -> String {
    if keys.is_empty() {
        return "none".to_owned();
    }
    keys.iter()
        .map(|k| k.key_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
