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

#[tokio::test]
async fn every_other_command_on_a_missing_change_request_fails_with_not_found() {
    use ChangeRequestCommand::*;
    let commands = vec![
        amend(AGENT, "r2"),
        ApproveChange {
            by: ADMIN,
            at: at(1),
        },
        RejectChange {
            by: ADMIN,
            reason: reason("no"),
            at: at(1),
        },
        AutoRevert { at: at(61) },
        request_exception(DEV, ExceptionKind::Permanent, at(1)),
        GrantException {
            by: ADMIN,
            until: None,
            at: at(1),
        },
        DenyException {
            by: ADMIN,
            reason: reason("no"),
            at: at(1),
        },
        Withdraw { by: DEV, at: at(1) },
    ];
    check_every(vec![vec![]], commands, Err(ChangeRequestError::NotFound)).await;
}

#[tokio::test]
async fn each_command_records_its_events_or_fails() {
    use {ChangeRequestCommand::*, ChangeRequestError as Error, ExceptionKind::*};
    let amended = ChangeRequestEvent::ChangeRequestAmended {
        change_request_id: CR,
        agent: AGENT,
        new_hash: hash('c'),
        diff: Diff::parse("-old\n+newer\n").unwrap(),
        report_id: report("r2"),
        at: at(5),
    };
    let reverted_at_60 = ChangeRequestEvent::ChangeAutoReverted {
        change_request_id: CR,
        timeout_at: at(60),
        at: at(60),
    };
    let [denied, granted_until_100] = [exception_denied(), exception_granted(Some(at(100)))]
        .map(|event| [exception_pending(), vec![event]].concat());
    let requested_at_100 = ChangeRequestEvent::ExceptionRequested {
        change_request_id: CR,
        exception_id: SECOND_EXCEPTION,
        by: DEV,
        justification: reason("needed for the release"),
        kind: Permanent,
        at: at(100),
    };
    let until_200 = TimeLimited { until: at(200) };
    cases! {
        // opening
        "an agent report opens a pending change request": [] => open_command(at(60)) => Ok(vec![opened()]);
        "opening a change request that exists fails with already exists":
            [opened()] => open_command(at(60)) => Err(Error::AlreadyExists);
        "a change request cannot time out when it is opened": [] => open_command(at(0)) => Err(Error::TimeoutInPast);
        // amending
        "the reporting agent can amend a pending change request": [opened()] => amend(AGENT, "r2") => Ok(vec![amended]);
        "a report delivered twice changes nothing": [opened()] => amend(AGENT, "r1") => Ok(vec![]);
        "another agent cannot amend the change request":
            [opened()] => amend(OTHER_AGENT, "r2") => Err(Error::NotReportingAgent);
        "a decided change request cannot be amended": [opened(), approved()] => amend(AGENT, "r2") => Err(Error::NotPending);
        // approving and rejecting
        "a team admin can approve a pending change":
            [opened()] => ApproveChange { by: ADMIN, at: at(10) } => Ok(vec![approved()]);
        "the developer cannot approve their own change":
            [opened()] => ApproveChange { by: DEV, at: at(10) } => Err(Error::SelfDecision);
        "a team admin can reject a pending change":
            [opened()] => RejectChange { by: ADMIN, reason: reason("breaks the rule"), at: at(10) } => Ok(vec![rejected()]);
        "the developer cannot reject their own change": [opened()]
            => RejectChange { by: DEV, reason: reason("changed my mind"), at: at(10) } => Err(Error::SelfDecision);
        "an approved change cannot be rejected": [opened(), approved()]
            => RejectChange { by: ADMIN, reason: reason("too late"), at: at(20) } => Err(Error::NotPending);
        // timing out
        "a pending change is reverted once it times out": [opened()] => AutoRevert { at: at(60) } => Ok(vec![reverted_at_60]);
        "a pending change is not reverted before it times out":
            [opened()] => AutoRevert { at: at(59) } => Err(Error::NotTimedOut { timeout_at: at(60) });
        "an approved change is never reverted by the timeout":
            [opened(), approved()] => AutoRevert { at: at(61) } => Err(Error::NotPending);
        // requesting exceptions
        "the developer can request an exception for a rejected change": [opened(), rejected()]
            => request_exception(DEV, until_200, at(70)) => Ok(vec![exception_requested(SECOND_EXCEPTION, until_200)]);
        "the developer can request an exception for an auto reverted change": [opened(), auto_reverted()]
            => request_exception(DEV, Permanent, at(70)) => Ok(vec![exception_requested(SECOND_EXCEPTION, Permanent)]);
        "an exception can be requested again after a denial":
            denied.clone() => request_exception(DEV, Permanent, at(70))
            => Ok(vec![exception_requested(SECOND_EXCEPTION, Permanent)]);
        "an exception can be requested again once the granted one expired":
            granted_until_100.clone() => request_exception(DEV, Permanent, at(100)) => Ok(vec![requested_at_100]);
        "no exception can be requested while the granted one holds":
            granted_until_100 => request_exception(DEV, Permanent, at(99)) => Err(Error::ExceptionNotAllowed);
        "only one exception request can be pending":
            exception_pending() => request_exception(DEV, Permanent, at(75)) => Err(Error::ExceptionAlreadyRequested);
        "only the developer who made the change can request an exception":
            [opened(), rejected()] => request_exception(ADMIN, Permanent, at(70)) => Err(Error::NotRequester);
        "a time limited exception must end after it is requested": [opened(), rejected()]
            => request_exception(DEV, TimeLimited { until: at(70) }, at(70)) => Err(Error::ExpiryInPast);
        // granting and denying exceptions
        "a team admin can grant a time limited exception": exception_pending()
            => GrantException { by: ADMIN, until: Some(at(100)), at: at(80) } => Ok(vec![exception_granted(Some(at(100)))]);
        "a team admin can grant a permanent exception":
            exception_pending() => GrantException { by: ADMIN, until: None, at: at(80) } => Ok(vec![exception_granted(None)]);
        "an exception cannot be granted with an expiry in the past":
            exception_pending() => GrantException { by: ADMIN, until: Some(at(80)), at: at(80) } => Err(Error::ExpiryInPast);
        "the developer cannot grant their own exception":
            exception_pending() => GrantException { by: DEV, until: None, at: at(80) } => Err(Error::SelfDecision);
        "a team admin can deny an exception": exception_pending()
            => DenyException { by: ADMIN, reason: reason("not justified"), at: at(80) } => Ok(vec![exception_denied()]);
        "the developer cannot deny their own exception": exception_pending()
            => DenyException { by: DEV, reason: reason("never mind"), at: at(80) } => Err(Error::SelfDecision);
        // withdrawing
        "the developer can withdraw a pending change request":
            [opened()] => Withdraw { by: DEV, at: at(5) } => Ok(vec![withdrawn()]);
        "only the developer can withdraw their change request":
            [opened()] => Withdraw { by: ADMIN, at: at(5) } => Err(Error::NotRequester);
        "a decided change request cannot be withdrawn":
            [opened(), rejected()] => Withdraw { by: DEV, at: at(20) } => Err(Error::NotPending);
    }
}

