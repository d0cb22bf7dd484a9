//! Given/when/then tests of the ChangeRequest aggregate.

use super::*;
use crate::ExceptionId;
use crate::testkit::*;
use uuid::Uuid;

const CR: ChangeRequestId = ChangeRequestId(Uuid::from_u128(0x3));
const AGENT: AgentId = AgentId(Uuid::from_u128(0x4));
const OTHER_AGENT: AgentId = AgentId(Uuid::from_u128(0x44));
const TEAM: TeamId = TeamId(Uuid::from_u128(0x2));
const RULE: RuleId = RuleId(Uuid::from_u128(0x1));
const EXCEPTION: ExceptionId = ExceptionId(Uuid::from_u128(0x5));
const SECOND_EXCEPTION: ExceptionId = ExceptionId(Uuid::from_u128(0x55));
/// The developer who made the change.
const DEV: UserId = UserId(Uuid::from_u128(0xd));
/// A team admin.
const ADMIN: UserId = UserId(Uuid::from_u128(0xa));

fn hash(c: char) -> Sha256Hex {
    Sha256Hex::parse("hash", &c.to_string().repeat(64)).unwrap()
}

fn report(id: &str) -> ReportId {
    ReportId::parse(id).unwrap()
}

fn open_command(timeout_at: DateTime<Utc>) -> ChangeRequestCommand {
    ChangeRequestCommand::OpenChangeRequest {
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
        timeout_at,
        report_id: report("r1"),
        at: at(0),
    }
}

fn opened() -> ChangeRequestEvent {
    ChangeRequestEvent::ChangeRequestOpened {
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
        timeout_at: at(60),
        report_id: report("r1"),
        at: at(0),
    }
}

fn approved() -> ChangeRequestEvent {
    ChangeRequestEvent::ChangeApproved {
        change_request_id: CR,
        by: ADMIN,
        at: at(10),
    }
}

fn rejected() -> ChangeRequestEvent {
    ChangeRequestEvent::ChangeRejected {
        change_request_id: CR,
        by: ADMIN,
        reason: reason("breaks the rule"),
        at: at(10),
    }
}

fn auto_reverted() -> ChangeRequestEvent {
    ChangeRequestEvent::ChangeAutoReverted {
        change_request_id: CR,
        timeout_at: at(60),
        at: at(61),
    }
}

fn exception_requested(id: ExceptionId, kind: ExceptionKind) -> ChangeRequestEvent {
    ChangeRequestEvent::ExceptionRequested {
        change_request_id: CR,
        exception_id: id,
        by: DEV,
        justification: reason("needed for the release"),
        kind,
        at: at(70),
    }
}

fn exception_granted(until: Option<DateTime<Utc>>) -> ChangeRequestEvent {
    ChangeRequestEvent::ExceptionGranted {
        change_request_id: CR,
        exception_id: EXCEPTION,
        by: ADMIN,
        until,
        at: at(80),
    }
}

fn exception_denied() -> ChangeRequestEvent {
    ChangeRequestEvent::ExceptionDenied {
        change_request_id: CR,
        exception_id: EXCEPTION,
        by: ADMIN,
        reason: reason("not justified"),
        at: at(80),
    }
}

fn withdrawn() -> ChangeRequestEvent {
    ChangeRequestEvent::ChangeRequestWithdrawn {
        change_request_id: CR,
        by: DEV,
        at: at(5),
    }
}

/// Rejected, then an exception requested.
fn exception_pending() -> Vec<ChangeRequestEvent> {
    vec![
        opened(),
        rejected(),
        exception_requested(EXCEPTION, ExceptionKind::Permanent),
    ]
}

fn request_exception(by: UserId, kind: ExceptionKind, at: DateTime<Utc>) -> ChangeRequestCommand {
    ChangeRequestCommand::RequestException {
        exception_id: SECOND_EXCEPTION,
        by,
        justification: reason("needed for the release"),
        kind,
        at,
    }
}

fn amend(by: AgentId, report_id: &str) -> ChangeRequestCommand {
    ChangeRequestCommand::AmendChangeRequest {
        by,
        new_hash: hash('c'),
        diff: Diff::parse("-old\n+newer\n").unwrap(),
        report_id: report(report_id),
        at: at(5),
    }
}

