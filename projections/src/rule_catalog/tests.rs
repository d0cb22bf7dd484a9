//! The catalog driven by real Rule events.

use super::*;
use crate::testkit::{ALICE, BOB, CAROL, Harness, Log, RULE_A, RULE_B, approved_rule, at, spec};
use edict_domain::rule::{RuleContent, Tag};
use edict_domain::{Enforcement, Layer, Reason};

fn recorded(log: &mut Log, events: Vec<RuleEvent>) -> Vec<RecordedEvent> {
    events.into_iter().map(|e| log.rule(e)).collect()
}

fn revised_spec() -> RuleSpec {
    RuleSpec {
        content: RuleContent::parse("Use the vault.\n").unwrap(),
        ..spec(Layer::Team, "No secrets")
    }
}

/// Rule A approved, then its revision 2 ([`revised_spec`]) opened and submitted by Carol.
fn revision_two_submitted() -> Vec<RuleEvent> {
    let mut events = approved_rule(RULE_A, spec(Layer::Team, "No secrets"));
    events.extend([
        RuleEvent::RuleRevisionOpened {
            rule_id: RULE_A,
            revision: 2,
            spec: revised_spec(),
            by: CAROL,
            at: at(10),
        },
        RuleEvent::RuleSubmitted {
            rule_id: RULE_A,
            revision: 2,
            by: CAROL,
            at: at(11),
        },
    ]);
    events
}

#[tokio::test]
async fn a_drafted_rule_is_listed_as_draft() {
    let mut log = Log::default();
    let events = recorded(
        &mut log,
        vec![crate::testkit::rule_drafted(
            RULE_A,
            Layer::Team,
            "No secrets",
        )],
    );
    let mut h = Harness::new();
    h.batch(&RuleCatalog, &events).await;
    let doc: RuleDoc = h.doc(RULE_KIND, RULE_A).unwrap();
    assert_eq!(doc.status, RuleStatus::Draft);
    assert_eq!(
        (doc.working_revision, doc.working_state),
        (Some(1), Some(RevisionState::Draft))
    );
    assert_eq!(doc.approved_revision, None);
    assert_eq!(doc.name, "No secrets");
    assert_eq!(doc.tags, vec!["practice".to_owned()]);
    assert_eq!((doc.author, doc.created_at, doc.version), (ALICE, at(1), 1));
    assert_eq!(
        h.meta(RULE_KIND, RULE_A).unwrap(),
        DocMeta {
            team: None,
            status: Some("draft".into()),
            sort_key: RULE_A.to_string()
        }
    );
}

#[tokio::test]
async fn a_new_revision_is_shown_while_the_approved_one_stays_in_force() {
    let mut log = Log::default();
    let mut events = revision_two_submitted();
    events.extend([RuleEvent::RuleRejected {
        rule_id: RULE_A,
        revision: 2,
        reviewer: BOB,
        reason: Reason::parse("too short").unwrap(),
        at: at(12),
    }]);
    let events = recorded(&mut log, events);
    let mut h = Harness::new();
    h.batch(&RuleCatalog, &events).await;
    let doc: RuleDoc = h.doc(RULE_KIND, RULE_A).unwrap();
    assert_eq!(doc.status, RuleStatus::Rejected);
    assert_eq!(doc.approved_revision, Some(1));
    assert_eq!(
        (doc.working_revision, doc.working_state),
        (Some(2), Some(RevisionState::Rejected))
    );
    assert_eq!(
        doc.content, "Use the vault.\n",
        "the working revision is the current one"
    );
    assert_eq!(doc.revisions.len(), 2);
    assert_eq!(doc.revisions[0].state, RevisionState::Approved);
    assert_eq!(doc.revisions[0].approvers, vec![BOB]);
    assert_eq!(doc.revisions[1].rejections[0].reason, "too short");
    assert_eq!((doc.version, doc.updated_at), (7, at(12)));
}

