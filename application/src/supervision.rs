//! What a process knows of its own health: the state of each role it runs (kept by the supervisor
//! that restarts them, read by readiness and `GET /api/v1/admin/projections`) and the probes of the
//! dependencies it needs besides the store (NATS), which [`crate::Edict::readiness`] runs.
//!
//! The registry is plain shared data behind a lock: the supervisor (infrastructure) writes a role's
//! state when it starts, fails or stops it; readers take a copy.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Where a role of this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleState {
    /// It runs.
    Running,
    /// It ended or failed and is started again after a pause (exponential, capped).
    Restarting {
        /// When the next start is due.
        retry_at: DateTime<Utc>,
    },
    /// It ended for good (the process is shutting down).
    Stopped,
}

impl RoleState {
    /// `running`, `restarting` or `stopped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RoleState::Running => "running",
            RoleState::Restarting { .. } => "restarting",
            RoleState::Stopped => "stopped",
        }
    }
}

/// One role's state, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleStatus {
    /// The role: `api`, `relay`, `gateway`, `audit`, `scheduler`, `projector:<projection>`.
    pub name: String,
    /// Where it is.
    pub state: RoleState,
    /// Since when it is in that state.
    pub since: DateTime<Utc>,
    /// How many times it was started again.
    pub restarts: u64,
    /// Why it last ended or failed, if it ever did.
    pub last_error: Option<String>,
}

/// The roles of this process and their states (cheap to clone: one shared map).
#[derive(Debug, Clone, Default)]
pub struct RoleRegistry {
    roles: Arc<Mutex<BTreeMap<String, RoleStatus>>>,
}

impl RoleRegistry {
    /// An empty registry (a process that runs no supervised role is ready as far as roles go).
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut RoleStatus)) {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still whole.
        let mut roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        let status = roles.entry(name.to_owned()).or_insert_with(|| RoleStatus {
            name: name.to_owned(),
            state: RoleState::Stopped,
            since: Utc::now(),
            restarts: 0,
            last_error: None,
        });
        change(status);
    }

    /// `name` runs (again, after a restart).
    pub fn running(&self, name: &str) {
        self.update(name, |status| {
            if matches!(status.state, RoleState::Restarting { .. }) {
                status.restarts += 1;
            }
            status.state = RoleState::Running;
            status.since = Utc::now();
        });
    }

    /// `name` ended or failed with `error`; it starts again at `retry_at`.
    pub fn restarting(&self, name: &str, error: &str, retry_at: DateTime<Utc>) {
        self.update(name, |status| {
            status.state = RoleState::Restarting { retry_at };
            status.since = Utc::now();
            status.last_error = Some(error.to_owned());
        });
    }

    /// `name` ended for good.
    pub fn stopped(&self, name: &str) {
        self.update(name, |status| {
            status.state = RoleState::Stopped;
            status.since = Utc::now();
        });
    }

    /// The state of `name`, if this process runs it.
    pub fn get(&self, name: &str) -> Option<RoleStatus> {
        let roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        roles.get(name).cloned()
    }

    /// Every role's state, by name.
    pub fn all(&self) -> Vec<RoleStatus> {
        let roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        roles.values().cloned().collect()
    }
}

/// A dependency readiness checks besides the store (NATS when configured).
#[async_trait]
pub trait Probe: Send + Sync {
    /// What it checks, as readiness names it (`nats`).
    fn name(&self) -> &str;

    /// Whether the dependency can be used now.
    ///
    /// # Errors
    /// Why it cannot, for the operator (a short sentence).
    async fn check(&self) -> Result<(), String>;
}

/// One check readiness made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked: `store`, `nats`, or `role:<name>`.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// What readiness found: every check, passed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Every check made, in order: the store, the probes, the roles.
    pub checks: Vec<Check>,
}

impl Readiness {
    /// Whether every check passed.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|check| check.failure.is_none())
    }

    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|check| check.failure.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_restarted_counts_its_restarts_and_keeps_its_last_error() {
        let registry = RoleRegistry::new();
        registry.running("projector:directory");
        registry.restarting("projector:directory", "stopped at 7", Utc::now());
        let status = registry.get("projector:directory").unwrap();
        assert_eq!(status.state.as_str(), "restarting");
        assert_eq!(status.last_error.as_deref(), Some("stopped at 7"));
        registry.running("projector:directory");
        let status = registry.get("projector:directory").unwrap();
        assert_eq!((status.state, status.restarts), (RoleState::Running, 1));
        assert_eq!(status.last_error.as_deref(), Some("stopped at 7"));
        registry.stopped("projector:directory");
        assert_eq!(registry.all().len(), 1);
        assert_eq!(registry.get("relay"), None);
    }
}