// ---- opening ----

#[tokio::test]
async fn an_agent_report_opens_a_pending_change_request() {
    when(vec![], open_command(at(60)))
        .await
        .then_expect_events(vec![opened()]);
}

#[tokio::test]
async fn opening_a_change_request_that_exists_fails_with_already_exists() {
    when(vec![opened()], open_command(at(60)))
        .await
        .then_expect_error(ChangeRequestError::AlreadyExists);
}

#[tokio::test]
async fn a_change_request_cannot_time_out_when_it_is_opened() {
    when(vec![], open_command(at(0)))
        .await
        .then_expect_error(ChangeRequestError::TimeoutInPast);
}

#[tokio::test]
async fn every_other_command_on_a_missing_change_request_fails_with_not_found() {
    let commands = vec![
        amend(AGENT, "r2"),
        ChangeRequestCommand::ApproveChange {
            by: ADMIN,
            at: at(1),
        },
        ChangeRequestCommand::RejectChange {
            by: ADMIN,
            reason: reason("no"),
            at: at(1),
        },
        ChangeRequestCommand::AutoRevert { at: at(61) },
        request_exception(DEV, ExceptionKind::Permanent, at(1)),
        ChangeRequestCommand::GrantException {
            by: ADMIN,
            until: None,
            at: at(1),
        },
        ChangeRequestCommand::DenyException {
            by: ADMIN,
            reason: reason("no"),
            at: at(1),
        },
        ChangeRequestCommand::Withdraw { by: DEV, at: at(1) },
    ];
    for command in commands {
        when(vec![], command)
            .await
            .then_expect_error(ChangeRequestError::NotFound);
    }
}

// ---- amending ----

#[tokio::test]
async fn the_reporting_agent_can_amend_a_pending_change_request() {
    when(vec![opened()], amend(AGENT, "r2"))
        .await
        .then_expect_events(vec![ChangeRequestEvent::ChangeRequestAmended {
            change_request_id: CR,
            agent: AGENT,
            new_hash: hash('c'),
            diff: Diff::parse("-old\n+newer\n").unwrap(),
            report_id: report("r2"),
            at: at(5),
        }]);
}

