//! `edict events`: follow and export the global log.

use anyhow::Result;
use clap::Subcommand;

/// `edict events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are committed (follows the log until interrupted).
    Tail(crate::events_tail::TailArgs),
    /// Stream a range of the log to a file or stdout, as NDJSON or CSV.
    Export(crate::events_export::ExportArgs),
}

/// Runs one `edict events` command.
pub async fn run(command: EventsCommand) -> Result<()> {
    match command {
        EventsCommand::Tail(args) => crate::events_tail::run(args).await,
        EventsCommand::Export(args) => crate::events_export::run(args).await,
    }
}
