//! The `edict-agent` binary: parses the command line, sets up logging (stderr, `EDICT_AGENT_LOG`,
//! default `info`) and runs the command.

use clap::Parser;
use edict_agent::{cli, output};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter =
        EnvFilter::try_from_env("EDICT_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli::execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