#[tokio::test]
async fn a_report_delivered_twice_changes_nothing() {
    when(vec![opened()], amend(AGENT, "r1"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn another_agent_cannot_amend_the_change_request() {
    when(vec![opened()], amend(OTHER_AGENT, "r2"))
        .await
        .then_expect_error(ChangeRequestError::NotReportingAgent);
}

#[tokio::test]
async fn a_decided_change_request_cannot_be_amended() {
    when(vec![opened(), approved()], amend(AGENT, "r2"))
        .await
        .then_expect_error(ChangeRequestError::NotPending);
}

#[test]
fn an_amendment_replaces_the_hash_and_diff() {
    let change_request = state(vec![
        opened(),
        ChangeRequestEvent::ChangeRequestAmended {
            change_request_id: CR,
            agent: AGENT,
            new_hash: hash('c'),
            diff: Diff::parse("-old\n+newer\n").unwrap(),
            report_id: report("r2"),
            at: at(5),
        },
    ]);
    assert_eq!(change_request.new_hash(), Some(&hash('c')));
    assert_eq!(change_request.original_hash(), Some(&hash('a')));
    assert_eq!(
        change_request.diff().map(Diff::as_str),
        Some("-old\n+newer\n")
    );
    assert_eq!(change_request.report_ids(), &[report("r1"), report("r2")]);
    assert_eq!(change_request.status(), Some(ChangeRequestStatus::Pending));
}

// ---- approving and rejecting ----

#[tokio::test]
async fn a_team_admin_can_approve_a_pending_change() {
    when(
        vec![opened()],
        ChangeRequestCommand::ApproveChange {
            by: ADMIN,
            at: at(10),
        },
    )
    .await
    .then_expect_events(vec![approved()]);
}

#[tokio::test]
async fn the_developer_cannot_approve_their_own_change() {
    when(
        vec![opened()],
        ChangeRequestCommand::ApproveChange {
            by: DEV,
            at: at(10),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::SelfDecision);
}

#[tokio::test]
async fn a_decided_change_cannot_be_approved_again() {
    for decided in [approved(), rejected(), auto_reverted(), withdrawn()] {
        when(
            vec![opened(), decided],
            ChangeRequestCommand::ApproveChange {
                by: ADMIN,
                at: at(90),
            },
        )
        .await
        .then_expect_error(ChangeRequestError::NotPending);
    }
}

#[tokio::test]
async fn a_team_admin_can_reject_a_pending_change() {
    when(
        vec![opened()],
        ChangeRequestCommand::RejectChange {
            by: ADMIN,
            reason: reason("breaks the rule"),
            at: at(10),
        },
    )
    .await
    .then_expect_events(vec![rejected()]);
}

#[tokio::test]
async fn the_developer_cannot_reject_their_own_change() {
    when(
        vec![opened()],
        ChangeRequestCommand::RejectChange {
            by: DEV,
            reason: reason("changed my mind"),
            at: at(10),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::SelfDecision);
}

#[tokio::test]
async fn an_approved_change_cannot_be_rejected() {
    when(
        vec![opened(), approved()],
        ChangeRequestCommand::RejectChange {
            by: ADMIN,
            reason: reason("too late"),
            at: at(20),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::NotPending);
}

// ---- timing out ----

#[tokio::test]
async fn a_pending_change_is_reverted_once_it_times_out() {
    when(
        vec![opened()],
        ChangeRequestCommand::AutoRevert { at: at(60) },
    )
    .await
    .then_expect_events(vec![ChangeRequestEvent::ChangeAutoReverted {
        change_request_id: CR,
        timeout_at: at(60),
        at: at(60),
    }]);
}

#[tokio::test]
async fn a_pending_change_is_not_reverted_before_it_times_out() {
    when(
        vec![opened()],
        ChangeRequestCommand::AutoRevert { at: at(59) },
    )
    .await
    .then_expect_error(ChangeRequestError::NotTimedOut { timeout_at: at(60) });
}

#[tokio::test]
async fn an_approved_change_is_never_reverted_by_the_timeout() {
    when(
        vec![opened(), approved()],
        ChangeRequestCommand::AutoRevert { at: at(61) },
    )
    .await
    .then_expect_error(ChangeRequestError::NotPending);
}

// ---- requesting exceptions ----

#[tokio::test]
async fn the_developer_can_request_an_exception_for_a_rejected_change() {
    when(
        vec![opened(), rejected()],
        request_exception(DEV, ExceptionKind::TimeLimited { until: at(200) }, at(70)),
    )
    .await
    .then_expect_events(vec![exception_requested(
        SECOND_EXCEPTION,
        ExceptionKind::TimeLimited { until: at(200) },
    )]);
}

#[tokio::test]
async fn the_developer_can_request_an_exception_for_an_auto_reverted_change() {
    when(
        vec![opened(), auto_reverted()],
        request_exception(DEV, ExceptionKind::Permanent, at(70)),
    )
    .await
    .then_expect_events(vec![exception_requested(
        SECOND_EXCEPTION,
        ExceptionKind::Permanent,
    )]);
}

#[tokio::test]
async fn an_exception_can_be_requested_again_after_a_denial() {
    let mut given = exception_pending();
    given.push(exception_denied());
    when(
        given,
        request_exception(DEV, ExceptionKind::Permanent, at(70)),
    )
    .await
    .then_expect_events(vec![exception_requested(
        SECOND_EXCEPTION,
        ExceptionKind::Permanent,
    )]);
}

#[tokio::test]
async fn an_exception_can_be_requested_again_once_the_granted_one_expired() {
    let mut given = exception_pending();
    given.push(exception_granted(Some(at(100))));
    when(
        given,
        request_exception(DEV, ExceptionKind::Permanent, at(100)),
    )
    .await
    .then_expect_events(vec![ChangeRequestEvent::ExceptionRequested {
        change_request_id: CR,
        exception_id: SECOND_EXCEPTION,
        by: DEV,
        justification: reason("needed for the release"),
        kind: ExceptionKind::Permanent,
        at: at(100),
    }]);
}

#[tokio::test]
async fn no_exception_can_be_requested_while_the_granted_one_holds() {
    let mut given = exception_pending();
    given.push(exception_granted(Some(at(100))));
    when(
        given,
        request_exception(DEV, ExceptionKind::Permanent, at(99)),
    )
    .await
    .then_expect_error(ChangeRequestError::ExceptionNotAllowed);
}

#[tokio::test]
async fn no_exception_can_be_requested_for_a_pending_approved_or_withdrawn_change() {
    for given in [
        vec![opened()],
        vec![opened(), approved()],
        vec![opened(), withdrawn()],
    ] {
        when(
            given,
            request_exception(DEV, ExceptionKind::Permanent, at(70)),
        )
        .await
        .then_expect_error(ChangeRequestError::ExceptionNotAllowed);
    }
}

#[tokio::test]
async fn only_one_exception_request_can_be_pending() {
    when(
        exception_pending(),
        request_exception(DEV, ExceptionKind::Permanent, at(75)),
    )
    .await
    .then_expect_error(ChangeRequestError::ExceptionAlreadyRequested);
}

#[tokio::test]
async fn only_the_developer_who_made_the_change_can_request_an_exception() {
    when(
        vec![opened(), rejected()],
        request_exception(ADMIN, ExceptionKind::Permanent, at(70)),
    )
    .await
    .then_expect_error(ChangeRequestError::NotRequester);
}

#[tokio::test]
async fn a_time_limited_exception_must_end_after_it_is_requested() {
    when(
        vec![opened(), rejected()],
        request_exception(DEV, ExceptionKind::TimeLimited { until: at(70) }, at(70)),
    )
    .await
    .then_expect_error(ChangeRequestError::ExpiryInPast);
}

// ---- granting and denying exceptions ----

#[tokio::test]
async fn a_team_admin_can_grant_a_time_limited_exception() {
    when(
        exception_pending(),
        ChangeRequestCommand::GrantException {
            by: ADMIN,
            until: Some(at(100)),
            at: at(80),
        },
    )
    .await
    .then_expect_events(vec![exception_granted(Some(at(100)))]);
}

#[tokio::test]
async fn a_team_admin_can_grant_a_permanent_exception() {
    when(
        exception_pending(),
        ChangeRequestCommand::GrantException {
            by: ADMIN,
            until: None,
            at: at(80),
        },
    )
    .await
    .then_expect_events(vec![exception_granted(None)]);
}

#[tokio::test]
async fn an_exception_cannot_be_granted_with_an_expiry_in_the_past() {
    when(
        exception_pending(),
        ChangeRequestCommand::GrantException {
            by: ADMIN,
            until: Some(at(80)),
            at: at(80),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::ExpiryInPast);
}

#[tokio::test]
async fn the_developer_cannot_grant_their_own_exception() {
    when(
        exception_pending(),
        ChangeRequestCommand::GrantException {
            by: DEV,
            until: None,
            at: at(80),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::SelfDecision);
}

#[tokio::test]
async fn nothing_can_be_granted_without_a_pending_exception_request() {
    let mut granted = exception_pending();
    granted.push(exception_granted(None));
    for given in [vec![opened()], vec![opened(), rejected()], granted] {
        when(
            given,
            ChangeRequestCommand::GrantException {
                by: ADMIN,
                until: None,
                at: at(90),
            },
        )
        .await
        .then_expect_error(ChangeRequestError::NoPendingException);
    }
}

#[tokio::test]
async fn a_team_admin_can_deny_an_exception() {
    when(
        exception_pending(),
        ChangeRequestCommand::DenyException {
            by: ADMIN,
            reason: reason("not justified"),
            at: at(80),
        },
    )
    .await
    .then_expect_events(vec![exception_denied()]);
}

#[tokio::test]
async fn the_developer_cannot_deny_their_own_exception() {
    when(
        exception_pending(),
        ChangeRequestCommand::DenyException {
            by: DEV,
            reason: reason("never mind"),
            at: at(80),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::SelfDecision);
}

#[tokio::test]
async fn nothing_can_be_denied_without_a_pending_exception_request() {
    let mut denied = exception_pending();
    denied.push(exception_denied());
    for given in [vec![opened(), auto_reverted()], denied] {
        when(
            given,
            ChangeRequestCommand::DenyException {
                by: ADMIN,
                reason: reason("no"),
                at: at(90),
            },
        )
        .await
        .then_expect_error(ChangeRequestError::NoPendingException);
    }
}

// ---- withdrawing ----

#[tokio::test]
async fn the_developer_can_withdraw_a_pending_change_request() {
    when(
        vec![opened()],
        ChangeRequestCommand::Withdraw { by: DEV, at: at(5) },
    )
    .await
    .then_expect_events(vec![withdrawn()]);
}

#[tokio::test]
async fn only_the_developer_can_withdraw_their_change_request() {
    when(
        vec![opened()],
        ChangeRequestCommand::Withdraw {
            by: ADMIN,
            at: at(5),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::NotRequester);
}

#[tokio::test]
async fn a_decided_change_request_cannot_be_withdrawn() {
    when(
        vec![opened(), rejected()],
        ChangeRequestCommand::Withdraw {
            by: DEV,
            at: at(20),
        },
    )
    .await
    .then_expect_error(ChangeRequestError::NotPending);
}

// ---- state ----

#[test]
fn a_time_limited_exception_is_active_until_it_expires() {
    let mut events = exception_pending();
    events.push(exception_granted(Some(at(100))));
    let change_request = state(events);
    assert_eq!(
        change_request.status(),
        Some(ChangeRequestStatus::ExceptionGranted)
    );
    assert!(change_request.exception_active(at(80)));
    assert!(change_request.exception_active(at(99)));
    assert!(!change_request.exception_active(at(100)));
}

#[test]
fn a_permanent_exception_is_always_active() {
    let mut events = exception_pending();
    events.push(exception_granted(None));
    assert!(state(events).exception_active(at(1_000_000)));
}

#[test]
fn no_exception_is_active_unless_granted() {
    let mut denied = exception_pending();
    denied.push(exception_denied());
    for events in [vec![opened()], exception_pending(), denied] {
        assert!(!state(events).exception_active(at(80)));
    }
}

#[test]
fn the_state_records_the_decision_and_the_exception_history() {
    let mut events = exception_pending();
    events.push(exception_denied());
    let change_request = state(events);
    assert_eq!(change_request.id(), Some(CR));
    assert_eq!(change_request.agent(), Some(AGENT));
    assert_eq!(change_request.user(), Some(DEV));
    assert_eq!(change_request.team(), Some(TEAM));
    assert_eq!(change_request.rule(), Some(RULE));
    assert_eq!(change_request.layer(), Some(Layer::Team));
    assert_eq!(
        change_request.file().map(FilePath::as_str),
        Some("/home/dev/.claude/CLAUDE.md")
    );
    assert_eq!(change_request.timeout_at(), Some(at(60)));
    assert_eq!(change_request.opened_at(), Some(at(0)));
    assert_eq!(
        change_request.decision(),
        Some(&Decision {
            by: Some(ADMIN),
            reason: Some(reason("breaks the rule")),
            at: at(10),
        })
    );
    assert_eq!(
        change_request.status(),
        Some(ChangeRequestStatus::ExceptionDenied)
    );
    let exception = change_request.exception().unwrap();
    assert_eq!(exception.id, EXCEPTION);
    assert_eq!(exception.requested_by, DEV);
    assert_eq!(
        exception.resolution,
        Some(ExceptionResolution::Denied {
            by: ADMIN,
            reason: reason("not justified"),
            at: at(80),
        })
    );
    assert_eq!(change_request.exceptions().len(), 1);
    assert_eq!(change_request.version(), 4);
}

#[test]
fn an_auto_revert_is_decided_by_nobody() {
    let change_request = state(vec![opened(), auto_reverted()]);
    assert_eq!(
        change_request.status(),
        Some(ChangeRequestStatus::AutoReverted)
    );
    assert_eq!(change_request.decision().and_then(|d| d.by), None);
}

#[test]
fn change_request_state_round_trips_through_json() {
    let mut events = exception_pending();
    events.push(exception_granted(Some(at(100))));
    let change_request = state(events);
    let json = serde_json::to_string(&change_request).unwrap();
    let back: ChangeRequest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, change_request);
}
