//! What can be asked of an agent.

use super::value::{EnforcementKind, MachineId, MachineName};
use crate::change_request::{FilePath, ReportId};
use crate::value::{Layer, Reason, Sha256Hex};
use crate::{AgentId, RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};

/// A command on the [`Agent`](super::Agent) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr)]
pub enum AgentCommand {
    /// Enrolls a machine of a user, who is also the actor (they consented in the device flow).
    EnrollAgent {
        /// The new agent's id, chosen by the caller.
        agent_id: AgentId,
        /// The user the agent acts for.
        user: UserId,
        /// The machine's stable id.
        machine_id: MachineId,
        /// The machine's name.
        machine_name: MachineName,
        /// When.
        at: DateTime<Utc>,
    },
    /// Revokes the agent: its token stops working and it receives no more rule sets.
    RevokeAgent {
        /// Who revokes it (its user or an admin).
        by: UserId,
        /// Why, if a reason is given.
        reason: Option<Reason>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Records an enforcement action the agent reported, once per report id: a report id the agent
    /// recorded already (among its last [`Agent::REMEMBERED_REPORTS`](super::Agent::REMEMBERED_REPORTS))
    /// records nothing.
    RecordEnforcement {
        /// The agent's id of the report.
        report_id: ReportId,
        /// What the agent did.
        kind: EnforcementKind,
        /// The team whose rule set the section belongs to.
        team: TeamId,
        /// The rule whose section changed.
        rule: RuleId,
        /// The file.
        file: FilePath,
        /// The section's layer.
        layer: Layer,
        /// The hash of the section as Edict wrote it.
        original_hash: Sha256Hex,
        /// The hash of the section as the agent found it.
        new_hash: Sha256Hex,
        /// When the server received the report.
        at: DateTime<Utc>,
    },
    /// Records that the agent refused a rule set it could not trust (ADR 0018): unsigned, signed by a
    /// key it has not pinned, a signature that does not match, signed for another team, or edited in
    /// its snapshot.
    RecordIntegrityFailure {
        /// The team the rule set was sent as (as the agent names it).
        team: String,
        /// The revision it claimed.
        revision: u64,
        /// A stable code (`unsigned`, `unknown_key`, `bad_signature`, …).
        reason: String,
        /// For a human.
        detail: String,
        /// When the server received the report.
        at: DateTime<Utc>,
    },
}
