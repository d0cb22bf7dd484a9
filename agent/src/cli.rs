//! The command line: `login`, `run`, `status`, `watch`, `unwatch`, `list`, `changes`. Every command but
//! `run` opens the snapshot, does its small job and exits; the snapshot may be open in a running agent
//! at the same time.

use crate::daemon::{self, DaemonConfig};
use crate::enforce::EnforceConfig;
use crate::files::Paths;
use crate::output;
use crate::snapshot::{Snapshot, keys};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Edict agent: keeps the Edict-managed sections of your CLAUDE.md files as your organization's rules
/// say, and reports changes to them.
#[derive(Debug, Parser)]
#[command(name = "edict-agent", version)]
pub struct Cli {
    /// Where the agent keeps its state (default: ~/.local/share/edict-agent).
    #[arg(long, global = true, env = "EDICT_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The home directory whose ~/.claude/CLAUDE.md holds the team layer (default: your home).
    #[arg(long, global = true, env = "EDICT_AGENT_HOME")]
    pub home: Option<PathBuf>,
    /// The organization layer's file.
    #[arg(
        long,
        global = true,
        env = "EDICT_AGENT_ORG_FILE",
        default_value = "/etc/claude-code/CLAUDE.md"
    )]
    pub org_file: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stores the server URL and this machine's agent token.
    ///
    /// For now the token is the agent token an administrator obtains from `POST /api/v1/agents`
    /// (an enrollment by device code, with your explicit consent, comes in a later version).
    Login {
        /// The Edict server (gateway) URL, e.g. https://edict.example.com.
        #[arg(long)]
        server: String,
        /// The agent token (see above).
        #[arg(long, env = "EDICT_AGENT_ENROLLMENT_TOKEN", hide_env_values = true)]
        enrollment_token: String,
    },
    /// Runs the agent in the foreground until SIGTERM or Ctrl-C.
    Run {
        /// Seconds between two full checks of every managed file (the watcher's backup).
        #[arg(long, default_value_t = 30)]
        audit_interval_secs: u64,
    },
    /// Shows the connection, the rule sets in force, pending reports and recent actions.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Adds a project directory whose CLAUDE.md carries the project layer.
    Watch {
        /// The project directory.
        dir: PathBuf,
    },
    /// Removes a project directory (its file is left as it is).
    Unwatch {
        /// The project directory.
        dir: PathBuf,
    },
    /// Lists the managed files and watched project directories.
    List,
    /// Lists the changes the agent reported and keeps, with their change requests.
    Changes,
}

impl Cli {
    fn home(&self) -> anyhow::Result<PathBuf> {
        match &self.home {
            Some(h) => Ok(h.clone()),
            None => dirs::home_dir().context("no home directory; set EDICT_AGENT_HOME"),
        }
    }

    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => Ok(self.home()?.join(".local/share/edict-agent")),
        }
    }

    fn paths(&self) -> anyhow::Result<Paths> {
        Ok(Paths::new(&self.home()?, self.org_file.clone()))
    }
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir()?;
    match &cli.command {
        Command::Run {
            audit_interval_secs,
        } => {
            let config = DaemonConfig {
                data_dir,
                paths: cli.paths()?,
                audit_interval: Duration::from_secs((*audit_interval_secs).max(1)),
                debounce: Duration::from_millis(50),
                enforce: EnforceConfig::default(),
            };
            daemon::run(config, shutdown_signal()).await
        }
        Command::Login {
            server,
            enrollment_token,
        } => {
            crate::client::ws_url(server)?;
            let snapshot = Snapshot::open(&data_dir)?;
            snapshot.set_identity(keys::SERVER, server)?;
            snapshot.set_identity(keys::TOKEN, enrollment_token)?;
            output::line(&format!(
                "logged in to {server}; start the agent with `edict-agent run`"
            ));
            Ok(())
        }
        Command::Status { output: format } => status(&Snapshot::open(&data_dir)?, *format),
        Command::Watch { dir } => {
            let dir = project_dir(dir)?;
            Snapshot::open(&data_dir)?.watch(&dir)?;
            output::line(&format!(
                "watching {} (a running agent picks it up at its next audit)",
                dir.display()
            ));
            Ok(())
        }
        Command::Unwatch { dir } => {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            if Snapshot::open(&data_dir)?.unwatch(&dir)? {
                output::line(&format!("no longer watching {}", dir.display()));
            } else {
                output::line(&format!("{} was not watched", dir.display()));
            }
            Ok(())
        }
        Command::List => {
            let snapshot = Snapshot::open(&data_dir)?;
            let paths = cli.paths()?;
            output::line(&format!("organization  {}", paths.org_file.display()));
            output::line(&format!("team          {}", paths.team_file.display()));
            for dir in snapshot.watched()? {
                output::line(&format!(
                    "project       {}",
                    Paths::project_file(&dir).display()
                ));
            }
            Ok(())
        }
        Command::Changes => {
            let snapshot = Snapshot::open(&data_dir)?;
            let changes = snapshot.changes()?;
            if changes.is_empty() {
                output::line("no changes kept");
            }
            for (path, c) in changes {
                output::line(&format!(
                    "{}  {:?}  change request {}{}",
                    path.display(),
                    c.state,
                    c.change_request
                        .as_deref()
                        .unwrap_or("(not yet acknowledged)"),
                    c.until.map(|u| format!("  until {u}")).unwrap_or_default()
                ));
            }
            Ok(())
        }
    }
}

fn project_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(dir)
}

fn status(snapshot: &Snapshot, format: Format) -> anyhow::Result<()> {
    let connected = snapshot.identity(keys::CONNECTED)?.as_deref() == Some("true");
    let since = snapshot.identity(keys::CONNECTED_SINCE)?;
    let server = snapshot.identity(keys::SERVER)?;
    let agent_id = snapshot.identity(keys::AGENT_ID)?;
    let rulesets = snapshot.rulesets()?;
    let outbox = snapshot.outbox()?;
    let actions = snapshot.actions()?;
    let value = json!({
        "server": server,
        "agent_id": agent_id,
        "logged_in": snapshot.identity(keys::TOKEN)?.is_some(),
        "connected": connected,
        "connection_changed_at": since,
        "rulesets": rulesets.iter().map(|r| json!({
            "team": r.team, "team_name": r.doc.team_name, "revision": r.revision, "hash": r.hash,
        })).collect::<Vec<_>>(),
        "pending_reports": outbox.len(),
        "watched": snapshot.watched()?,
        "recent_actions": actions.iter().rev().take(10).collect::<Vec<_>>(),
    });
    if format == Format::Json {
        output::json(&value);
        return Ok(());
    }
    output::line(&format!(
        "server:     {}",
        server.as_deref().unwrap_or("(not logged in)")
    ));
    output::line(&format!(
        "connected:  {}{}",
        if connected { "yes" } else { "no" },
        since.map(|s| format!(" (since {s})")).unwrap_or_default()
    ));
    if rulesets.is_empty() {
        output::line("rule sets:  none");
    }
    for r in &rulesets {
        output::line(&format!(
            "rule set:   {} ({}) revision {} hash {}",
            r.doc.team_name, r.team, r.revision, r.hash
        ));
    }
    output::line(&format!("pending reports: {}", outbox.len()));
    for a in actions.iter().rev().take(10) {
        output::line(&format!("  {}  {}  {}", a.at, a.what, a.file));
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
