//! `edict-agent doctor`: checks what the agent needs, each answered ok, warn or fail with a one-line
//! reason and a hint.
//!
//! - [`local`]: the data directory (`0700`, the user's) and the snapshot (opens, logged in); each managed
//!   file (the organization file, `~/.claude/CLAUDE.md`, each watched project's): a regular file or
//!   one to be created, not a link the agent refuses, the user's, not writable by the group or others,
//!   in a directory the agent can write (its atomic writes rename a temporary file there);
//! - [`remote`]: the server (`GET /health/ready` at the URL `login` stored, over TLS the agent trusts),
//!   the clock (the server's `Date` against the local time: 30 s off warns, 2 min fails, since tokens
//!   and signatures have lifetimes), each gateway (a WebSocket upgrade with the agent token), and the
//!   pinned organization key (the key sets a gateway sends at `hello` must lead from the pinned keys to
//!   the key the server signs with now: else every rule set would be refused).
//!
//! Nothing is written: the snapshot is opened only when it exists, and the connection to a gateway ends
//! after its greeting.

pub mod local;
pub mod remote;

use crate::files::Paths;
use crate::snapshot::Snapshot;
use serde::Serialize;
use std::path::PathBuf;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// The agent cannot do its job (or would refuse what it is sent).
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`server`, `gateway wss://…`, `file /…/CLAUDE.md`, …).
    pub name: String,
    /// How it came out.
    pub level: Level,
    /// Why, in one line.
    pub reason: String,
    /// What to do about it (empty when nothing).
    pub hint: String,
}

impl Check {
    /// An ok check.
    pub fn ok(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Check::new(name, Level::Ok, reason, "")
    }

    /// A warning, with what to do.
    pub fn warn(
        name: impl Into<String>,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Check::new(name, Level::Warn, reason, hint)
    }

    /// A failure, with what to do.
    pub fn fail(
        name: impl Into<String>,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Check::new(name, Level::Fail, reason, hint)
    }

    fn new(
        name: impl Into<String>,
        level: Level,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Check {
            name: name.into(),
            level,
            reason: reason.into(),
            hint: hint.into(),
        }
    }
}

/// What `doctor` looks at.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The organization and team files, and the home.
    pub paths: Paths,
}

/// Runs every check, in order: the data directory and snapshot, the managed files, the server and the
/// clock, the gateways, the organization key.
pub async fn run(config: &DoctorConfig) -> Vec<Check> {
    let mut checks = local::data_dir(&config.data_dir);
    let snapshot = if Snapshot::file_in(&config.data_dir).is_file() {
        match local::open(&config.data_dir).await {
            Ok(snapshot) => Some(snapshot),
            Err(check) => {
                checks.push(*check);
                None
            }
        }
    } else {
        None
    };
    let state = match &snapshot {
        Some(snapshot) => match local::State::read(snapshot) {
            Ok(state) => Some(state),
            Err(e) => {
                checks.push(Check::fail(
                    "snapshot",
                    format!("cannot be read: {e}"),
                    "log in again (`edict-agent login`) after moving the data directory aside",
                ));
                None
            }
        },
        None => None,
    };
    if let Some(state) = &state {
        checks.push(state.login_check());
    }
    let watched = state
        .as_ref()
        .map(|s| s.watched.clone())
        .unwrap_or_default();
    checks.extend(local::files(&config.paths, &watched));
    match &state {
        Some(state) => checks.extend(remote::checks(state).await),
        None => checks.push(Check::fail(
            "server",
            "not checked: this machine is not logged in",
            "run `edict-agent login --server URL` first",
        )),
    }
    checks
}
