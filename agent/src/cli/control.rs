//! Talking to the running daemon: `sync` (SIGHUP, then wait until it is connected again), and the
//! signals that stop `run`.

use super::Format;
use crate::files::Paths;
use crate::snapshot::{Snapshot, keys};
use anyhow::{Context, bail};
use std::path::Path;
use std::time::Duration;

/// Signals the running daemon (SIGHUP), then waits for it to be connected again.
pub(super) async fn sync(
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
            return super::status::status(&snapshot, paths, format);
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

/// SIGTERM or Ctrl-C. The SIGTERM handler is installed by this call, not when the future is first
/// polled: the daemon polls it only after its start-up sync, and a SIGTERM before that would kill the
/// process instead of stopping it.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
