//! Given/when/then tests of the Agent aggregate.

use super::*;
use crate::testkit::*;
use crate::value::Reason;
use uuid::Uuid;

const AGENT: AgentId = AgentId(Uuid::from_u128(0x4));
const DEV: UserId = UserId(Uuid::from_u128(0xd));
const ADMIN: UserId = UserId(Uuid::from_u128(0xa));

fn enroll() -> AgentCommand {
    AgentCommand::EnrollAgent {
        agent_id: AGENT,
        user: DEV,
        machine_id: MachineId::parse("4c4c4544-0042").unwrap(),
        machine_name: MachineName::parse("dev-laptop").unwrap(),
        at: at(0),
    }
}

fn enrolled() -> AgentEvent {
    AgentEvent::AgentEnrolled {
        agent_id: AGENT,
        user: DEV,
        machine_id: MachineId::parse("4c4c4544-0042").unwrap(),
        machine_name: MachineName::parse("dev-laptop").unwrap(),
        at: at(0),
    }
}

fn revoke() -> AgentCommand {
    AgentCommand::RevokeAgent {
        by: ADMIN,
        reason: Some(Reason::parse("laptop lost").unwrap()),
        at: at(5),
    }
}

fn revoked() -> AgentEvent {
    AgentEvent::AgentRevoked {
        agent_id: AGENT,
        by: ADMIN,
        reason: Some(Reason::parse("laptop lost").unwrap()),
        at: at(5),
    }
}

#[tokio::test]
async fn a_machine_can_be_enrolled() {
    when(vec![], enroll())
        .await
        .then_expect_events(vec![enrolled()]);
}

#[tokio::test]
async fn enrolling_an_agent_that_exists_fails_with_already_exists() {
    when(vec![enrolled()], enroll())
        .await
        .then_expect_error(AgentError::AlreadyExists);
}

#[tokio::test]
async fn revoking_a_missing_agent_fails_with_not_found() {
    when(vec![], revoke())
        .await
        .then_expect_error(AgentError::NotFound);
}

#[tokio::test]
async fn an_agent_can_be_revoked_with_a_reason() {
    when(vec![enrolled()], revoke())
        .await
        .then_expect_events(vec![revoked()]);
}

#[tokio::test]
async fn an_agent_can_be_revoked_without_a_reason() {
    when(
        vec![enrolled()],
        AgentCommand::RevokeAgent {
            by: DEV,
            reason: None,
            at: at(5),
        },
    )
    .await
    .then_expect_events(vec![AgentEvent::AgentRevoked {
        agent_id: AGENT,
        by: DEV,
        reason: None,
        at: at(5),
    }]);
}

#[tokio::test]
async fn a_revoked_agent_cannot_be_revoked_again() {
    when(vec![enrolled(), revoked()], revoke())
        .await
        .then_expect_error(AgentError::Revoked);
}

#[test]
fn the_state_knows_the_user_machine_and_revocation() {
    let mut agent = Agent::default();
    assert_eq!(agent.version(), 0);
    agent.apply(enrolled());
    assert_eq!(agent.id(), Some(AGENT));
    assert_eq!(agent.user(), Some(DEV));
    assert_eq!(
        agent.machine_id().map(MachineId::as_str),
        Some("4c4c4544-0042")
    );
    assert_eq!(
        agent.machine_name().map(MachineName::as_str),
        Some("dev-laptop")
    );
    assert_eq!(agent.enrolled_at(), Some(at(0)));
    assert!(!agent.revoked());
    agent.apply(revoked());
    assert!(agent.revoked());
    assert_eq!(agent.revoked_at(), Some(at(5)));
    assert_eq!(agent.version(), 2);
}

#[test]
fn agent_state_round_trips_through_json() {
    let mut agent = Agent::default();
    agent.apply(enrolled());
    agent.apply(revoked());
    let json = serde_json::to_string(&agent).unwrap();
    let back: Agent = serde_json::from_str(&json).unwrap();
    assert_eq!(back, agent);
}

fn record(report: &str) -> AgentCommand {
    AgentCommand::RecordEnforcement {
        report_id: crate::change_request::ReportId::parse(report).unwrap(),
        kind: EnforcementKind::BlockReverted,
        team: crate::TeamId(Uuid::from_u128(0x7)),
        rule: crate::RuleId(Uuid::from_u128(0x1)),
        file: crate::change_request::FilePath::parse("/home/dev/.claude/CLAUDE.md").unwrap(),
        layer: crate::value::Layer::Team,
        original_hash: crate::value::Sha256Hex::parse("original_hash", &"a".repeat(64)).unwrap(),
        new_hash: crate::value::Sha256Hex::parse("new_hash", &"b".repeat(64)).unwrap(),
        at: at(7),
    }
}

fn recorded(report: &str) -> AgentEvent {
    AgentEvent::EnforcementReported {
        agent_id: AGENT,
        report_id: crate::change_request::ReportId::parse(report).unwrap(),
        kind: EnforcementKind::BlockReverted,
        team: crate::TeamId(Uuid::from_u128(0x7)),
        rule: crate::RuleId(Uuid::from_u128(0x1)),
        file: crate::change_request::FilePath::parse("/home/dev/.claude/CLAUDE.md").unwrap(),
        layer: crate::value::Layer::Team,
        original_hash: crate::value::Sha256Hex::parse("original_hash", &"a".repeat(64)).unwrap(),
        new_hash: crate::value::Sha256Hex::parse("new_hash", &"b".repeat(64)).unwrap(),
        at: at(7),
    }
}

#[tokio::test]
async fn an_enrolled_agent_records_an_enforcement_report() {
    when(vec![enrolled()], record("r-1"))
        .await
        .then_expect_events(vec![recorded("r-1")]);
}

#[tokio::test]
async fn a_report_recorded_already_records_nothing() {
    when(vec![enrolled(), recorded("r-1")], record("r-1"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_missing_agent_cannot_record_a_report() {
    when(vec![], record("r-1"))
        .await
        .then_expect_error(AgentError::NotFound);
}

#[tokio::test]
async fn a_revoked_agent_cannot_record_a_report() {
    when(vec![enrolled(), revoked()], record("r-1"))
        .await
        .then_expect_error(AgentError::Revoked);
}

#[test]
fn the_agent_remembers_only_the_last_report_ids() {
    let mut agent = Agent::default();
    agent.apply(enrolled());
    for n in 0..=Agent::REMEMBERED_REPORTS {
        agent.apply(recorded(&format!("r-{n}")));
    }
    let first = crate::change_request::ReportId::parse("r-0").unwrap();
    let last = crate::change_request::ReportId::parse(&format!("r-{}", Agent::REMEMBERED_REPORTS))
        .unwrap();
    assert!(!agent.has_recorded(&first));
    assert!(agent.has_recorded(&last));
}