#[tokio::test]
async fn a_decided_change_cannot_be_approved_again() {
    let givens = [approved(), rejected(), auto_reverted(), withdrawn()]
        .map(|decided| vec![opened(), decided]);
    let command = ChangeRequestCommand::ApproveChange {
        by: ADMIN,
        at: at(90),
    };
    check_every(
        givens.into(),
        vec![command],
        Err(ChangeRequestError::NotPending),
    )
    .await;
}

#[tokio::test]
async fn no_exception_can_be_requested_for_a_pending_approved_or_withdrawn_change() {
    let givens = vec![
        vec![opened()],
        vec![opened(), approved()],
        vec![opened(), withdrawn()],
    ];
    let command = request_exception(DEV, ExceptionKind::Permanent, at(70));
    let then = Err(ChangeRequestError::ExceptionNotAllowed);
    check_every(givens, vec![command], then).await;
}

#[tokio::test]
async fn nothing_can_be_granted_without_a_pending_exception_request() {
    let granted = [exception_pending(), vec![exception_granted(None)]].concat();
    let givens = vec![vec![opened()], vec![opened(), rejected()], granted];
    let command = ChangeRequestCommand::GrantException {
        by: ADMIN,
        until: None,
        at: at(90),
    };
    check_every(
        givens,
        vec![command],
        Err(ChangeRequestError::NoPendingException),
    )
    .await;
}

#[tokio::test]
async fn nothing_can_be_denied_without_a_pending_exception_request() {
    let denied = [exception_pending(), vec![exception_denied()]].concat();
    let command = ChangeRequestCommand::DenyException {
        by: ADMIN,
        reason: reason("no"),
        at: at(90),
    };
    let givens = vec![vec![opened(), auto_reverted()], denied];
    check_every(
        givens,
        vec![command],
        Err(ChangeRequestError::NoPendingException),
    )
    .await;
}

// ---- state ----

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
