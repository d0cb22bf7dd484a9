//! The command line: `login`, `run`, `status`, `watch`, `unwatch`, `list`, `changes`. Every command but
//! `run` opens the snapshot, does its small job and exits; the snapshot may be open in a running agent
//! at the same time.

use crate::daemon::{self, DaemonConfig};
use crate::enforce::EnforceConfig;
use crate::files::Paths;
use crate::login;
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
            // Without --ca-file, the one login (or the last run) was given.
            (None, _) => Snapshot::open(&data_dir)
                .ok()
                .and_then(|s| crate::tls::recorded_ca_file(&s).ok().flatten()),
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
            daemon::run(config, shutdown_signal()).await
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
            login(
                &data_dir,
                server,
                enrollment_token.as_deref(),
                agent_token.as_deref(),
                Overrides {
                    gateways,
                    org_key: org_key.as_deref(),
                },
                machine_name.as_deref(),
                *format,
            )
            .await
        }
        Command::Status { output: format } => {
            status(&Snapshot::open(&data_dir)?, &cli.paths()?, *format)
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
            sync(
                &data_dir,
                &paths,
                Duration::from_secs(*timeout_secs),
                *format,
            )
            .await
        }
        Command::Appeal {
            change,
            reason,
            until,
        } => appeal(&data_dir, change, reason, *until).await,
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

/// What `login` takes from the command line instead of the server's answer.
struct Overrides<'a> {
    /// `--gateway`.
    gateways: &'a [String],
    /// `--org-key`.
    org_key: Option<&'a str>,
}

async fn login(
    data_dir: &Path,
    server: &str,
    enrollment_token: Option<&str>,
    agent_token: Option<&str>,
    overrides: Overrides<'_>,
    machine_name: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let Overrides { gateways, org_key } = overrides;
    // Read before any call to the server, so a typo fails before an enrollment token is spent.
    let pinned = org_key.map(login::parse_org_key).transpose()?;
    if agent_token.is_some() && !matches!(pinned, Some(login::PinnedKey::Key(_))) {
        bail!(
            "with --agent-token, give the organization's rule set public key with --org-key (64 hex \
             digits, or a file holding it): nothing else tells the agent which rule sets to trust"
        );
    }
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("--server must be the API's http(s):// URL, e.g. https://edict.example.com");
    }
    let tls = crate::tls::policy();
    tls.check(server)?;
    for url in gateways {
        tls.check(&crate::client::ws_url(url)?)?;
    }
    let (machine_id, host_name) = login::machine();
    let machine_name = machine_name.unwrap_or(&host_name);
    let credentials = match (enrollment_token, agent_token) {
        (_, Some(token)) => login::Credentials {
            agent_id: String::new(),
            token: token.to_owned(),
            issued_at: None,
            expires_at: None,
            gateway_urls: Vec::new(),
            org_keys: Vec::new(),
            key_sequence: 0,
        },
        (Some(token), None) => {
            login::with_enrollment_token(server, token, &machine_id, machine_name).await?
        }
        (None, None) => {
            let code = login::start_device_flow(server, &machine_id, machine_name).await?;
            if format == Format::Json {
                output::json(&json!({
                    "user_code": code.user_code,
                    "verification_uri": code.verification_uri,
                    "expires_in": code.expires_in,
                }));
            } else {
                output::line(&format!(
                    "To enroll this machine ({machine_name}), open {} , sign in and enter the code\n\n    {}\n\nWaiting for approval (the code expires in {} minutes)…",
                    code.verification_uri,
                    code.user_code,
                    code.expires_in / 60
                ));
            }
            login::finish_device_flow(server, &code).await?
        }
    };
    let gateways = if gateways.is_empty() {
        credentials.gateway_urls.clone()
    } else {
        gateways.to_vec()
    };
    if gateways.is_empty() {
        bail!("the server named no gateway to connect to: pass --gateway ws://HOST:PORT/ws");
    }
    for url in &gateways {
        tls.check(&crate::client::ws_url(url)?)?;
    }
    let org_keys = login::keys_to_pin(&credentials.org_keys, pinned.as_ref())?;
    let snapshot = Snapshot::open(data_dir)?;
    crate::tls::record(&snapshot, tls)?;
    snapshot.set_org_keys(&org_keys, credentials.key_sequence)?;
    snapshot.set_identity(keys::API, server)?;
    snapshot.set_identity(keys::SERVER, &gateways.join("\n"))?;
    // The token with its lifetime, in one transaction (an unknown one is renewed at the first chance).
    let renew_at = crate::renew::renew_at(
        chrono::Utc::now().timestamp(),
        credentials.issued_at,
        credentials.expires_at,
    );
    snapshot.replace_token(
        None,
        &credentials.token,
        &credentials
            .expires_at
            .map(|at| at.to_rfc3339())
            .unwrap_or_default(),
        &renew_at.map(|at| at.to_string()).unwrap_or_default(),
    )?;
    if !credentials.agent_id.is_empty() {
        snapshot.set_identity(keys::AGENT_ID, &credentials.agent_id)?;
    }
    snapshot.set_identity(keys::MACHINE_ID, &machine_id)?;
    if format == Format::Json {
        output::json(&json!({
            "agent_id": credentials.agent_id,
            "gateway_urls": gateways,
            "org_keys": org_keys,
        }));
    } else {
        output::line(&format!(
            "organization rule set key: {}{}",
            login::fingerprints(&org_keys),
            if pinned.is_some() {
                " (matches --org-key)"
            } else {
                " (not checked: compare it with your administrator's, or log in with --org-key)"
            }
        ));
        output::line(&if credentials.agent_id.is_empty() {
            "agent token stored; start the agent with `edict-agent run`".to_owned()
        } else {
            format!(
                "enrolled as agent {}; start it with `edict-agent run`",
                credentials.agent_id
            )
        });
    }
    Ok(())
}

