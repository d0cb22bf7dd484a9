//! `edict-agent run`: the engine thread (the one owner of the [`Enforcer`] and the watcher) and the
//! gateway client, wired together.
//!
//! Start-up order matters: the snapshot is opened and every managed file enforced from it, and the
//! watcher armed, *before* the client touches the network, so a machine without a gateway is enforced
//! from its last rule sets. Every change then reaches the engine as a [`Command`]: file events
//! (debounced), the periodic audit, rule sets stored by the client, decisions and acknowledgements.

use crate::client::{self, ClientConfig};
use crate::enforce::{Decision, EnforceConfig, Enforcer};
use crate::files::Paths;
use crate::snapshot::{Snapshot, keys};
use crate::watch::ManagedWatcher;
use anyhow::Context;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// How often the engine looks for project dirs added or removed by the CLI.
const WATCHED_CHECK: Duration = Duration::from_secs(1);

/// What the engine thread is asked to do.
#[derive(Debug)]
pub enum Command {
    /// A managed file changed (from the watcher).
    FileChanged(PathBuf),
    /// Re-read the rule sets and watched dirs and reconcile every file; answered when done.
    Sync(oneshot::Sender<Result<(), String>>),
    /// A change request was decided.
    Decision(Decision),
    /// A report was acknowledged.
    Ack {
        /// The report.
        report_id: String,
        /// The change request it opened.
        change_request: Option<String>,
    },
    /// Stop.
    Shutdown,
}

/// Settings of `run`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the snapshot lives.
    pub data_dir: PathBuf,
    /// The managed files.
    pub paths: Paths,
    /// How often every managed file is checked regardless of events.
    pub audit_interval: Duration,
    /// How long file events are collected before acting.
    pub debounce: Duration,
    /// Revert-loop detection.
    pub enforce: EnforceConfig,
}

/// Runs the daemon until `shutdown` completes.
///
/// # Errors
/// When the snapshot cannot be opened or the engine thread fails to start.
pub async fn run(config: DaemonConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let snapshot = Arc::new(
        Snapshot::open(&config.data_dir)
            .with_context(|| format!("opening the snapshot in {}", config.data_dir.display()))?,
    );
    // A rule set edited inside the snapshot is neither enforced nor announced (ADR 0018): verified
    // again before the engine reads any.
    for failure in snapshot
        .verify_held()
        .context("verifying the rule sets held")?
    {
        tracing::error!(
            team = failure.team,
            revision = failure.revision,
            detail = failure.detail,
            "a stored rule set does not verify; dropped until a gateway sends the signed one again"
        );
    }
    let outbox = Arc::new(Notify::new());
    let (tx, rx) = std::sync::mpsc::channel::<Command>();
    let enforcer = Enforcer::new(
        snapshot.clone(),
        config.paths.clone(),
        config.enforce,
        outbox.clone(),
    );
    let (ready_tx, ready_rx) = oneshot::channel();
    let engine_tx = tx.clone();
    let engine = std::thread::Builder::new()
        .name("edict-engine".into())
        .spawn(move || engine_loop(enforcer, rx, engine_tx, config, ready_tx))
        .context("starting the engine thread")?;
    // Enforcement from the snapshot is done before any network.
    let _ = ready_rx.await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let token = snapshot.identity(keys::TOKEN)?;
    let server = snapshot.identity(keys::SERVER)?;
    snapshot.set_identity(keys::DAEMON_PID, &std::process::id().to_string())?;
    let client_config = match (token, server) {
        (Some(token), Some(urls)) => Some(ClientConfig::new(
            urls.lines().map(str::to_owned).collect(),
            token,
        )),
        _ => None,
    };
    let hangups = tokio::spawn(on_hangup(
        tx.clone(),
        client_config.as_ref().map(|c| c.reconnect.clone()),
    ));
    // The token is renewed past half its life (ADR 0025); the client reconnects with the new one.
    let renewer = client_config.as_ref().map(|config| {
        tokio::spawn(crate::renew::run(
            snapshot.clone(),
            config.reconnect.clone(),
            stop_rx.clone(),
        ))
    });
    let client = match client_config {
        Some(config) => Some(tokio::spawn(client::run(
            config,
            snapshot.clone(),
            tx.clone(),
            outbox,
            stop_rx,
        ))),
        _ => {
            tracing::warn!("not logged in (`edict-agent login`): enforcing offline only");
            None
        }
    };
    shutdown.await;
    tracing::info!("shutting down");
    hangups.abort();
    snapshot.set_identity(keys::DAEMON_PID, "")?;
    let _ = stop_tx.send(true);
    if let Some(client) = client {
        let _ = client.await;
    }
    if let Some(renewer) = renewer {
        let _ = renewer.await;
    }
    let _ = tx.send(Command::Shutdown);
    let _ = tokio::task::spawn_blocking(move || engine.join()).await;
    snapshot.set_identity(keys::CONNECTED, "false")?;
    Ok(())
}

