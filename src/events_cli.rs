//! `edict events`: follow and export the global log, or list a page of it through the API.

use anyhow::Result;
use clap::Subcommand;

/// `edict events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are committed (follows the log until interrupted).
    Tail(crate::events_tail::TailArgs),
    /// Stream a range of the log to a file or stdout, as NDJSON or CSV.
    Export(crate::events_export::ExportArgs),
    /// A page of the log through a running API (`GET /api/v1/events`), filtered; as the admin
    /// commands, signed in or with `EDICT_SERVER` and `EDICT_TOKEN`.
    List(crate::admin::log::EventsListArgs),
}

/// Runs one `edict events` command.
pub async fn run(command: EventsCommand) -> Result<()> {
    match command {
        EventsCommand::Tail(args) => crate::events_tail::run(args).await,
        EventsCommand::Export(args) => crate::events_export::run(args).await,
        EventsCommand::List(args) => crate::admin::log::events_list(args).await,
    }
}
