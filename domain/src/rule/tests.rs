//! Given/when/then tests of the Rule aggregate: one accepting and one rejecting test per rule, asserting
//! the typed error, plus a few tests of the state the events build.

use super::*;
use crate::testkit::*;
use crate::value::Reason;
use std::num::NonZeroU32;
use uuid::Uuid;

const RULE: RuleId = RuleId(Uuid::from_u128(0x1));
const ALICE: UserId = UserId(Uuid::from_u128(0xa));
const BOB: UserId = UserId(Uuid::from_u128(0xb));
const CAROL: UserId = UserId(Uuid::from_u128(0xc));
const DAVE: UserId = UserId(Uuid::from_u128(0xd));

fn quorum(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn spec(layer: Layer) -> RuleSpec {
    RuleSpec {
        name: RuleName::parse("No secrets in code").unwrap(),
        description: Description::parse("Keep credentials out of the repository").unwrap(),
        layer,
        content: RuleContent::parse("Never commit secrets.\n").unwrap(),
        category: Some(Category::parse("Security").unwrap()),
        priority: 10,
        tags: [Tag::parse("security").unwrap()].into(),
        triggers: Vec::new(),
    }
}

fn edited_spec(layer: Layer) -> RuleSpec {
    RuleSpec {
        content: RuleContent::parse("Never commit secrets; use the vault.\n").unwrap(),
        ..spec(layer)
    }
}

fn with_triggers(spec: RuleSpec) -> RuleSpec {
    RuleSpec {
        triggers: vec![PathGlob::parse("src/**/*.rs").unwrap()],
        ..spec
    }
}

fn drafted(layer: Layer) -> RuleEvent {
    RuleEvent::RuleDrafted {
        rule_id: RULE,
        revision: 1,
        spec: spec(layer),
        by: ALICE,
        at: at(0),
    }
}

fn submitted(revision: u32) -> RuleEvent {
    RuleEvent::RuleSubmitted {
        rule_id: RULE,
        revision,
        by: ALICE,
        at: at(1),
    }
}

fn approval(revision: u32, approver: UserId, approvals: u32, quorum: u32) -> RuleEvent {
    RuleEvent::RuleApprovalRecorded {
        rule_id: RULE,
        revision,
        approver,
        approvals,
        quorum,
        at: at(2),
    }
}

fn revision_approved(revision: u32, spec: RuleSpec, approvers: Vec<UserId>) -> RuleEvent {
    RuleEvent::RuleRevisionApproved {
        rule_id: RULE,
        revision,
        spec,
        approvers,
        at: at(2),
    }
}

fn rejected(revision: u32, reviewer: UserId) -> RuleEvent {
    RuleEvent::RuleRejected {
        rule_id: RULE,
        revision,
        reviewer,
        reason: reason("too vague"),
        at: at(3),
    }
}

fn revision_opened(revision: u32, spec: RuleSpec) -> RuleEvent {
    RuleEvent::RuleRevisionOpened {
        rule_id: RULE,
        revision,
        spec,
        by: ALICE,
        at: at(4),
    }
}

fn archived() -> RuleEvent {
    RuleEvent::RuleArchived {
        rule_id: RULE,
        by: ALICE,
        at: at(9),
    }
}

/// A team rule whose revision 1 awaits review.
fn pending_team_rule() -> Vec<RuleEvent> {
    vec![drafted(Layer::Team), submitted(1)]
}

/// A team rule whose revision 1 is in force and nothing else is open.
fn approved_team_rule() -> Vec<RuleEvent> {
    vec![
        drafted(Layer::Team),
        submitted(1),
        approval(1, BOB, 1, 1),
        revision_approved(1, spec(Layer::Team), vec![BOB]),
    ]
}

/// A rejected team rule.
fn rejected_team_rule() -> Vec<RuleEvent> {
    vec![drafted(Layer::Team), submitted(1), rejected(1, BOB)]
}

/// One of each command that needs an existing rule.
fn commands_on_an_existing_rule() -> Vec<RuleCommand> {
    vec![
        RuleCommand::EditDraft {
            spec: spec(Layer::Team),
            by: ALICE,
            at: at(5),
        },
        RuleCommand::SubmitRule {
            by: ALICE,
            at: at(5),
        },
        RuleCommand::ApproveRule {
            approver: BOB,
            quorum: quorum(1),
            at: at(5),
        },
        RuleCommand::RejectRule {
            reviewer: BOB,
            reason: reason("no"),
            at: at(5),
        },
        RuleCommand::ReviseRule {
            spec: spec(Layer::Team),
            by: ALICE,
            at: at(5),
        },
        RuleCommand::SetOrganizationEnforcement {
            enforcement: Enforcement::WARNING,
            by: ALICE,
            at: at(5),
        },
        RuleCommand::ArchiveRule {
            by: ALICE,
            at: at(5),
        },
    ]
}

// ---- drafting ----

#[tokio::test]
async fn drafting_a_team_rule_creates_revision_one_as_a_draft() {
    when(
        vec![],
        RuleCommand::DraftRule {
            rule_id: RULE,
            spec: spec(Layer::Team),
            by: ALICE,
            at: at(0),
        },
    )
    .await
    .then_expect_events(vec![drafted(Layer::Team)]);
}

#[tokio::test]
async fn drafting_an_organization_rule_also_sets_block_enforcement() {
    when(
        vec![],
        RuleCommand::DraftRule {
            rule_id: RULE,
            spec: spec(Layer::Organization),
            by: ALICE,
            at: at(0),
        },
    )
    .await
    .then_expect_events(vec![
        drafted(Layer::Organization),
        RuleEvent::OrganizationEnforcementSet {
            rule_id: RULE,
            enforcement: Enforcement::BLOCK,
            by: ALICE,
            at: at(0),
        },
    ]);
}

#[tokio::test]
async fn drafting_a_project_rule_with_triggers_is_accepted() {
    let spec = with_triggers(spec(Layer::Project));
    when(
        vec![],
        RuleCommand::DraftRule {
            rule_id: RULE,
            spec: spec.clone(),
            by: ALICE,
            at: at(0),
        },
    )
    .await
    .then_expect_events(vec![RuleEvent::RuleDrafted {
        rule_id: RULE,
        revision: 1,
        spec,
        by: ALICE,
        at: at(0),
    }]);
}

#[tokio::test]
async fn drafting_a_team_or_organization_rule_with_triggers_is_rejected() {
    for layer in [Layer::Team, Layer::Organization] {
        when(
            vec![],
            RuleCommand::DraftRule {
                rule_id: RULE,
                spec: with_triggers(spec(layer)),
                by: ALICE,
                at: at(0),
            },
        )
        .await
        .then_expect_error(RuleError::TriggersOnlyForProjectLayer);
    }
}

#[tokio::test]
async fn drafting_a_rule_that_exists_fails_with_already_exists() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::DraftRule {
            rule_id: RULE,
            spec: spec(Layer::Team),
            by: ALICE,
            at: at(1),
        },
    )
    .await
    .then_expect_error(RuleError::AlreadyExists);
}

