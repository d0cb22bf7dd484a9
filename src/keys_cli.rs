//! `edict keys`: the organization's rule set signing keys, through a running API (ADR 0021).

use crate::api_client::{self, ServerArgs};
use crate::output::{self, OutputFormat};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// `edict keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The organization's keys (what agents trust) and the rotation under way.
    Status(KeysArgs),
    /// Starts a rotation: a next key is announced to agents at once, becomes active after the
    /// overlap (every rule set is signed again with it), and the previous key is retired after as
    /// long again.
    Rotate {
        #[command(flatten)]
        keys: KeysArgs,
        /// Time between the steps, e.g. `24h`, `30m`, `90s` (2 s to 90 days).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        overlap: std::time::Duration,
    },
}

/// Where the API is.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The Edict API (`https://host` or `http://127.0.0.1:8080`).
    #[arg(long, env = "EDICT_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An org_admin's access token (an auditor's for `status`).
    #[arg(long, env = "EDICT_TOKEN", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    tls: ServerArgs,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

/// Parses `90s`, `30m`, `24h`, `7d` (or bare seconds).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. 24h, 30m, 90s)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit in {text:?} (s, m, h or d)")),
    };
    Ok(std::time::Duration::from_secs(number.saturating_mul(secs)))
}

/// Runs `edict keys …`.
///
/// # Errors
/// When the API cannot be reached or refuses.
pub async fn run(command: KeysCommand) -> Result<()> {
    let (args, request) = match &command {
        KeysCommand::Status(args) => (args, None),
        KeysCommand::Rotate { keys, overlap } => {
            (keys, Some(json!({"overlap_secs": overlap.as_secs()})))
        }
    };
    let client = api_client::client(&args.server, &args.tls)?;
    let base = args.server.trim_end_matches('/');
    let response = match &request {
        None => client.get(format!("{base}/api/v1/signing-keys")),
        Some(body) => client
            .post(format!("{base}/api/v1/signing-keys/rotate"))
            .json(body),
    }
    .bearer_auth(&args.token)
    .send()
    .await
    .with_context(|| format!("cannot reach {base}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the API answered {status}: {}",
            body["detail"].as_str().unwrap_or(&body.to_string())
        );
    }
    if args.output == OutputFormat::Json {
        return output::json(&body);
    }
    output::line(&format!("key set {}", body["sequence"]));
    for key in body["keys"].as_array().into_iter().flatten() {
        output::line(&format!(
            "  {}  {:<8}  {}",
            key["key_id"].as_str().unwrap_or_default(),
            key["state"].as_str().unwrap_or_default(),
            key["public_key"].as_str().unwrap_or_default()
        ));
    }
    match body.get("rotation") {
        Some(rotation) => output::line(&format!(
            "rotation: {} becomes active at {}; the previous key is retired at {}",
            rotation["next_key_id"].as_str().unwrap_or_default(),
            rotation["activate_at"].as_str().unwrap_or_default(),
            rotation["retire_at"].as_str().unwrap_or_default()
        )),
        None => output::line("no rotation under way"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
