//! `edict`: the composition root and command-line interface of Edict (the binary, `src/main.rs`, only
//! calls [`main`]).
//!
//! The admin commands (`login`, `rules`, `teams`, …) live in [`admin`]. `serve` runs the roles (API, relay, projectors, gateway, audit writer) on the embedded default
//! (SQLite under `./.edict/`) or on PostgreSQL (`EDICT_DATABASE_URL`) and NATS (`EDICT_NATS_URL`);
//! `projections` lists, inspects and rebuilds the read models; `openapi` prints the API's spec. The
//! benchmarks (`edict-bench`, `tests/bench`) start Edict through [`app`] and reuse [`output`] and
//! [`events_export`].

pub mod admin;
mod api_client;
pub mod app;
mod audit_cli;
mod events_cli;
pub mod events_export;
mod events_tail;
mod keys_cli;
pub mod output;
mod projections_cli;
mod serve;
mod tls;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Edict: distributes and enforces the managed section of CLAUDE.md files.
#[derive(Debug, Parser)]
#[command(name = "edict", version, about, after_help = admin::EXIT_CODES)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "EDICT_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the roles of Edict (API, relay, projectors, gateway, audit writer, or those `--roles` names)
    /// in this process.
    Serve(Box<serve::ServeArgs>),
    /// List, inspect and rebuild the read models.
    #[command(subcommand)]
    Projections(projections_cli::ProjectionsCommand),
    /// Follow and export the global log of events.
    #[command(subcommand)]
    Events(events_cli::EventsCommand),
    /// Verify the history's hash chain and signed checkpoints.
    #[command(subcommand)]
    Audit(audit_cli::AuditCommand),
    /// The organization's rule set signing keys: status, rotation.
    #[command(subcommand)]
    Keys(keys_cli::KeysCommand),
    /// The admin commands, through a running API.
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Print the OpenAPI spec of the HTTP API.
    Openapi {
        /// `yaml` (default, the committed form) or `json`.
        #[arg(long, default_value = "yaml")]
        format: output::SpecFormat,
    },
}

/// The default address of `serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The default data directory of the embedded store.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(".edict")
}

/// Opens the event store at `database_url` (or the embedded one under `data_dir`) and migrates it.
///
/// # Errors
/// When it cannot be opened or migrated.
pub(crate) async fn open_store_at(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> Result<edict_infrastructure::store::Database> {
    let url = database_url.map_or_else(
        || format!("sqlite://{}", data_dir.join("edict.db").display()),
        str::to_owned,
    );
    open_database(&url).await
}

/// Opens the event store at `url` and migrates it.
///
/// # Errors
/// When it cannot be opened or migrated.
pub(crate) async fn open_database(url: &str) -> Result<edict_infrastructure::store::Database> {
    use anyhow::Context;
    let database = edict_infrastructure::store::Database::connect(url)
        .await
        .context("cannot open the event store")?;
    database
        .migrate()
        .await
        .context("cannot migrate the event store")?;
    Ok(database)
}

/// Parses a listen address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| {
        format!("invalid listen address {s:?}: {e} (expected host:port, e.g. 127.0.0.1:8080)")
    })
}

/// Parses the command line and runs the command.
pub async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    // Traces (off unless an OTLP endpoint is configured) only for the servers.
    let traces = match &cli.command {
        Command::Serve(args) => edict_infrastructure::telemetry::TraceExport::from_vars(
            |name| std::env::var(name).ok(),
            &args.role_names(),
        ),
        _ => None,
    };
    let telemetry = edict_infrastructure::telemetry::init_with_traces(cli.log_json, level, traces);
    let result: Result<()> = match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Projections(command) => projections_cli::run(command).await,
        Command::Events(command) => events_cli::run(command).await,
        Command::Audit(command) => audit_cli::run(command).await,
        Command::Keys(command) => keys_cli::run(command).await,
        Command::Admin(command) => {
            admin::run(command, <Cli as clap::CommandFactory>::command).await
        }
        Command::Openapi { format } => output::print_spec(format),
    };
    // Flush the spans still buffered (blocks up to the exporter's timeout, so off the runtime).
    if telemetry.exporting() {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            std::process::ExitCode::from(admin::exit_code(&error))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