/// Signals the running daemon (SIGHUP), then waits for it to be connected again.
async fn sync(
    data_dir: &Path,
    paths: &Paths,
    timeout: Duration,
    format: Format,
) -> anyhow::Result<()> {
    let snapshot = Snapshot::open(data_dir)?;
    let pid = snapshot
        .identity(keys::DAEMON_PID)?
        .filter(|pid| !pid.is_empty())
        .context("the agent is not running: start it with `edict-agent run`")?;
    let before = snapshot.identity(keys::CONNECTED_SINCE)?;
    drop(snapshot);
    if !hang_up(&pid)? {
        bail!("the agent (pid {pid}) is not running: start it with `edict-agent run`");
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snapshot = Snapshot::open(data_dir)?;
        let connected = snapshot.identity(keys::CONNECTED)?.as_deref() == Some("true");
        let since = snapshot.identity(keys::CONNECTED_SINCE)?;
        if connected && since != before {
            return status(&snapshot, paths, format);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the agent reconciled its files but is not connected after {} s (see `edict-agent status`)",
                timeout.as_secs()
            );
        }
    }
}

/// Sends SIGHUP to the daemon whose pid the snapshot holds. Answers false when no process of that pid
/// can be signalled (it ended, it belongs to another user) or the pid is not one.
#[cfg(unix)]
#[allow(clippy::unnecessary_wraps)] // the same signature as on other systems
fn hang_up(pid: &str) -> anyhow::Result<bool> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    Ok(match pid.trim().parse::<i32>() {
        // Never 0 or below: those would signal a whole process group.
        Ok(pid) if pid > 0 => kill(Pid::from_raw(pid), Signal::SIGHUP).is_ok(),
        _ => false,
    })
}

/// Signals are Unix only.
#[cfg(not(unix))]
fn hang_up(_pid: &str) -> anyhow::Result<bool> {
    bail!("`edict-agent sync` signals the daemon, which needs a Unix system")
}

/// Requests an exception through the API, with this machine's agent token.
async fn appeal(
    data_dir: &Path,
    change: &str,
    reason: &str,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    let snapshot = Snapshot::open(data_dir)?;
    let (Some(api), Some(token)) = (
        snapshot.identity(keys::API)?,
        snapshot.identity(keys::TOKEN)?,
    ) else {
        bail!("not logged in: run `edict-agent login` first");
    };
    drop(snapshot);
    let body = match until {
        Some(until) => json!({"justification": reason, "kind": "time_limited", "until": until}),
        None => json!({"justification": reason, "kind": "permanent"}),
    };
    crate::tls::policy().check(&api)?;
    let response = crate::tls::policy()
        .http_client(Duration::from_secs(30))?
        .post(format!(
            "{}/api/v1/change-requests/{change}/exception",
            api.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("cannot reach {api}: appeal again when online"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the appeal was refused ({status}): {}",
            answer["detail"].as_str().unwrap_or("no detail")
        );
    }
    output::line(&format!(
        "exception requested on change request {change}; a team admin decides it (the agent applies the decision)"
    ));
    Ok(())
}

fn project_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(dir)
}

