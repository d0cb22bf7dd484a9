//! `edict change-requests …`: the changes developers made to temporary-mode sections, and the
//! exceptions asked for them (`/api/v1/change-requests`). Reports and amendments come from agents
//! with their own tokens, not from here.

use super::client::Request;
use super::rules::Page;
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::json;

/// `edict change-requests …`.
#[derive(Debug, Subcommand)]
pub enum ChangeRequestsCommand {
    /// Change requests (a team_admin passes `--team`; a developer sees their own).
    List {
        /// Only this team's.
        #[arg(long)]
        team: Option<String>,
        /// `pending`, `approved`, `rejected`, `withdrawn`, …
        #[arg(long)]
        status: Option<String>,
        /// The page to list.
        #[command(flatten)]
        page: Page,
    },
    /// A change request.
    Show {
        /// The change request's id.
        id: String,
    },
    /// Approves a pending change: the developer keeps it.
    Approve {
        /// The change request's id.
        id: String,
    },
    /// Rejects a pending change: the agent reverts it.
    Reject {
        /// The change request's id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Withdraws your pending change request.
    Withdraw {
        /// The change request's id.
        id: String,
    },
    /// Asks for an exception to your rejected or reverted change.
    RequestException {
        /// The change request's id.
        id: String,
        /// Why the change should stand.
        #[arg(long)]
        justification: String,
        /// `time_limited` (with `--until`) or `permanent`.
        #[arg(long)]
        kind: ExceptionKind,
        /// For time-limited: until when (RFC 3339).
        #[arg(long, required_if_eq("kind", "time_limited"))]
        until: Option<String>,
    },
    /// Grants the pending exception, until a time or for good.
    GrantException {
        /// The change request's id.
        id: String,
        /// Until when the change may stand (RFC 3339; absent: for good).
        #[arg(long)]
        until: Option<String>,
    },
    /// Denies the pending exception.
    DenyException {
        /// The change request's id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Every event of the change request, with its state after each.
    History {
        /// The change request's id.
        id: String,
    },
}

/// The kind of an exception.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExceptionKind {
    /// Until a time.
    #[value(name = "time_limited")]
    TimeLimited,
    /// For good.
    Permanent,
}

/// The request of a `change-requests` subcommand.
pub fn request(command: ChangeRequestsCommand) -> Request {
    let post = |id: &str, action: &[&str]| {
        let mut segments = vec!["change-requests", id];
        segments.extend(action);
        Request::new(Method::POST, segments)
    };
    match command {
        ChangeRequestsCommand::List { team, status, page } => page.apply(
            Request::get(["change-requests"])
                .query("team", team)
                .query("status", status),
        ),
        ChangeRequestsCommand::Show { id } => Request::get(["change-requests", &id]),
        ChangeRequestsCommand::Approve { id } => post(&id, &["approve"]),
        ChangeRequestsCommand::Reject { id, reason } => {
            post(&id, &["reject"]).body(json!({"reason": reason}))
        }
        ChangeRequestsCommand::Withdraw { id } => post(&id, &["withdraw"]),
        ChangeRequestsCommand::RequestException {
            id,
            justification,
            kind,
            until,
        } => {
            let kind = match kind {
                ExceptionKind::TimeLimited => "time_limited",
                ExceptionKind::Permanent => "permanent",
            };
            post(&id, &["exception"])
                .body(json!({"justification": justification, "kind": kind, "until": until}))
        }
        ChangeRequestsCommand::GrantException { id, until } => {
            post(&id, &["exception", "grant"]).body(json!({"until": until}))
        }
        ChangeRequestsCommand::DenyException { id, reason } => {
            post(&id, &["exception", "deny"]).body(json!({"reason": reason}))
        }
        ChangeRequestsCommand::History { id } => Request::get(["change-requests", &id, "history"]),
    }
}