/// SIGHUP (`edict-agent sync`): reconcile every managed file and reconnect to the gateway now.
async fn on_hangup(engine: std::sync::mpsc::Sender<Command>, reconnect: Option<Arc<Notify>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: `edict-agent sync` will not work");
            return;
        };
        while hangup.recv().await.is_some() {
            tracing::info!("sync requested");
            let (reply, _) = oneshot::channel();
            let _ = engine.send(Command::Sync(reply));
            if let Some(reconnect) = &reconnect {
                reconnect.notify_one();
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (engine, reconnect);
    }
}

fn resync(enforcer: &mut Enforcer, watcher: &mut Option<ManagedWatcher>) -> Result<(), String> {
    let result = enforcer.sync_all().map_err(|e| e.to_string());
    if let Some(watcher) = watcher.as_mut() {
        match enforcer.targets() {
            Ok(targets) => {
                let files: Vec<PathBuf> = targets.into_iter().map(|t| t.path).collect();
                watcher.update(&files);
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the managed files"),
        }
    }
    if let Err(e) = &result {
        tracing::warn!(error = %e, "reconciling the managed files");
    }
    result
}

fn engine_loop(
    mut enforcer: Enforcer,
    rx: Receiver<Command>,
    tx: Sender<Command>,
    config: DaemonConfig,
    ready: oneshot::Sender<()>,
) {
    let mut watcher = match ManagedWatcher::new(move |path| {
        let _ = tx.send(Command::FileChanged(path));
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; relying on the periodic audit");
            None
        }
    };
    let _ = resync(&mut enforcer, &mut watcher);
    let _ = ready.send(());
    let mut next_audit = Instant::now() + config.audit_interval;
    let mut next_watched_check = Instant::now() + WATCHED_CHECK;
    let mut watched = enforcer.watched().unwrap_or_default();
    let mut deferred: VecDeque<Command> = VecDeque::new();
    loop {
        let wake = next_audit.min(next_watched_check);
        let command = match deferred.pop_front() {
            Some(c) => c,
            None => match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if now >= next_audit {
                        let _ = resync(&mut enforcer, &mut watcher);
                        next_audit = now + config.audit_interval;
                    } else {
                        // `edict-agent watch`/`unwatch` change the snapshot from another process.
                        let current = enforcer.watched().unwrap_or_default();
                        if current != watched {
                            watched = current;
                            let _ = resync(&mut enforcer, &mut watcher);
                        }
                    }
                    next_watched_check = Instant::now() + WATCHED_CHECK;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        match command {
            Command::FileChanged(path) => {
                // Debounce: an editor's save is several events; act once on the settled file.
                std::thread::sleep(config.debounce);
                let mut pending = BTreeSet::from([path]);
                while let Ok(more) = rx.try_recv() {
                    match more {
                        Command::FileChanged(p) => {
                            pending.insert(p);
                        }
                        other => deferred.push_back(other),
                    }
                }
                for path in pending {
                    match enforcer.check_file(&path) {
                        Ok(outcome) => tracing::debug!(file = %path.display(), ?outcome, "checked"),
                        Err(e) => tracing::warn!(error = %e, "checking a managed file"),
                    }
                }
            }
            Command::Sync(reply) => {
                let _ = reply.send(resync(&mut enforcer, &mut watcher));
            }
            Command::Decision(decision) => {
                if let Err(e) = enforcer.decide(&decision) {
                    tracing::warn!(error = %e, change_request = decision.change_request, "applying a decision");
                }
            }
            Command::Ack {
                report_id,
                change_request,
            } => {
                if let Err(e) = enforcer.acknowledged(&report_id, change_request) {
                    tracing::warn!(error = %e, report_id, "recording an acknowledgement");
                }
            }
            Command::Shutdown => break,
        }
    }
}
