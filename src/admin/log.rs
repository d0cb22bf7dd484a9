//! The API's log and audit reads for the admin CLI, as subcommands of the existing groups:
//! `edict events list` (`GET /api/v1/events`) and `edict audit checkpoints`
//! (`GET /api/v1/audit/checkpoints`). Auditors and org_admins.

use super::client::{Request, SessionArgs};
use anyhow::Result;
use clap::Args;

/// Arguments of `edict events list`.
#[derive(Debug, Args)]
pub struct EventsListArgs {
    /// `Rule`, `Team`, `ChangeRequest`, `User`, `Agent` (comma-separated for several).
    #[arg(long)]
    aggregate_type: Option<String>,
    /// One aggregate's events.
    #[arg(long)]
    aggregate_id: Option<String>,
    /// One actor's events (`user:ID`, `agent:ID`, `system`).
    #[arg(long)]
    actor: Option<String>,
    /// Event types (comma-separated for several).
    #[arg(long)]
    event_type: Option<String>,
    /// Events recorded at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Events recorded at or before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Continue after this cursor (a page's `next`).
    #[arg(long)]
    after: Option<String>,
    /// Events after this global log position.
    #[arg(long)]
    after_position: Option<i64>,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u32>,
    #[command(flatten)]
    session: SessionArgs,
}

/// Runs `edict events list`.
///
/// # Errors
/// See [`super::execute`].
pub async fn events_list(args: EventsListArgs) -> Result<()> {
    let request = Request::get(["events"])
        .query("aggregate_type", args.aggregate_type)
        .query("aggregate_id", args.aggregate_id)
        .query("actor", args.actor)
        .query("event_type", args.event_type)
        .query("since", args.since)
        .query("until", args.until)
        .query("after", args.after)
        .query("after_position", args.after_position)
        .query("limit", args.limit);
    super::execute(&args.session, request).await
}

/// Arguments of `edict audit checkpoints`.
#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// Checkpoints after this one (a page's `next`).
    #[arg(long)]
    after: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<u32>,
    #[command(flatten)]
    session: SessionArgs,
}

/// Runs `edict audit checkpoints`.
///
/// # Errors
/// See [`super::execute`].
pub async fn checkpoints(args: CheckpointsArgs) -> Result<()> {
    let request = Request::get(["audit", "checkpoints"])
        .query("after", args.after)
        .query("limit", args.limit);
    super::execute(&args.session, request).await
}
