//! The machine an agent test runs on: a temporary home, organization file and data directory
//! ([`Env`]), the real `edict-agent` binary run in them, a guard that kills a running agent however the
//! test ends ([`Agent`]), and bounded polls ([`eventually`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A temporary machine: a home, an organization file and a data directory of its own.
pub(crate) struct Env {
    dir: tempfile::TempDir,
    pub(crate) home: PathBuf,
    pub(crate) org_file: PathBuf,
    pub(crate) data_dir: PathBuf,
}

impl Env {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home)?;
        Ok(Env {
            org_file: dir.path().join("etc/claude-code/CLAUDE.md"),
            data_dir: dir.path().join("data"),
            home,
            dir,
        })
    }

    /// The directory every path of the machine is under.
    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `edict-agent`, run on this machine.
    pub(crate) fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edict-agent"));
        c.env("EDICT_AGENT_HOME", &self.home)
            .env("EDICT_AGENT_ORG_FILE", &self.org_file)
            .env("EDICT_AGENT_DATA_DIR", &self.data_dir)
            .env("EDICT_AGENT_LOG", "edict_agent=info");
        c
    }

    /// The team layer's file.
    pub(crate) fn team_file(&self) -> PathBuf {
        self.home.join(".claude/CLAUDE.md")
    }

    /// `edict-agent status --output json`.
    pub(crate) fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = self
            .command()
            .args(["status", "--output", "json"])
            .output()?;
        anyhow::ensure!(out.status.success(), "status failed: {out:?}");
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The reports the agent has not delivered yet, as `status` counts them.
    pub(crate) fn pending_reports(&self) -> anyhow::Result<u64> {
        let value = self.status()?;
        value["pending_reports"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no pending_reports in {value}"))
    }
}

/// Kills the agent when the test ends, however it ends.
pub(crate) struct Agent(pub(crate) Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `condition` every 25 ms until it holds or `timeout` passes.
pub(crate) async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The file's text; empty when it cannot be read.
pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
