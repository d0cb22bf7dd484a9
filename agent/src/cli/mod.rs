//! The command line: `login`, `run`, `status`, `watch`, `unwatch`, `list`, `changes`, `sync`,
//! `appeal`, `doctor`, `service`. Every command but `run` does its small job and exits; the snapshot
//! may be open in a running agent at the same time (`service` never opens it).
//!
//! Layout: this file holds the options and the dispatch, and the small local commands (`watch`,
//! `unwatch`, `list`, `changes`); [`login`], [`status`], [`control`] (`sync` and the signals of `run`),
//! [`appeal`], [`doctor`] and [`service`] one command group each.

mod appeal;
mod control;
mod doctor;
mod login;
mod service;
mod status;

pub use service::{ServiceAction, ServiceArgs};

use crate::daemon::{self, DaemonConfig};
use crate::enforce::EnforceConfig;
use crate::files::Paths;
use crate::output;
use crate::snapshot::Snapshot;
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The organization layer's file unless `--org-file` names another.
pub const DEFAULT_ORG_FILE: &str = "/etc/claude-code/CLAUDE.md";

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
        default_value = DEFAULT_ORG_FILE
    )]
    pub org_file: PathBuf,
    /// Allow plain http:// and ws:// to another machine (otherwise only to loopback); `status` shows it.
    #[arg(long, global = true, env = "EDICT_AGENT_INSECURE")]
    pub insecure: bool,
    /// A PEM bundle of CA certificates to trust beside the public ones (a private PKI), for the API
    /// and the gateways; `run` keeps the one `login` was given unless given another.
    #[arg(long, global = true, env = "EDICT_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
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
    /// Enrolls this machine and stores its agent token.
    ///
    /// Without `--enrollment-token`: prints a code and a page where you (signed in) approve this
    /// machine, then waits for the approval. With one (from an admin, for unattended installs): enrolls
    /// at once.
    Login {
        /// The Edict API URL, e.g. https://edict.example.com.
        #[arg(long)]
        server: String,
        /// An enrollment token (`ede_…`) created by an org_admin (`POST /api/v1/enrollment-tokens`).
        #[arg(long, env = "EDICT_AGENT_ENROLLMENT_TOKEN", hide_env_values = true)]
        enrollment_token: Option<String>,
        /// An agent token (`eda_…`) already issued for this machine (`POST /api/v1/agents`): stored
        /// as it is, with no call to the server; needs `--gateway`.
        #[arg(
            long,
            env = "EDICT_AGENT_TOKEN",
            hide_env_values = true,
            conflicts_with = "enrollment_token",
            requires = "gateways"
        )]
        agent_token: Option<String>,
        /// Gateway URLs to use instead of those the server names (repeat for several).
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// The organization's rule set key, checked out of band: its fingerprint (16 hex digits, as
        /// `login` prints it), its public key (64 hex digits), or a file holding either. A server
        /// that answers with another key aborts the login. Required with `--agent-token` (as a public
        /// key), which asks the server nothing.
        #[arg(long)]
        org_key: Option<String>,
        /// This machine's name as the server shows it (default: the host name).
        #[arg(long)]
        machine_name: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
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
    /// Asks the running agent to reconnect and reconcile every managed file now, and waits until it
    /// is connected again.
    Sync {
        /// Seconds to wait for the agent to be connected again.
        #[arg(long, default_value_t = 15)]
        timeout_secs: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Asks for an exception to a rejected or reverted change made on this machine, so it may stand
    /// (needs the server).
    Appeal {
        /// The change request (its id, from `edict-agent changes` or the server).
        change: String,
        /// Why the change should stand.
        #[arg(long)]
        reason: String,
        /// Until when (RFC 3339); without it the exception asked for is permanent.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Checks the server and gateways, the pinned organization key, the managed files, the clock
    /// and the data directory: each ok, warn or fail with a reason and a hint. Exits 1 when one fails.
    Doctor {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Runs the agent as your service (a systemd user unit, or a launchd agent on macOS), with the
    /// global options given here.
    Service {
        /// What to do.
        #[command(subcommand)]
        action: ServiceAction,
    },
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
    // Before anything opens (and so creates) the data directory.
    if let Command::Service { action } = &cli.command {
        return service::execute(&cli, action);
    }
    let data_dir = cli.data_dir()?;
    let ca_file = cli
        .ca_file
        .as_deref()
        .map(crate::tls::absolute)
        .transpose()?;
    crate::tls::set_policy(crate::tls::TlsPolicy {
        insecure: cli.insecure,
        ca_file: match (&ca_file, &cli.command) {
            (Some(path), _) => Some(path.clone()),
            (None, Command::Login { .. }) => None,
            // Without --ca-file, the one login (or the last run) was given (not creating a snapshot
            // where there is none: `doctor` reports that).
            (None, _) if Snapshot::file_in(&data_dir).is_file() => Snapshot::open(&data_dir)
                .ok()
                .and_then(|s| crate::tls::recorded_ca_file(&s).ok().flatten()),
            (None, _) => None,
        },
    });
    match &cli.command {
        Command::Run {
            audit_interval_secs,
        } => {
            // Recorded for `status`, before the daemon holds the snapshot.
            crate::tls::record(&Snapshot::open(&data_dir)?, crate::tls::policy())?;
            let config = DaemonConfig {
                data_dir,
                paths: cli.paths()?,
                audit_interval: Duration::from_secs((*audit_interval_secs).max(1)),
                debounce: Duration::from_millis(50),
                enforce: EnforceConfig::default(),
            };
            daemon::run(config, control::shutdown_signal()).await
        }
        Command::Login {
            server,
            enrollment_token,
            agent_token,
            gateways,
            org_key,
            machine_name,
            output: format,
        } => {
            login::login(
                &data_dir,
                server,
                enrollment_token.as_deref(),
                agent_token.as_deref(),
                login::Overrides {
                    gateways,
                    org_key: org_key.as_deref(),
                },
                machine_name.as_deref(),
                *format,
            )
            .await
        }
        Command::Status { output: format } => {
            status::status(&Snapshot::open(&data_dir)?, &cli.paths()?, *format)
        }
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
        Command::Sync {
            timeout_secs,
            output: format,
        } => {
            let paths = cli.paths()?;
            control::sync(
                &data_dir,
                &paths,
                Duration::from_secs(*timeout_secs),
                *format,
            )
            .await
        }
        Command::Service { action } => service::execute(&cli, action),
        Command::Doctor { output: format } => {
            let config = crate::doctor::DoctorConfig {
                data_dir,
                paths: cli.paths()?,
            };
            doctor::doctor(&config, *format).await
        }
        Command::Appeal {
            change,
            reason,
            until,
        } => appeal::appeal(&data_dir, change, reason, *until).await,
        Command::Changes => {
            let snapshot = Snapshot::open(&data_dir)?;
            let changes = snapshot.changes()?;
            if changes.is_empty() {
                output::line("no changes kept");
            }
            for (key, c) in changes {
                let (path, rule) = crate::enforce::split_change_key(&key);
                output::line(&format!(
                    "{}{}  {:?}  change request {}{}",
                    path.display(),
                    rule.map(|r| format!("  rule {r}")).unwrap_or_default(),
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