#[tokio::test]
async fn approving_a_later_revision_supersedes_the_earlier_one() {
    let mut log = Log::default();
    let mut events = revision_two_submitted();
    events.extend([
        RuleEvent::RuleApprovalRecorded {
            rule_id: RULE_A,
            revision: 2,
            approver: BOB,
            approvals: 1,
            quorum: 1,
            at: at(12),
        },
        RuleEvent::RuleRevisionApproved {
            rule_id: RULE_A,
            revision: 2,
            spec: revised_spec(),
            approvers: vec![BOB],
            at: at(12),
        },
    ]);
    let events = recorded(&mut log, events);
    let mut h = Harness::new();
    // Two batches, as the live runner would apply them.
    h.batch(&RuleCatalog, &events[..5]).await;
    h.batch(&RuleCatalog, &events[5..]).await;
    let doc: RuleDoc = h.doc(RULE_KIND, RULE_A).unwrap();
    assert_eq!(doc.status, RuleStatus::Approved);
    assert_eq!(
        (doc.approved_revision, doc.working_revision),
        (Some(2), None)
    );
    let states: Vec<_> = doc.revisions.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        vec![RevisionState::Superseded, RevisionState::Approved]
    );
    assert_eq!(doc.revisions[0].superseded_at, Some(at(12)));
    assert_eq!(doc.revisions[1].approvals.len(), 1);
    assert_eq!(doc.content, "Use the vault.\n");
}

#[tokio::test]
async fn an_organization_rule_shows_its_enforcement_and_archiving() {
    let mut log = Log::default();
    let mut events = approved_rule(RULE_B, spec(Layer::Organization, "Be kind"));
    events.extend([
        RuleEvent::OrganizationEnforcementSet {
            rule_id: RULE_B,
            enforcement: Enforcement::WARNING,
            by: ALICE,
            at: at(20),
        },
        RuleEvent::RuleArchived {
            rule_id: RULE_B,
            by: ALICE,
            at: at(21),
        },
    ]);
    let events = recorded(&mut log, events);
    let mut h = Harness::new();
    h.batch(&RuleCatalog, &events).await;
    let doc: RuleDoc = h.doc(RULE_KIND, RULE_B).unwrap();
    assert_eq!(doc.organization_enforcement, Some(Enforcement::WARNING));
    assert_eq!(doc.status, RuleStatus::Archived);
    assert_eq!((doc.archived, doc.archived_at), (true, Some(at(21))));
    assert_eq!(
        h.meta(RULE_KIND, RULE_B).unwrap().status.as_deref(),
        Some("archived")
    );
}

#[tokio::test]
async fn an_event_about_an_unknown_rule_is_inconsistent() {
    let mut log = Log::default();
    let events = recorded(
        &mut log,
        vec![RuleEvent::RuleSubmitted {
            rule_id: RULE_A,
            revision: 1,
            by: ALICE,
            at: at(1),
        }],
    );
    let err = crate::replay(&RuleCatalog, &events).await.unwrap_err();
    assert!(
        matches!(err, ProjectionError::Inconsistent { .. }),
        "{err:?}"
    );
}

fn listed(name: &str, layer: Layer, status: RuleStatus, tags: &[&str]) -> RuleDoc {
    let mut spec = spec(layer, name);
    spec.tags = tags.iter().map(|t| Tag::parse(t).unwrap()).collect();
    let mut doc = new_doc(RULE_A, 1, spec, ALICE, at(0), 1);
    doc.status = status;
    doc
}

#[test]
fn the_filter_combines_status_layer_tag_and_text() {
    let doc = listed(
        "No Secrets",
        Layer::Team,
        RuleStatus::Approved,
        &["security", "git"],
    );
    let all = RuleFilter::default();
    assert!(matches(&doc, &all));
    assert!(matches(
        &doc,
        &RuleFilter {
            status: Some(RuleStatus::Approved),
            layer: Some(Layer::Team),
            tag: Some("git".into()),
            text: Some("SECRET".into()),
        }
    ));
    assert!(!matches(
        &doc,
        &RuleFilter {
            status: Some(RuleStatus::Draft),
            ..RuleFilter::default()
        }
    ));
    assert!(!matches(
        &doc,
        &RuleFilter {
            layer: Some(Layer::Project),
            ..RuleFilter::default()
        }
    ));
    assert!(!matches(
        &doc,
        &RuleFilter {
            tag: Some("secur".into()),
            ..RuleFilter::default()
        }
    ));
    assert!(!matches(
        &doc,
        &RuleFilter {
            text: Some("vault".into()),
            ..RuleFilter::default()
        }
    ));
}

#[test]
fn text_search_looks_at_description_content_and_tags() {
    let doc = listed("Rule", Layer::Team, RuleStatus::Draft, &["security"]);
    for text in ["what it is FOR", "do it.", "SECUR", "rule"] {
        assert!(
            matches(
                &doc,
                &RuleFilter {
                    text: Some(text.into()),
                    ..RuleFilter::default()
                }
            ),
            "{text}"
        );
    }
}
