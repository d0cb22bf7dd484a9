//! `edict enrollment-tokens …`: tokens for unattended agent installs (`/api/v1/enrollment-tokens`).

use super::client::Request;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

/// `edict enrollment-tokens …`.
#[derive(Debug, Subcommand)]
pub enum EnrollmentTokensCommand {
    /// Every enrollment token, newest first (no secrets).
    List,
    /// Creates a token and prints its secret (shown once).
    Create {
        /// Whose machines it enrolls (default: yours).
        #[arg(long)]
        user: Option<String>,
        /// How many machines (default 1).
        #[arg(long)]
        uses: Option<u32>,
        /// Seconds it stays valid (default one day; 60 s to 90 days).
        #[arg(long)]
        expires_in_secs: Option<i64>,
        /// What it is for.
        #[arg(long)]
        note: Option<String>,
    },
    /// Revokes a token: machines it enrolled keep their agent tokens.
    Revoke {
        /// The token's id.
        id: String,
    },
}

/// The request of an `enrollment-tokens` subcommand.
pub fn request(command: EnrollmentTokensCommand) -> Request {
    match command {
        EnrollmentTokensCommand::List => Request::get(["enrollment-tokens"]),
        EnrollmentTokensCommand::Create {
            user,
            uses,
            expires_in_secs,
            note,
        } => Request::post(
            ["enrollment-tokens"],
            json!({"user_id": user, "uses": uses, "expires_in_secs": expires_in_secs, "note": note}),
        ),
        EnrollmentTokensCommand::Revoke { id } => {
            Request::new(Method::POST, ["enrollment-tokens", &id, "revoke"])
        }
    }
}