#[tokio::test]
async fn every_other_command_on_a_missing_rule_fails_with_not_found() {
    for command in commands_on_an_existing_rule() {
        when(vec![], command)
            .await
            .then_expect_error(RuleError::NotFound);
    }
}

// ---- editing ----

#[tokio::test]
async fn a_draft_can_be_edited() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::EditDraft {
            spec: edited_spec(Layer::Team),
            by: BOB,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![RuleEvent::RuleDraftEdited {
        rule_id: RULE,
        revision: 1,
        spec: edited_spec(Layer::Team),
        by: BOB,
        at: at(1),
    }]);
}

#[tokio::test]
async fn a_rejected_revision_can_be_edited() {
    when(
        rejected_team_rule(),
        RuleCommand::EditDraft {
            spec: edited_spec(Layer::Team),
            by: ALICE,
            at: at(4),
        },
    )
    .await
    .then_expect_events(vec![RuleEvent::RuleDraftEdited {
        rule_id: RULE,
        revision: 1,
        spec: edited_spec(Layer::Team),
        by: ALICE,
        at: at(4),
    }]);
}

#[test]
fn editing_a_rejected_revision_returns_it_to_draft() {
    let mut events = rejected_team_rule();
    assert_eq!(state(events.clone()).status(), Some(RuleStatus::Rejected));
    events.push(RuleEvent::RuleDraftEdited {
        rule_id: RULE,
        revision: 1,
        spec: edited_spec(Layer::Team),
        by: ALICE,
        at: at(4),
    });
    let rule = state(events);
    assert_eq!(rule.status(), Some(RuleStatus::Draft));
    assert_eq!(
        rule.working().map(|w| w.spec()),
        Some(&edited_spec(Layer::Team))
    );
}

