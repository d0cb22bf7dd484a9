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

#[test]
fn a_rejection_without_a_reason_cannot_even_be_expressed() {
    // RejectRule takes a Reason, and a blank reason does not parse.
    assert_eq!(
        Reason::parse("  "),
        Err(crate::ValueError::Empty { field: "reason" })
    );
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

fn draft(layer_spec: RuleSpec, minute: i64) -> RuleCommand {
    RuleCommand::DraftRule {
        rule_id: RULE,
        spec: layer_spec,
        by: ALICE,
        at: at(minute),
    }
}

fn edit(spec: RuleSpec, by: UserId, minute: i64) -> RuleCommand {
    RuleCommand::EditDraft {
        spec,
        by,
        at: at(minute),
    }
}

fn draft_edited(spec: RuleSpec, by: UserId, minute: i64) -> RuleEvent {
    RuleEvent::RuleDraftEdited {
        rule_id: RULE,
        revision: 1,
        spec,
        by,
        at: at(minute),
    }
}

fn approve(approver: UserId, quorum: NonZeroU32, minute: i64) -> RuleCommand {
    RuleCommand::ApproveRule {
        approver,
        quorum,
        at: at(minute),
    }
}

#[tokio::test]
async fn drafting_a_team_or_organization_rule_with_triggers_is_rejected() {
    let commands =
        [Layer::Team, Layer::Organization].map(|layer| draft(with_triggers(spec(layer)), 0));
    check_every(
        vec![vec![]],
        commands.into(),
        Err(RuleError::TriggersOnlyForProjectLayer),
    )
    .await;
}

#[tokio::test]
async fn every_other_command_on_a_missing_rule_fails_with_not_found() {
    let commands = commands_on_an_existing_rule();
    check_every(vec![vec![]], commands, Err(RuleError::NotFound)).await;
}

#[tokio::test]
async fn a_rule_can_be_archived_in_any_state() {
    let givens = vec![
        vec![drafted(Layer::Team)],
        pending_team_rule(),
        rejected_team_rule(),
        approved_team_rule(),
    ];
    let command = RuleCommand::ArchiveRule {
        by: ALICE,
        at: at(9),
    };
    check_every(givens, vec![command], Ok(vec![archived()])).await;
}

#[tokio::test]
async fn an_archived_rule_accepts_no_further_command() {
    let given = [approved_team_rule(), vec![archived()]].concat();
    check_every(
        vec![given],
        commands_on_an_existing_rule(),
        Err(RuleError::Archived),
    )
    .await;
}

#[tokio::test]
async fn each_command_records_its_events_or_fails() {
    use {Layer::*, RuleCommand::*, RuleError as Error};
    let (team, org) = (drafted(Team), drafted(Organization));
    let project_with_triggers = with_triggers(spec(Project));
    let block_from_the_draft_on = RuleEvent::OrganizationEnforcementSet {
        rule_id: RULE,
        enforcement: Enforcement::BLOCK,
        by: ALICE,
        at: at(0),
    };
    let project_drafted = RuleEvent::RuleDrafted {
        rule_id: RULE,
        revision: 1,
        spec: project_with_triggers.clone(),
        by: ALICE,
        at: at(0),
    };
    let edited_by_bob = [
        team.clone(),
        draft_edited(edited_spec(Team), BOB, 1),
        submitted(1),
    ];
    let org_approval_pending = [org.clone(), submitted(1), approval(1, BOB, 1, 2)];
    let org_approved = [
        org.clone(),
        submitted(1),
        approval(1, BOB, 1, 1),
        revision_approved(1, spec(Organization), vec![BOB]),
    ];
    let resubmitted = [
        org.clone(),
        submitted(1),
        approval(1, BOB, 1, 2),
        rejected(1, CAROL),
        submitted(1),
    ];
    let revision_two_open = [
        approved_team_rule(),
        vec![revision_opened(2, edited_spec(Team))],
    ]
    .concat();
    let revision_two_pending = [revision_two_open.clone(), vec![submitted(2)]].concat();
    let quorum_two = ApprovalQuorum::default().for_layer(Organization);
    let temporary = Enforcement::temporary(3600).unwrap();
    let reject = |reviewer| RejectRule {
        reviewer,
        reason: reason("too vague"),
        at: at(3),
    };
    let revise = |spec, minute| ReviseRule {
        spec,
        by: ALICE,
        at: at(minute),
    };
    let submit = |minute| SubmitRule {
        by: ALICE,
        at: at(minute),
    };
    cases! {
        // drafting
        "drafting a team rule creates revision one as a draft": [] => draft(spec(Team), 0) => Ok(vec![team.clone()]);
        "drafting an organization rule also sets block enforcement":
            [] => draft(spec(Organization), 0) => Ok(vec![org.clone(), block_from_the_draft_on]);
        "drafting a project rule with triggers is accepted":
            [] => draft(project_with_triggers, 0) => Ok(vec![project_drafted]);
        "drafting a rule that exists fails with already exists": [team.clone()] => draft(spec(Team), 1) => Err(Error::AlreadyExists);
        // editing
        "a draft can be edited":
            [team.clone()] => edit(edited_spec(Team), BOB, 1) => Ok(vec![draft_edited(edited_spec(Team), BOB, 1)]);
        "a rejected revision can be edited":
            rejected_team_rule() => edit(edited_spec(Team), ALICE, 4) => Ok(vec![draft_edited(edited_spec(Team), ALICE, 4)]);
        "a pending revision cannot be edited": pending_team_rule() => edit(edited_spec(Team), ALICE, 2) => Err(Error::NotEditable);
        "an approved revision cannot be edited":
            approved_team_rule() => edit(edited_spec(Team), ALICE, 3) => Err(Error::NotEditable);
        "an edit cannot change the layer": [team.clone()] => edit(spec(Organization), ALICE, 1)
            => Err(Error::LayerChanged { from: Team, to: Organization });
        "an edit cannot add triggers to a team rule":
            [team.clone()] => edit(with_triggers(spec(Team)), ALICE, 1) => Err(Error::TriggersOnlyForProjectLayer);
        // submitting
        "a draft can be submitted": [team.clone()] => submit(1) => Ok(vec![submitted(1)]);
        "a rejected revision can be submitted again": rejected_team_rule() => submit(1) => Ok(vec![submitted(1)]);
        "a pending revision cannot be submitted again": pending_team_rule() => submit(1) => Err(Error::NotSubmittable);
        "an approved rule without an open revision has nothing to submit":
            approved_team_rule() => submit(3) => Err(Error::NotSubmittable);
        // approving
        "an approval that reaches the quorum brings the revision into force": pending_team_rule() => approve(BOB, quorum(1), 2)
            => Ok(vec![approval(1, BOB, 1, 1), revision_approved(1, spec(Team), vec![BOB])]);
        "an approval below the quorum is only recorded":
            [org.clone(), submitted(1)] => approve(BOB, quorum_two, 2) => Ok(vec![approval(1, BOB, 1, 2)]);
        "the second approval of an organization rule brings it into force": org_approval_pending.clone()
            => approve(CAROL, quorum(2), 2)
            => Ok(vec![approval(1, CAROL, 2, 2), revision_approved(1, spec(Organization), vec![BOB, CAROL])]);
        "the author cannot approve their own revision": pending_team_rule() => approve(ALICE, quorum(1), 2) => Err(Error::SelfApproval);
        "an editor cannot approve the revision they edited": edited_by_bob => approve(BOB, quorum(1), 2) => Err(Error::SelfApproval);
        "a reviewer cannot approve the same revision twice": org_approval_pending
            => approve(BOB, quorum(2), 3) => Err(Error::AlreadyApprovedBy { approver: BOB });
        "a draft cannot be approved": [team.clone()] => approve(BOB, quorum(1), 1) => Err(Error::NotPending);
        "approvals given before a rejection do not count after resubmission":
            resubmitted => approve(BOB, quorum(2), 2) => Ok(vec![approval(1, BOB, 1, 2)]);
        // rejecting
        "a pending revision can be rejected with a reason": pending_team_rule() => reject(BOB) => Ok(vec![rejected(1, BOB)]);
        "the author may reject their own pending revision to withdraw it":
            pending_team_rule() => reject(ALICE) => Ok(vec![rejected(1, ALICE)]);
        "a draft cannot be rejected": [team.clone()] => reject(BOB) => Err(Error::NotPending);
        // revising
        "revising an approved rule opens the next revision as a draft":
            approved_team_rule() => revise(edited_spec(Team), 4) => Ok(vec![revision_opened(2, edited_spec(Team))]);
        "revising a rule that was never approved fails with revision already open":
            [team.clone()] => revise(edited_spec(Team), 4) => Err(Error::RevisionAlreadyOpen);
        "revising while the next revision is open fails with revision already open":
            revision_two_open => revise(edited_spec(Team), 5) => Err(Error::RevisionAlreadyOpen);
        "a revision cannot change the layer": approved_team_rule() => revise(edited_spec(Project), 4)
            => Err(Error::LayerChanged { from: Team, to: Project });
        "a revision of an organization rule cannot add triggers":
            org_approved => revise(with_triggers(spec(Organization)), 4) => Err(Error::TriggersOnlyForProjectLayer);
        "the next revision goes through review like the first": revision_two_pending => approve(CAROL, quorum(1), 2)
            => Ok(vec![approval(2, CAROL, 1, 1), revision_approved(2, edited_spec(Team), vec![CAROL])]);
        // organization enforcement
        "an organization rule can be set to temporary enforcement":
            [org] => SetOrganizationEnforcement { enforcement: temporary, by: BOB, at: at(1) }
            => Ok(vec![RuleEvent::OrganizationEnforcementSet { rule_id: RULE, enforcement: temporary, by: BOB, at: at(1) }]);
        "a team rule has no organization enforcement": approved_team_rule()
            => SetOrganizationEnforcement { enforcement: Enforcement::WARNING, by: BOB, at: at(3) }
            => Err(Error::NotOrganizationLayer);
    }
}
