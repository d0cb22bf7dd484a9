//! `edict projections`: the read models from the command line — list them, see how far behind they
//! are, rebuild them from the event store (with a progress bar; the API keeps serving the old generation
//! until the new one is swapped in).

use crate::output::{self, OutputFormat};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use edict_application::read_models::ProjectionStatus;
use edict_infrastructure::projection::{ProjectionRunner, RebuildPhase, RebuildProgress};
use edict_infrastructure::store::Database;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Where the store is (as for `edict serve`).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "EDICT_DATA_DIR", default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of the embedded SQLite store.
    #[arg(long, env = "EDICT_DATABASE_URL")]
    database_url: Option<String>,
    /// `text` or `json`.
    #[arg(long, default_value = "text", global = true)]
    output: OutputFormat,
}

/// What to do with the projections.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// The projections and what each serves.
    List(StoreArgs),
    /// Each projection's generation, checkpoint, lag and error.
    Status(StoreArgs),
    /// Replays the event store into a fresh generation and swaps it in.
    Rebuild {
        /// The projection to rebuild.
        name: Option<String>,
        /// Rebuild every projection.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// What each projection serves.
fn describe(name: &str) -> &'static str {
    match name {
        "rule_catalog" => "rules with their revision history (GET /api/v1/rules)",
        "team_rulesets" => {
            "each team's effective rule set, rendered per layer (GET /api/v1/teams/{id}/ruleset)"
        }
        "change_inbox" => "change requests by team and status (GET /api/v1/change-requests)",
        "directory" => "users and teams (GET /api/v1/users, /api/v1/teams)",
        "agent_fleet" => "enrolled agents (GET /api/v1/agents)",
        _ => "",
    }
}

async fn open(store: &StoreArgs) -> Result<Database> {
    crate::open_store_at(&store.data_dir, store.database_url.as_deref()).await
}

fn runners(database: &Database) -> Vec<ProjectionRunner> {
    edict_projections::all()
        .into_iter()
        .map(|projection| ProjectionRunner::new(database.clone(), projection, None))
        .collect()
}

#[derive(Serialize)]
struct Listed {
    name: &'static str,
    serves: &'static str,
}

/// Runs a projections command.
pub async fn run(command: ProjectionsCommand) -> Result<()> {
    match command {
        ProjectionsCommand::List(store) => {
            let listed: Vec<Listed> = edict_projections::all()
                .iter()
                .map(|p| Listed {
                    name: p.name(),
                    serves: describe(p.name()),
                })
                .collect();
            match store.output {
                OutputFormat::Json => output::json(&listed)?,
                OutputFormat::Text => {
                    for l in listed {
                        output::line(&format!("{:<14} {}", l.name, l.serves));
                    }
                }
            }
            Ok(())
        }
        ProjectionsCommand::Status(store) => {
            let database = open(&store).await?;
            let mut statuses: Vec<ProjectionStatus> = Vec::new();
            for runner in runners(&database) {
                runner.ensure().await?;
                statuses.push(runner.status().await?);
            }
            database.close().await;
            match store.output {
                OutputFormat::Json => output::json(&statuses)?,
                OutputFormat::Text => {
                    output::line(&format!(
                        "{:<14} {:>10} {:>12} {:>10} {:>8}  {}",
                        "projection", "generation", "position", "applied", "lag", "error"
                    ));
                    for s in statuses {
                        output::line(&format!(
                            "{:<14} {:>10} {:>12} {:>10} {:>8}  {}",
                            s.name,
                            s.generation,
                            s.checkpoint.position,
                            s.events_applied,
                            s.lag,
                            s.error.unwrap_or_default()
                        ));
                    }
                }
            }
            Ok(())
        }
        ProjectionsCommand::Rebuild { name, all, store } => {
            let database = open(&store).await?;
            let selected: Vec<ProjectionRunner> = match (name, all) {
                (_, true) => runners(&database),
                (Some(name), false) => match edict_projections::by_name(&name) {
                    Some(projection) => {
                        vec![ProjectionRunner::new(database.clone(), projection, None)]
                    }
                    None => {
                        bail!("unknown projection {name:?}; `edict projections list` shows them")
                    }
                },
                (None, false) => bail!("name a projection to rebuild, or pass --all"),
            };
            let mut reports = Vec::new();
            for runner in selected {
                let bar = if store.output == OutputFormat::Text {
                    ProgressBar::new(0)
                } else {
                    ProgressBar::hidden()
                };
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:<14} {msg:<10} [{bar:30}] {pos}/{len} events ({per_sec}) {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(runner.name());
                bar.enable_steady_tick(Duration::from_millis(200));
                let progress = |p: RebuildProgress| {
                    bar.set_length(p.total_estimate);
                    bar.set_position(p.events);
                    bar.set_message(match p.phase {
                        RebuildPhase::Replaying => "replaying",
                        RebuildPhase::Writing => "writing",
                        RebuildPhase::Swapping => "swapping",
                    });
                };
                let report = runner
                    .rebuild(&progress)
                    .await
                    .with_context(|| format!("cannot rebuild {}", runner.name()))?;
                bar.finish_and_clear();
                let rebuilt = crate::app::summary(runner.name(), report);
                if store.output == OutputFormat::Text {
                    output::line(&format!(
                        "{:<14} generation {} from {} events, {} documents, in {:.2} s ({:.0} events/s), hash {}",
                        rebuilt.name,
                        rebuilt.generation,
                        rebuilt.events,
                        rebuilt.docs,
                        rebuilt.seconds,
                        rebuilt.events_per_sec,
                        &rebuilt.content_hash[..16.min(rebuilt.content_hash.len())]
                    ));
                }
                reports.push(rebuilt);
            }
            database.close().await;
            if store.output == OutputFormat::Json {
                output::json(&reports)?;
            }
            Ok(())
        }
    }
}
