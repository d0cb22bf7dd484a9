//! What happened to an agent. Event payloads are a public, versioned contract: variants are never renamed
//! or deleted, new fields come with defaults, and each variant has a golden JSON test below.

use super::value::{EnforcementKind, MachineId, MachineName};
use crate::change_request::{FilePath, ReportId};
use crate::value::{Layer, Reason, Sha256Hex};
use crate::{AgentId, RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An event of the [`Agent`](super::Agent) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// A machine of a user was enrolled.
    AgentEnrolled {
        /// The agent.
        agent_id: AgentId,
        /// The user it acts for (and who enrolled it).
        user: UserId,
        /// The machine's stable id.
        machine_id: MachineId,
        /// The machine's name.
        machine_name: MachineName,
        /// When.
        at: DateTime<Utc>,
    },
    /// The agent was revoked.
    AgentRevoked {
        /// The agent.
        agent_id: AgentId,
        /// Who revoked it.
        by: UserId,
        /// Why, if given.
        reason: Option<Reason>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The agent reported an enforcement action (a block reverted, a warning kept, a revert loop), so
    /// the audit history shows it.
    EnforcementReported {
        /// The agent.
        agent_id: AgentId,
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
    /// The agent refused a rule set it could not trust and kept enforcing its last good one (ADR
    /// 0018): someone between the publisher and the machine changed or forged a rule set, or the
    /// machine's snapshot was edited.
    IntegrityFailureReported {
        /// The agent.
        agent_id: AgentId,
        /// The team the rule set was sent as (as the agent names it).
        team: String,
        /// The revision it claimed.
        revision: u64,
        /// A stable code (`unsigned`, `unknown_key`, `bad_signature`, `hash_mismatch`,
        /// `misaddressed`, `no_pinned_key`, `tampered_snapshot`).
        reason: String,
        /// For a human.
        detail: String,
        /// When the server received the report.
        at: DateTime<Utc>,
    },
}

domain_event! {
    AgentEvent:
    AgentEnrolled AgentRevoked EnforcementReported IntegrityFailureReported
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{assert_golden, golden_time, uuid};

    const AGENT: AgentId = AgentId(uuid(4));
    const DEV: UserId = UserId(uuid(0xd));
    const ADMIN: UserId = UserId(uuid(0xa));

    #[test]
    fn agent_enrolled_has_a_stable_json_shape() {
        let event = AgentEvent::AgentEnrolled {
            agent_id: AGENT,
            user: DEV,
            machine_id: MachineId::parse("4c4c4544-0042").unwrap(),
            machine_name: MachineName::parse("dev-laptop").unwrap(),
            at: golden_time(),
        };
        let json = r#"{"AgentEnrolled":{"agent_id":"00000000-0000-0000-0000-000000000004","user":"00000000-0000-0000-0000-00000000000d","machine_id":"4c4c4544-0042","machine_name":"dev-laptop","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "AgentEnrolled", json);
    }

    #[test]
    fn agent_revoked_has_a_stable_json_shape() {
        let event = AgentEvent::AgentRevoked {
            agent_id: AGENT,
            by: ADMIN,
            reason: Some(Reason::parse("laptop lost").unwrap()),
            at: golden_time(),
        };
        let json = r#"{"AgentRevoked":{"agent_id":"00000000-0000-0000-0000-000000000004","by":"00000000-0000-0000-0000-00000000000a","reason":"laptop lost","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "AgentRevoked", json);
    }

    #[test]
    fn an_agent_revoked_without_a_reason_has_a_null_reason() {
        let event = AgentEvent::AgentRevoked {
            agent_id: AGENT,
            by: DEV,
            reason: None,
            at: golden_time(),
        };
        let json = r#"{"AgentRevoked":{"agent_id":"00000000-0000-0000-0000-000000000004","by":"00000000-0000-0000-0000-00000000000d","reason":null,"at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "AgentRevoked", json);
    }

    #[test]
    fn enforcement_reported_has_a_stable_json_shape() {
        let event = AgentEvent::EnforcementReported {
            agent_id: AGENT,
            report_id: ReportId::parse("r-1").unwrap(),
            kind: EnforcementKind::BlockReverted,
            team: TeamId(uuid(7)),
            rule: RuleId(uuid(1)),
            file: FilePath::parse("/home/dev/.claude/CLAUDE.md").unwrap(),
            layer: Layer::Team,
            original_hash: Sha256Hex::parse("original_hash", &"a".repeat(64)).unwrap(),
            new_hash: Sha256Hex::parse("new_hash", &"b".repeat(64)).unwrap(),
            at: golden_time(),
        };
        let json = format!(
            r#"{{"EnforcementReported":{{"agent_id":"00000000-0000-0000-0000-000000000004","report_id":"r-1","kind":"block_reverted","team":"00000000-0000-0000-0000-000000000007","rule":"00000000-0000-0000-0000-000000000001","file":"/home/dev/.claude/CLAUDE.md","layer":"team","original_hash":"{}","new_hash":"{}","at":"2026-01-02T03:04:05Z"}}}}"#,
            "a".repeat(64),
            "b".repeat(64)
        );
        assert_golden(&event, "EnforcementReported", &json);
    }

    #[test]
    fn integrity_failure_reported_has_a_stable_json_shape() {
        let event = AgentEvent::IntegrityFailureReported {
            agent_id: AGENT,
            team: "00000000-0000-0000-0000-000000000007".into(),
            revision: 3,
            reason: "unsigned".into(),
            detail: "the rule set is not signed".into(),
            at: golden_time(),
        };
        let json = r#"{"IntegrityFailureReported":{"agent_id":"00000000-0000-0000-0000-000000000004","team":"00000000-0000-0000-0000-000000000007","revision":3,"reason":"unsigned","detail":"the rule set is not signed","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "IntegrityFailureReported", json);
    }
}