#[tokio::test]
async fn a_pending_revision_cannot_be_edited() {
    when(
        pending_team_rule(),
        RuleCommand::EditDraft {
            spec: edited_spec(Layer::Team),
            by: ALICE,
            at: at(2),
        },
    )
    .await
    .then_expect_error(RuleError::NotEditable);
}

#[tokio::test]
async fn an_approved_revision_cannot_be_edited() {
    when(
        approved_team_rule(),
        RuleCommand::EditDraft {
            spec: edited_spec(Layer::Team),
            by: ALICE,
            at: at(3),
        },
    )
    .await
    .then_expect_error(RuleError::NotEditable);
}

#[tokio::test]
async fn an_edit_cannot_change_the_layer() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::EditDraft {
            spec: spec(Layer::Organization),
            by: ALICE,
            at: at(1),
        },
    )
    .await
    .then_expect_error(RuleError::LayerChanged {
        from: Layer::Team,
        to: Layer::Organization,
    });
}

#[tokio::test]
async fn an_edit_cannot_add_triggers_to_a_team_rule() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::EditDraft {
            spec: with_triggers(spec(Layer::Team)),
            by: ALICE,
            at: at(1),
        },
    )
    .await
    .then_expect_error(RuleError::TriggersOnlyForProjectLayer);
}

// ---- submitting ----

#[tokio::test]
async fn a_draft_can_be_submitted() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::SubmitRule {
            by: ALICE,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![submitted(1)]);
}

