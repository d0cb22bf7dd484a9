//! The Agent aggregate (supporting): one enrolled machine of one user, until it is revoked.
//!
//! Layout: `command.rs`, `event.rs` (with golden JSON tests), `error.rs`, `value.rs` (machine id and
//! name), `tests.rs`. This file holds the state, `decide` and `apply`.

mod command;
mod error;
mod event;
mod value;

#[cfg(test)]
mod tests;

pub use command::AgentCommand;
pub use error::AgentError;
pub use event::AgentEvent;
pub use value::{EnforcementKind, MachineId, MachineName};

use crate::change_request::ReportId;
use crate::{AgentId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// An enrolled agent. `Default` is an agent that does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    id: Option<AgentId>,
    user: Option<UserId>,
    machine_id: Option<MachineId>,
    machine_name: Option<MachineName>,
    enrolled_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    /// The ids of the last enforcement reports recorded, oldest first (at most
    /// [`Agent::REMEMBERED_REPORTS`]), so a report delivered again records nothing.
    #[serde(default)]
    reported: VecDeque<ReportId>,
    /// How many untrusted rule sets the agent refused (ADR 0018).
    #[serde(default)]
    integrity_failures: u64,
    /// The last one: reason, team, revision, when.
    #[serde(default)]
    last_integrity_failure: Option<IntegrityFailure>,
    version: u64,
}

/// An untrusted rule set an agent refused, as it reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityFailure {
    /// The team the rule set was sent as.
    pub team: String,
    /// The revision it claimed.
    pub revision: u64,
    /// A stable code.
    pub reason: String,
    /// For a human.
    pub detail: String,
    /// When the server received the report.
    pub at: DateTime<Utc>,
}

impl Agent {
    /// The agent's id; `None` while it does not exist.
    pub fn id(&self) -> Option<AgentId> {
        self.id
    }

    /// Whether the agent exists (revoked agents exist).
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The user it acts for.
    pub fn user(&self) -> Option<UserId> {
        self.user
    }

    /// The machine's stable id.
    pub fn machine_id(&self) -> Option<&MachineId> {
        self.machine_id.as_ref()
    }

    /// The machine's name.
    pub fn machine_name(&self) -> Option<&MachineName> {
        self.machine_name.as_ref()
    }

    /// When it was enrolled.
    pub fn enrolled_at(&self) -> Option<DateTime<Utc>> {
        self.enrolled_at
    }

    /// Whether it is revoked.
    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// When it was revoked.
    pub fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.revoked_at
    }

    /// How many untrusted rule sets the agent reported refusing.
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures
    }

    /// The last untrusted rule set the agent reported refusing.
    pub fn last_integrity_failure(&self) -> Option<&IntegrityFailure> {
        self.last_integrity_failure.as_ref()
    }

    /// How many enforcement report ids the agent remembers: a report redelivered after that many newer
    /// ones would be recorded again (agents redeliver within minutes, not after thousands of reports).
    pub const REMEMBERED_REPORTS: usize = 10_000;

    /// Whether the enforcement report `report_id` was recorded (among the last remembered ones).
    pub fn has_recorded(&self, report_id: &ReportId) -> bool {
        self.reported.contains(report_id)
    }

    /// Decides which event `command` produces (none for a report recorded already), without changing
    /// anything.
    fn decide(&self, command: AgentCommand) -> Result<Option<AgentEvent>, AgentError> {
        match command {
            AgentCommand::RecordEnforcement {
                report_id,
                kind,
                team,
                rule,
                file,
                layer,
                original_hash,
                new_hash,
                at,
            } => {
                let agent_id = self.id.ok_or(AgentError::NotFound)?;
                if self.revoked() {
                    return Err(AgentError::Revoked);
                }
                if self.has_recorded(&report_id) {
                    return Ok(None);
                }
                Ok(Some(AgentEvent::EnforcementReported {
                    agent_id,
                    report_id,
                    kind,
                    team,
                    rule,
                    file,
                    layer,
                    original_hash,
                    new_hash,
                    at,
                }))
            }
            AgentCommand::RecordIntegrityFailure {
                team,
                revision,
                reason,
                detail,
                at,
            } => {
                let agent_id = self.id.ok_or(AgentError::NotFound)?;
                if self.revoked() {
                    return Err(AgentError::Revoked);
                }
                Ok(Some(AgentEvent::IntegrityFailureReported {
                    agent_id,
                    team,
                    revision,
                    reason,
                    detail,
                    at,
                }))
            }
            AgentCommand::EnrollAgent {
                agent_id,
                user,
                machine_id,
                machine_name,
                at,
            } => {
                if self.exists() {
                    return Err(AgentError::AlreadyExists);
                }
                Ok(Some(AgentEvent::AgentEnrolled {
                    agent_id,
                    user,
                    machine_id,
                    machine_name,
                    at,
                }))
            }
            AgentCommand::RevokeAgent { by, reason, at } => {
                let agent_id = self.id.ok_or(AgentError::NotFound)?;
                if self.revoked() {
                    return Err(AgentError::Revoked);
                }
                Ok(Some(AgentEvent::AgentRevoked {
                    agent_id,
                    by,
                    reason,
                    at,
                }))
            }
        }
    }
}

aggregate!(
    Agent,
    AgentCommand,
    AgentEvent,
    AgentError,
    Option::into_iter
);

impl Agent {
    fn evolve(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::AgentEnrolled {
                agent_id,
                user,
                machine_id,
                machine_name,
                at,
            } => {
                self.id = Some(agent_id);
                self.user = Some(user);
                self.machine_id = Some(machine_id);
                self.machine_name = Some(machine_name);
                self.enrolled_at = Some(at);
            }
            AgentEvent::AgentRevoked { at, .. } => {
                self.revoked_at = Some(at);
            }
            AgentEvent::EnforcementReported { report_id, .. } => {
                if self.reported.len() >= Self::REMEMBERED_REPORTS {
                    self.reported.pop_front();
                }
                self.reported.push_back(report_id);
            }
            AgentEvent::IntegrityFailureReported {
                team,
                revision,
                reason,
                detail,
                at,
                ..
            } => {
                self.integrity_failures += 1;
                self.last_integrity_failure = Some(IntegrityFailure {
                    team,
                    revision,
                    reason,
                    detail,
                    at,
                });
            }
        }
    }
}
