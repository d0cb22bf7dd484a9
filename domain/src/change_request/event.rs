//! What happened to a change request. Event payloads are a public, versioned contract: variants are
//! never renamed or deleted, new fields come with defaults, and each variant has a golden JSON test below.

use super::value::{Diff, ExceptionKind, FilePath, ReportId};
use crate::value::{Layer, Reason, Sha256Hex};
use crate::{AgentId, ChangeRequestId, ExceptionId, RuleId, TeamId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An event of the [`ChangeRequest`](super::ChangeRequest) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeRequestEvent {
    /// A change request was opened from an agent's report.
    ChangeRequestOpened {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The reporting agent.
        agent: AgentId,
        /// The developer who made the change.
        user: UserId,
        /// The team.
        team: TeamId,
        /// The rule whose text was edited.
        rule: RuleId,
        /// The edited file.
        file: FilePath,
        /// The layer of the edited section.
        layer: Layer,
        /// The hash of the section as Edict wrote it.
        original_hash: Sha256Hex,
        /// The hash as edited.
        new_hash: Sha256Hex,
        /// The edit.
        diff: Diff,
        /// When it is reverted if nobody decides.
        timeout_at: DateTime<Utc>,
        /// The agent's report id.
        report_id: ReportId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A newer edit of the same section replaced the reported one.
    ChangeRequestAmended {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The reporting agent.
        agent: AgentId,
        /// The hash as now edited.
        new_hash: Sha256Hex,
        /// The whole edit.
        diff: Diff,
        /// The agent's report id.
        report_id: ReportId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A team admin kept the change.
    ChangeApproved {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The team admin.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A team admin rejected the change: the agent restores the original section.
    ChangeRejected {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The team admin.
        by: UserId,
        /// Why.
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
    /// Nobody decided in time: the agent restores the original section.
    ChangeAutoReverted {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The timeout that passed.
        timeout_at: DateTime<Utc>,
        /// When the revert was decided.
        at: DateTime<Utc>,
    },
    /// The developer asked to keep the rejected or reverted change.
    ExceptionRequested {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The exception.
        exception_id: ExceptionId,
        /// The developer.
        by: UserId,
        /// Why.
        justification: Reason,
        /// What was asked for.
        kind: ExceptionKind,
        /// When.
        at: DateTime<Utc>,
    },
    /// A team admin granted the exception: the change may stand.
    ExceptionGranted {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The exception.
        exception_id: ExceptionId,
        /// The team admin.
        by: UserId,
        /// When the exception ends; `None` for a permanent one.
        until: Option<DateTime<Utc>>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A team admin refused the exception.
    ExceptionDenied {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The exception.
        exception_id: ExceptionId,
        /// The team admin.
        by: UserId,
        /// Why.
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
    /// The developer withdrew the change request before it was decided.
    ChangeRequestWithdrawn {
        /// The change request.
        change_request_id: ChangeRequestId,
        /// The developer.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

domain_event! {
    ChangeRequestEvent:
    ChangeRequestOpened ChangeRequestAmended ChangeApproved ChangeRejected ChangeAutoReverted
    ExceptionRequested ExceptionGranted ExceptionDenied ChangeRequestWithdrawn
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{assert_golden, golden_time, uuid};
    use chrono::TimeDelta;

    const CR: ChangeRequestId = ChangeRequestId(uuid(3));
    const AGENT: AgentId = AgentId(uuid(4));
    const TEAM: TeamId = TeamId(uuid(2));
    const RULE: RuleId = RuleId(uuid(1));
    const EXCEPTION: ExceptionId = ExceptionId(uuid(5));
    const DEV: UserId = UserId(uuid(0xd));
    const ADMIN: UserId = UserId(uuid(0xa));

    fn hash(c: char) -> Sha256Hex {
        Sha256Hex::parse("hash", &c.to_string().repeat(64)).unwrap()
    }

    fn in_a_day() -> DateTime<Utc> {
        golden_time() + TimeDelta::days(1)
    }

    #[test]
    fn change_request_opened_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ChangeRequestOpened {
            change_request_id: CR,
            agent: AGENT,
            user: DEV,
            team: TEAM,
            rule: RULE,
            file: FilePath::parse("/home/dev/.claude/CLAUDE.md").unwrap(),
            layer: Layer::Team,
            original_hash: hash('a'),
            new_hash: hash('b'),
            diff: Diff::parse("-old\n+new\n").unwrap(),
            timeout_at: in_a_day(),
            report_id: ReportId::parse("report-1").unwrap(),
            at: golden_time(),
        };
        let json = r#"{"ChangeRequestOpened":{"change_request_id":"00000000-0000-0000-0000-000000000003","agent":"00000000-0000-0000-0000-000000000004","user":"00000000-0000-0000-0000-00000000000d","team":"00000000-0000-0000-0000-000000000002","rule":"00000000-0000-0000-0000-000000000001","file":"/home/dev/.claude/CLAUDE.md","layer":"team","original_hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","new_hash":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","diff":"-old\n+new\n","timeout_at":"2026-01-03T03:04:05Z","report_id":"report-1","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ChangeRequestOpened", json);
    }

    #[test]
    fn change_request_amended_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ChangeRequestAmended {
            change_request_id: CR,
            agent: AGENT,
            new_hash: hash('c'),
            diff: Diff::parse("-old\n+newer\n").unwrap(),
            report_id: ReportId::parse("report-2").unwrap(),
            at: golden_time(),
        };
        let json = r#"{"ChangeRequestAmended":{"change_request_id":"00000000-0000-0000-0000-000000000003","agent":"00000000-0000-0000-0000-000000000004","new_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","diff":"-old\n+newer\n","report_id":"report-2","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ChangeRequestAmended", json);
    }

    #[test]
    fn change_approved_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ChangeApproved {
            change_request_id: CR,
            by: ADMIN,
            at: golden_time(),
        };
        let json = r#"{"ChangeApproved":{"change_request_id":"00000000-0000-0000-0000-000000000003","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ChangeApproved", json);
    }

    #[test]
    fn change_rejected_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ChangeRejected {
            change_request_id: CR,
            by: ADMIN,
            reason: Reason::parse("breaks the security rule").unwrap(),
            at: golden_time(),
        };
        let json = r#"{"ChangeRejected":{"change_request_id":"00000000-0000-0000-0000-000000000003","by":"00000000-0000-0000-0000-00000000000a","reason":"breaks the security rule","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ChangeRejected", json);
    }

    #[test]
    fn change_auto_reverted_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ChangeAutoReverted {
            change_request_id: CR,
            timeout_at: golden_time(),
            at: in_a_day(),
        };
        let json = r#"{"ChangeAutoReverted":{"change_request_id":"00000000-0000-0000-0000-000000000003","timeout_at":"2026-01-02T03:04:05Z","at":"2026-01-03T03:04:05Z"}}"#;
        assert_golden(&event, "ChangeAutoReverted", json);
    }

    #[test]
    fn exception_requested_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ExceptionRequested {
            change_request_id: CR,
            exception_id: EXCEPTION,
            by: DEV,
            justification: Reason::parse("needed for the release").unwrap(),
            kind: ExceptionKind::TimeLimited { until: in_a_day() },
            at: golden_time(),
        };
        let json = r#"{"ExceptionRequested":{"change_request_id":"00000000-0000-0000-0000-000000000003","exception_id":"00000000-0000-0000-0000-000000000005","by":"00000000-0000-0000-0000-00000000000d","justification":"needed for the release","kind":{"type":"time_limited","until":"2026-01-03T03:04:05Z"},"at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ExceptionRequested", json);
    }

    #[test]
    fn exception_granted_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ExceptionGranted {
            change_request_id: CR,
            exception_id: EXCEPTION,
            by: ADMIN,
            until: Some(in_a_day()),
            at: golden_time(),
        };
        let json = r#"{"ExceptionGranted":{"change_request_id":"00000000-0000-0000-0000-000000000003","exception_id":"00000000-0000-0000-0000-000000000005","by":"00000000-0000-0000-0000-00000000000a","until":"2026-01-03T03:04:05Z","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ExceptionGranted", json);
    }

    #[test]
    fn a_permanent_exception_grant_has_a_null_until() {
        let event = ChangeRequestEvent::ExceptionGranted {
            change_request_id: CR,
            exception_id: EXCEPTION,
            by: ADMIN,
            until: None,
            at: golden_time(),
        };
        let json = r#"{"ExceptionGranted":{"change_request_id":"00000000-0000-0000-0000-000000000003","exception_id":"00000000-0000-0000-0000-000000000005","by":"00000000-0000-0000-0000-00000000000a","until":null,"at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ExceptionGranted", json);
    }

    #[test]
    fn exception_denied_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ExceptionDenied {
            change_request_id: CR,
            exception_id: EXCEPTION,
            by: ADMIN,
            reason: Reason::parse("not justified").unwrap(),
            at: golden_time(),
        };
        let json = r#"{"ExceptionDenied":{"change_request_id":"00000000-0000-0000-0000-000000000003","exception_id":"00000000-0000-0000-0000-000000000005","by":"00000000-0000-0000-0000-00000000000a","reason":"not justified","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ExceptionDenied", json);
    }

    #[test]
    fn change_request_withdrawn_has_a_stable_json_shape() {
        let event = ChangeRequestEvent::ChangeRequestWithdrawn {
            change_request_id: CR,
            by: DEV,
            at: golden_time(),
        };
        let json = r#"{"ChangeRequestWithdrawn":{"change_request_id":"00000000-0000-0000-0000-000000000003","by":"00000000-0000-0000-0000-00000000000d","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "ChangeRequestWithdrawn", json);
    }
}