#[tokio::test]
async fn a_rejected_revision_can_be_submitted_again() {
    when(
        rejected_team_rule(),
        RuleCommand::SubmitRule {
            by: ALICE,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![submitted(1)]);
}

#[tokio::test]
async fn a_pending_revision_cannot_be_submitted_again() {
    when(
        pending_team_rule(),
        RuleCommand::SubmitRule {
            by: ALICE,
            at: at(1),
        },
    )
    .await
    .then_expect_error(RuleError::NotSubmittable);
}

#[tokio::test]
async fn an_approved_rule_without_an_open_revision_has_nothing_to_submit() {
    when(
        approved_team_rule(),
        RuleCommand::SubmitRule {
            by: ALICE,
            at: at(3),
        },
    )
    .await
    .then_expect_error(RuleError::NotSubmittable);
}

// ---- approving ----

#[tokio::test]
async fn an_approval_that_reaches_the_quorum_brings_the_revision_into_force() {
    when(
        pending_team_rule(),
        RuleCommand::ApproveRule {
            approver: BOB,
            quorum: quorum(1),
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![
        approval(1, BOB, 1, 1),
        revision_approved(1, spec(Layer::Team), vec![BOB]),
    ]);
}

#[tokio::test]
async fn an_approval_below_the_quorum_is_only_recorded() {
    let quorum_two = ApprovalQuorum::default().for_layer(Layer::Organization);
    when(
        vec![drafted(Layer::Organization), submitted(1)],
        RuleCommand::ApproveRule {
            approver: BOB,
            quorum: quorum_two,
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![approval(1, BOB, 1, 2)]);
}

#[tokio::test]
async fn the_second_approval_of_an_organization_rule_brings_it_into_force() {
    when(
        vec![
            drafted(Layer::Organization),
            submitted(1),
            approval(1, BOB, 1, 2),
        ],
        RuleCommand::ApproveRule {
            approver: CAROL,
            quorum: quorum(2),
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![
        approval(1, CAROL, 2, 2),
        revision_approved(1, spec(Layer::Organization), vec![BOB, CAROL]),
    ]);
}

#[tokio::test]
async fn the_author_cannot_approve_their_own_revision() {
    when(
        pending_team_rule(),
        RuleCommand::ApproveRule {
            approver: ALICE,
            quorum: quorum(1),
            at: at(2),
        },
    )
    .await
    .then_expect_error(RuleError::SelfApproval);
}

#[tokio::test]
async fn an_editor_cannot_approve_the_revision_they_edited() {
    when(
        vec![
            drafted(Layer::Team),
            RuleEvent::RuleDraftEdited {
                rule_id: RULE,
                revision: 1,
                spec: edited_spec(Layer::Team),
                by: BOB,
                at: at(1),
            },
            submitted(1),
        ],
        RuleCommand::ApproveRule {
            approver: BOB,
            quorum: quorum(1),
            at: at(2),
        },
    )
    .await
    .then_expect_error(RuleError::SelfApproval);
}

#[tokio::test]
async fn a_reviewer_cannot_approve_the_same_revision_twice() {
    when(
        vec![
            drafted(Layer::Organization),
            submitted(1),
            approval(1, BOB, 1, 2),
        ],
        RuleCommand::ApproveRule {
            approver: BOB,
            quorum: quorum(2),
            at: at(3),
        },
    )
    .await
    .then_expect_error(RuleError::AlreadyApprovedBy { approver: BOB });
}

#[tokio::test]
async fn a_draft_cannot_be_approved() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::ApproveRule {
            approver: BOB,
            quorum: quorum(1),
            at: at(1),
        },
    )
    .await
    .then_expect_error(RuleError::NotPending);
}

#[tokio::test]
async fn approvals_given_before_a_rejection_do_not_count_after_resubmission() {
    when(
        vec![
            drafted(Layer::Organization),
            submitted(1),
            approval(1, BOB, 1, 2),
            rejected(1, CAROL),
            submitted(1),
        ],
        RuleCommand::ApproveRule {
            approver: BOB,
            quorum: quorum(2),
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![approval(1, BOB, 1, 2)]);
}

// ---- rejecting ----

#[tokio::test]
async fn a_pending_revision_can_be_rejected_with_a_reason() {
    when(
        pending_team_rule(),
        RuleCommand::RejectRule {
            reviewer: BOB,
            reason: reason("too vague"),
            at: at(3),
        },
    )
    .await
    .then_expect_events(vec![rejected(1, BOB)]);
}

#[tokio::test]
async fn the_author_may_reject_their_own_pending_revision_to_withdraw_it() {
    when(
        pending_team_rule(),
        RuleCommand::RejectRule {
            reviewer: ALICE,
            reason: reason("too vague"),
            at: at(3),
        },
    )
    .await
    .then_expect_events(vec![rejected(1, ALICE)]);
}

#[tokio::test]
async fn a_draft_cannot_be_rejected() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::RejectRule {
            reviewer: BOB,
            reason: reason("too vague"),
            at: at(3),
        },
    )
    .await
    .then_expect_error(RuleError::NotPending);
}

#[test]
fn a_rejection_without_a_reason_cannot_even_be_expressed() {
    // RejectRule takes a Reason, and a blank reason does not parse.
    assert_eq!(
        Reason::parse("  "),
        Err(crate::ValueError::Empty { field: "reason" })
    );
}

// ---- revising ----

#[tokio::test]
async fn revising_an_approved_rule_opens_the_next_revision_as_a_draft() {
    when(
        approved_team_rule(),
        RuleCommand::ReviseRule {
            spec: edited_spec(Layer::Team),
            by: ALICE,
            at: at(4),
        },
    )
    .await
    .then_expect_events(vec![revision_opened(2, edited_spec(Layer::Team))]);
}

#[tokio::test]
async fn revising_a_rule_that_was_never_approved_fails_with_revision_already_open() {
    when(
        vec![drafted(Layer::Team)],
        RuleCommand::ReviseRule {
            spec: edited_spec(Layer::Team),
            by: ALICE,
            at: at(4),
        },
    )
    .await
    .then_expect_error(RuleError::RevisionAlreadyOpen);
}

#[tokio::test]
async fn revising_while_the_next_revision_is_open_fails_with_revision_already_open() {
    let mut given = approved_team_rule();
    given.push(revision_opened(2, edited_spec(Layer::Team)));
    when(
        given,
        RuleCommand::ReviseRule {
            spec: edited_spec(Layer::Team),
            by: ALICE,
            at: at(5),
        },
    )
    .await
    .then_expect_error(RuleError::RevisionAlreadyOpen);
}

#[tokio::test]
async fn a_revision_cannot_change_the_layer() {
    when(
        approved_team_rule(),
        RuleCommand::ReviseRule {
            spec: edited_spec(Layer::Project),
            by: ALICE,
            at: at(4),
        },
    )
    .await
    .then_expect_error(RuleError::LayerChanged {
        from: Layer::Team,
        to: Layer::Project,
    });
}

#[tokio::test]
async fn a_revision_of_an_organization_rule_cannot_add_triggers() {
    when(
        vec![
            drafted(Layer::Organization),
            submitted(1),
            approval(1, BOB, 1, 1),
            revision_approved(1, spec(Layer::Organization), vec![BOB]),
        ],
        RuleCommand::ReviseRule {
            spec: with_triggers(spec(Layer::Organization)),
            by: ALICE,
            at: at(4),
        },
    )
    .await
    .then_expect_error(RuleError::TriggersOnlyForProjectLayer);
}

#[tokio::test]
async fn the_next_revision_goes_through_review_like_the_first() {
    let mut given = approved_team_rule();
    given.extend([revision_opened(2, edited_spec(Layer::Team)), submitted(2)]);
    when(
        given,
        RuleCommand::ApproveRule {
            approver: CAROL,
            quorum: quorum(1),
            at: at(2),
        },
    )
    .await
    .then_expect_events(vec![
        approval(2, CAROL, 1, 1),
        revision_approved(2, edited_spec(Layer::Team), vec![CAROL]),
    ]);
}

#[test]
fn the_approved_revision_stays_in_force_until_its_successor_is_approved() {
    let mut events = approved_team_rule();
    events.extend([revision_opened(2, edited_spec(Layer::Team)), submitted(2)]);
    let rule = state(events.clone());
    assert_eq!(rule.status(), Some(RuleStatus::Pending));
    assert_eq!(rule.approved().map(|a| a.number()), Some(1));
    assert_eq!(rule.approved().map(|a| a.spec()), Some(&spec(Layer::Team)));
    assert_eq!(rule.working().map(|w| w.number()), Some(2));

    events.extend([
        approval(2, DAVE, 1, 1),
        revision_approved(2, edited_spec(Layer::Team), vec![DAVE]),
    ]);
    let rule = state(events);
    assert_eq!(rule.status(), Some(RuleStatus::Approved));
    let approved = rule.approved().unwrap();
    assert_eq!(approved.number(), 2);
    assert_eq!(approved.spec(), &edited_spec(Layer::Team));
    assert_eq!(approved.approvers(), &[DAVE]);
    assert_eq!(approved.approved_at(), at(2));
    assert_eq!(approved.author(), ALICE);
    assert!(rule.working().is_none());
}

// ---- organization enforcement ----

#[tokio::test]
async fn an_organization_rule_can_be_set_to_temporary_enforcement() {
    let temporary = Enforcement::temporary(3600).unwrap();
    when(
        vec![drafted(Layer::Organization)],
        RuleCommand::SetOrganizationEnforcement {
            enforcement: temporary,
            by: BOB,
            at: at(1),
        },
    )
    .await
    .then_expect_events(vec![RuleEvent::OrganizationEnforcementSet {
        rule_id: RULE,
        enforcement: temporary,
        by: BOB,
        at: at(1),
    }]);
}

#[tokio::test]
async fn a_team_rule_has_no_organization_enforcement() {
    when(
        approved_team_rule(),
        RuleCommand::SetOrganizationEnforcement {
            enforcement: Enforcement::WARNING,
            by: BOB,
            at: at(3),
        },
    )
    .await
    .then_expect_error(RuleError::NotOrganizationLayer);
}

#[test]
fn an_organization_rule_is_enforced_by_block_from_its_draft_on() {
    let rule = state(vec![
        drafted(Layer::Organization),
        RuleEvent::OrganizationEnforcementSet {
            rule_id: RULE,
            enforcement: Enforcement::BLOCK,
            by: ALICE,
            at: at(0),
        },
    ]);
    assert_eq!(rule.organization_enforcement(), Some(Enforcement::BLOCK));
    assert_eq!(
        state(vec![drafted(Layer::Team)]).organization_enforcement(),
        None
    );
}

// ---- archiving ----

#[tokio::test]
async fn a_rule_can_be_archived_in_any_state() {
    for given in [
        vec![drafted(Layer::Team)],
        pending_team_rule(),
        rejected_team_rule(),
        approved_team_rule(),
    ] {
        when(
            given,
            RuleCommand::ArchiveRule {
                by: ALICE,
                at: at(9),
            },
        )
        .await
        .then_expect_events(vec![archived()]);
    }
}

#[tokio::test]
async fn an_archived_rule_accepts_no_further_command() {
    let mut given = approved_team_rule();
    given.push(archived());
    for command in commands_on_an_existing_rule() {
        when(given.clone(), command)
            .await
            .then_expect_error(RuleError::Archived);
    }
}

// ---- state ----

#[test]
fn status_and_version_follow_the_lifecycle() {
    let rule = Rule::default();
    assert_eq!(rule.status(), None);
    assert_eq!(rule.version(), 0);
    assert!(!rule.exists());

    let steps: Vec<(RuleEvent, RuleStatus)> = vec![
        (drafted(Layer::Team), RuleStatus::Draft),
        (submitted(1), RuleStatus::Pending),
        (rejected(1, BOB), RuleStatus::Rejected),
        (submitted(1), RuleStatus::Pending),
        (approval(1, BOB, 1, 1), RuleStatus::Pending),
        (
            revision_approved(1, spec(Layer::Team), vec![BOB]),
            RuleStatus::Approved,
        ),
        (
            revision_opened(2, edited_spec(Layer::Team)),
            RuleStatus::Draft,
        ),
        (archived(), RuleStatus::Archived),
    ];
    let mut rule = Rule::default();
    for (version, (event, status)) in (1..).zip(steps) {
        rule.apply(event);
        assert_eq!(rule.status(), Some(status));
        assert_eq!(rule.version(), version);
    }
    assert_eq!(rule.id(), Some(RULE));
    assert_eq!(rule.layer(), Some(Layer::Team));
    assert_eq!(rule.author(), Some(ALICE));
    assert_eq!(rule.created_at(), Some(at(0)));
    assert!(rule.archived());
    assert_eq!(rule.archived_at(), Some(at(9)));
}

#[test]
fn the_working_revision_lists_its_approvals_so_far() {
    let rule = state(vec![
        drafted(Layer::Organization),
        submitted(1),
        approval(1, BOB, 1, 2),
    ]);
    let working = rule.working().unwrap();
    assert_eq!(working.approvals(), &[Approval { by: BOB, at: at(2) }]);
    assert_eq!(
        working.state(),
        &WorkingState::Pending {
            submitted_by: ALICE,
            submitted_at: at(1),
            approvals: vec![Approval { by: BOB, at: at(2) }],
        }
    );
}

#[test]
fn rule_state_round_trips_through_json() {
    let mut events = approved_team_rule();
    events.extend([
        revision_opened(2, edited_spec(Layer::Team)),
        RuleEvent::RuleDraftEdited {
            rule_id: RULE,
            revision: 2,
            spec: edited_spec(Layer::Team),
            by: BOB,
            at: at(5),
        },
        submitted(2),
        rejected(2, CAROL),
    ]);
    let rule = state(events);
    let json = serde_json::to_string(&rule).unwrap();
    assert!(json.contains(r#""state":"rejected""#), "{json}");
    let back: Rule = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rule);
}