fn status(snapshot: &Snapshot, paths: &Paths, format: Format) -> anyhow::Result<()> {
    let connected = snapshot.identity(keys::CONNECTED)?.as_deref() == Some("true");
    let since = snapshot.identity(keys::CONNECTED_SINCE)?;
    let server = snapshot.identity(keys::SERVER)?;
    let api = snapshot.identity(keys::API)?;
    let agent_id = snapshot.identity(keys::AGENT_ID)?;
    let rulesets = snapshot.rulesets()?;
    let outbox = snapshot.outbox()?;
    let actions = snapshot.actions()?;
    let chain = snapshot.key_chain()?;
    let value = json!({
        "server": api,
        "gateways": server.as_deref().map(|s| s.lines().collect::<Vec<_>>()).unwrap_or_default(),
        "agent_id": agent_id,
        "logged_in": snapshot.identity(keys::TOKEN)?.is_some(),
        "token_expires_at": snapshot.identity(keys::TOKEN_EXPIRES_AT)?.filter(|at| !at.is_empty()),
        "connected": connected,
        "connection_changed_at": since,
        "rulesets": rulesets.iter().map(|r| json!({
            "team": r.team, "team_name": r.doc.team_name, "revision": r.revision, "hash": r.hash,
        })).collect::<Vec<_>>(),
        "pending_reports": outbox.len(),
        "watched": snapshot.watched()?,
        "recent_actions": actions.iter().rev().take(10).collect::<Vec<_>>(),
        "refused_downgrades": snapshot.refused_downgrades()?,
        "refused_downgrades_total": snapshot.refused_downgrade_count()?,
        "org_keys": snapshot.org_keys()?.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
        "key_sequence": chain.sequence,
        "retired_keys": chain.retired.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
        "integrity_failures": snapshot.integrity_failures()?.into_iter().map(|(_, f)| f).collect::<Vec<_>>(),
        "integrity_failures_total": snapshot.integrity_failure_count()?,
        "refused_files": crate::files::refused(paths, &snapshot.watched()?),
        "insecure": snapshot.identity(crate::tls::keys::INSECURE)?.as_deref() == Some("true"),
        "ca_file": crate::tls::recorded_ca_file(snapshot)?,
    });
    if format == Format::Json {
        output::json(&value);
        return Ok(());
    }
    output::line(&format!(
        "server:     {}",
        api.as_deref().unwrap_or("(not logged in)")
    ));
    if let Some(server) = &server {
        output::line(&format!(
            "gateways:   {}",
            server.lines().collect::<Vec<_>>().join(", ")
        ));
    }
    if snapshot.identity(crate::tls::keys::INSECURE)?.as_deref() == Some("true") {
        output::line("insecure:   yes (started with --insecure: plain http:// and ws:// allowed)");
    }
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
    output::line(&format!(
        "refused downgrades: {}",
        snapshot.refused_downgrade_count()?
    ));
    let org_keys = snapshot.org_keys()?;
    output::line(&format!(
        "org keys:   {}",
        if org_keys.is_empty() {
            "none pinned: no rule set is trusted; run `edict-agent login` again".to_owned()
        } else {
            format!(
                "{} (key set {})",
                crate::login::fingerprints(&org_keys),
                chain.sequence
            )
        }
    ));
    output::line(&format!(
        "untrusted rule sets refused: {}",
        snapshot.integrity_failure_count()?
    ));
    for r in crate::files::refused(paths, &snapshot.watched()?) {
        output::line(&format!("left alone: {} ({})", r.file.display(), r.reason));
    }
    for a in actions.iter().rev().take(10) {
        output::line(&format!("  {}  {}  {}", a.at, a.what, a.file));
    }
    Ok(())
}

/// SIGTERM or Ctrl-C. The SIGTERM handler is installed by this call, not when the future is first
/// polled: the daemon polls it only after its start-up sync, and a SIGTERM before that would kill the
/// process instead of stopping it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        match term {
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
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_running_daemon_is_hung_up_on() -> anyhow::Result<()> {
        let mut daemon = std::process::Command::new("sleep").arg("30").spawn()?;
        assert!(hang_up(&daemon.id().to_string())?);
        assert_eq!(daemon.wait()?.signal(), Some(libc::SIGHUP));
        Ok(())
    }

    #[test]
    fn a_stale_or_unreadable_pid_is_not_running() -> anyhow::Result<()> {
        let mut ended = std::process::Command::new("true").spawn()?;
        let pid = ended.id().to_string();
        ended.wait()?;
        assert!(!hang_up(&pid)?);
        assert!(!hang_up("0")?);
        assert!(!hang_up("-1")?);
        assert!(!hang_up("not a pid")?);
        Ok(())
    }
}
