//! Team rule sets driven by real Rule and Team events: what each team receives, and when its revision
//! moves.

use super::*;
use crate::ruleset::{RuleSetDoc, enforcement_mode};
use edict_api::ruleset::RULE_END_MARKER as END;

/// The marker line of a rule at revision 1.
fn marker(rule: RuleId) -> String {
    edict_api::ruleset::rule_marker(rule.0, 1)
}
use crate::testkit::{
    ALICE, BOB, CAROL, Harness, Log, RULE_A, RULE_B, RULE_C, TEAM_A, TEAM_B, approved_rule, at,
    attached, spec, team_created,
};
use crate::{DocKey, RULESET_KIND};
use edict_domain::EnforcementMode;
use edict_domain::rule::{Category, RuleContent, RuleSpec};
use edict_domain::team::TeamName;

/// Applies events one batch per event, remembering which rule sets each one wrote.
struct Scenario {
    log: Log,
    h: Harness,
}

impl Scenario {
    fn new() -> Self {
        Scenario {
            log: Log::default(),
            h: Harness::new(),
        }
    }

    /// Applies the rule events as one batch; returns the teams whose rule set was written.
    async fn rule(&mut self, events: Vec<RuleEvent>) -> Vec<String> {
        let recorded: Vec<_> = events.into_iter().map(|e| self.log.rule(e)).collect();
        written(self.h.batch(&TeamRulesets, &recorded).await)
    }

    async fn team(&mut self, event: TeamEvent) -> Vec<String> {
        let recorded = self.log.team(event);
        written(self.h.batch(&TeamRulesets, &[recorded]).await)
    }

    fn ruleset(&self, team: TeamId) -> RuleSetDoc {
        self.h.doc(RULESET_KIND, team).unwrap()
    }

    fn revision(&self, team: TeamId) -> u64 {
        self.ruleset(team).revision
    }
}

fn written(keys: Vec<DocKey>) -> Vec<String> {
    keys.into_iter()
        .filter(|(kind, _)| kind == RULESET_KIND)
        .map(|(_, key)| key)
        .collect()
}

fn revised(layer: Layer, name: &str, content: &str) -> RuleSpec {
    RuleSpec {
        content: RuleContent::parse(content).unwrap(),
        ..spec(layer, name)
    }
}

/// The events that open, submit and approve revision `n` of a rule with `spec`.
fn approve_revision(rule_id: RuleId, n: u32, spec: RuleSpec) -> Vec<RuleEvent> {
    vec![
        RuleEvent::RuleRevisionOpened {
            rule_id,
            revision: n,
            spec: spec.clone(),
            by: CAROL,
            at: at(30),
        },
        RuleEvent::RuleSubmitted {
            rule_id,
            revision: n,
            by: CAROL,
            at: at(31),
        },
        RuleEvent::RuleApprovalRecorded {
            rule_id,
            revision: n,
            approver: BOB,
            approvals: 1,
            quorum: 1,
            at: at(32),
        },
        RuleEvent::RuleRevisionApproved {
            rule_id,
            revision: n,
            spec,
            approvers: vec![BOB],
            at: at(32),
        },
    ]
}

#[tokio::test]
async fn a_new_team_gets_the_organization_rules_at_revision_1() {
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Organization, "Be kind")))
        .await;
    let written = s.team(team_created(TEAM_A, "Platform")).await;
    assert_eq!(written, vec![TEAM_A.to_string()]);
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, 1);
    assert_eq!(doc.team_name, "Platform");
    assert!(!doc.archived);
    assert_eq!(doc.layers.organization.rules.len(), 1);
    let rule = &doc.layers.organization.rules[0];
    assert_eq!(
        (
            RuleId(rule.rule_id),
            rule.revision,
            enforcement_mode(rule.mode)
        ),
        (RULE_A, 1, EnforcementMode::Block)
    );
    assert_eq!(
        doc.layers.organization.text,
        format!(
            "## Practice\n\n{}\n### Be kind\n\nBe kind: do it.\n{END}\n",
            marker(RULE_A)
        )
    );
    assert!(doc.layers.team.rules.is_empty() && doc.layers.team.text.is_empty());
    assert_eq!(doc.hash, doc.layers.hash());
    assert_eq!(
        s.h.meta(RULESET_KIND, TEAM_A).unwrap(),
        DocMeta {
            team: Some(TEAM_A.to_string()),
            status: Some("active".into()),
            sort_key: TEAM_A.to_string(),
        }
    );
}

#[tokio::test]
async fn a_team_without_rules_starts_at_revision_1_too() {
    let mut s = Scenario::new();
    s.team(team_created(TEAM_A, "Platform")).await;
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, 1);
    assert!(doc.layers.is_empty());
    assert_eq!((doc.updated_at, doc.position), (s.log_recorded_at(1), 1));
}

impl Scenario {
    /// The `recorded_at` the log gave the event at `position`.
    fn log_recorded_at(&self, position: i64) -> chrono::DateTime<chrono::Utc> {
        at(0) + chrono::TimeDelta::seconds(position)
    }
}

#[tokio::test]
async fn attaching_detaching_and_changing_enforcement_each_bump_the_revision_once() {
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Team, "Small commits")))
        .await;
    s.team(team_created(TEAM_A, "Platform")).await;
    assert_eq!(s.revision(TEAM_A), 1);

    let written = s
        .team(attached(TEAM_A, RULE_A, Layer::Team, Enforcement::BLOCK))
        .await;
    assert_eq!(written, vec![TEAM_A.to_string()]);
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, 2);
    assert_eq!(
        enforcement_mode(doc.layers.team.rules[0].mode),
        EnforcementMode::Block
    );
    assert_eq!(doc.position, 6, "the attach is the sixth event of the log");

    s.team(TeamEvent::EnforcementChanged {
        team_id: TEAM_A,
        rule_id: RULE_A,
        enforcement: Enforcement::temporary(3600).unwrap(),
        by: ALICE,
        at: at(6),
    })
    .await;
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, 3);
    let rule = &doc.layers.team.rules[0];
    assert_eq!(
        (enforcement_mode(rule.mode), rule.temporary_timeout_secs),
        (EnforcementMode::Temporary, Some(3600))
    );

    s.team(TeamEvent::RuleDetached {
        team_id: TEAM_A,
        rule_id: RULE_A,
        by: ALICE,
        at: at(7),
    })
    .await;
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, 4);
    assert!(doc.layers.is_empty());
}

#[tokio::test]
async fn work_on_a_later_revision_changes_nothing_until_it_is_approved() {
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Team, "Small commits")))
        .await;
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(attached(TEAM_A, RULE_A, Layer::Team, Enforcement::BLOCK))
        .await;
    let before = s.ruleset(TEAM_A);

    let new_spec = revised(
        Layer::Team,
        "Small commits",
        "Keep each commit under 200 lines.\n",
    );
    let mut steps = approve_revision(RULE_A, 2, new_spec.clone());
    let approved = steps.pop().unwrap();
    let edited = RuleEvent::RuleDraftEdited {
        rule_id: RULE_A,
        revision: 2,
        spec: new_spec.clone(),
        by: BOB,
        at: at(30),
    };
    let rejected = RuleEvent::RuleRejected {
        rule_id: RULE_A,
        revision: 2,
        reviewer: ALICE,
        reason: edict_domain::Reason::parse("not yet").unwrap(),
        at: at(31),
    };
    for event in [
        steps[0].clone(),
        edited,
        steps[1].clone(),
        rejected,
        steps[1].clone(),
        steps[2].clone(),
    ] {
        assert!(
            s.rule(vec![event]).await.is_empty(),
            "no rule set is written"
        );
    }
    assert_eq!(s.ruleset(TEAM_A), before);

    let written = s.rule(vec![approved]).await;
    assert_eq!(written, vec![TEAM_A.to_string()]);
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, before.revision + 1);
    assert_eq!(
        doc.layers.team.rules[0].revision, 2,
        "the attachment's revision is only a record"
    );
    assert_eq!(
        doc.layers.team.rules[0].content,
        "Keep each commit under 200 lines.\n"
    );
    assert_ne!(doc.hash, before.hash);
}

#[tokio::test]
async fn approving_an_organization_rule_bumps_every_active_team() {
    let mut s = Scenario::new();
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(team_created(TEAM_B, "Payments")).await;
    s.team(TeamEvent::TeamArchived {
        team_id: TEAM_B,
        by: ALICE,
        at: at(2),
    })
    .await;
    let archived_before = s.ruleset(TEAM_B);

    let written = s
        .rule(approved_rule(RULE_A, spec(Layer::Organization, "Be kind")))
        .await;
    assert_eq!(
        written,
        vec![TEAM_A.to_string()],
        "an archived team receives nothing"
    );
    assert_eq!(s.revision(TEAM_A), 2);
    assert_eq!(s.ruleset(TEAM_B), archived_before);

    // The enforcement set on the rule applies to every team.
    s.rule(vec![RuleEvent::OrganizationEnforcementSet {
        rule_id: RULE_A,
        enforcement: Enforcement::WARNING,
        by: ALICE,
        at: at(40),
    }])
    .await;
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, 3);
    assert_eq!(
        enforcement_mode(doc.layers.organization.rules[0].mode),
        EnforcementMode::Warning
    );

    // Setting the same enforcement again changes nothing.
    let again = s
        .rule(vec![RuleEvent::OrganizationEnforcementSet {
            rule_id: RULE_A,
            enforcement: Enforcement::WARNING,
            by: ALICE,
            at: at(41),
        }])
        .await;
    assert!(again.is_empty());
    assert_eq!(s.revision(TEAM_A), 3);
}

#[tokio::test]
async fn an_organization_enforcement_set_on_a_draft_changes_no_team() {
    let mut s = Scenario::new();
    s.team(team_created(TEAM_A, "Platform")).await;
    let mut events = approved_rule(RULE_A, spec(Layer::Organization, "Be kind"));
    events.truncate(2); // drafted, enforcement set to block
    events.push(RuleEvent::OrganizationEnforcementSet {
        rule_id: RULE_A,
        enforcement: Enforcement::WARNING,
        by: ALICE,
        at: at(2),
    });
    assert!(s.rule(events).await.is_empty());
    assert_eq!(s.revision(TEAM_A), 1);
}

#[tokio::test]
async fn archiving_a_rule_drops_it_from_every_team() {
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Organization, "Be kind")))
        .await;
    s.rule(approved_rule(RULE_B, spec(Layer::Project, "Rust style")))
        .await;
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(team_created(TEAM_B, "Payments")).await;
    s.team(attached(TEAM_A, RULE_B, Layer::Project, Enforcement::BLOCK))
        .await;
    assert_eq!((s.revision(TEAM_A), s.revision(TEAM_B)), (2, 1));

    let written = s
        .rule(vec![RuleEvent::RuleArchived {
            rule_id: RULE_B,
            by: ALICE,
            at: at(50),
        }])
        .await;
    assert_eq!(
        written,
        vec![TEAM_A.to_string()],
        "only the team it is attached to"
    );
    assert_eq!(s.revision(TEAM_A), 3);
    assert!(s.ruleset(TEAM_A).layers.project.rules.is_empty());

    let mut written = s
        .rule(vec![RuleEvent::RuleArchived {
            rule_id: RULE_A,
            by: ALICE,
            at: at(51),
        }])
        .await;
    written.sort();
    let mut both = vec![TEAM_A.to_string(), TEAM_B.to_string()];
    both.sort();
    assert_eq!(written, both);
    assert!(s.ruleset(TEAM_A).layers.is_empty());
    assert_eq!((s.revision(TEAM_A), s.revision(TEAM_B)), (4, 2));
}

#[tokio::test]
async fn renaming_a_team_rewrites_its_rule_set_without_a_new_revision() {
    let mut s = Scenario::new();
    s.team(team_created(TEAM_A, "Platform")).await;
    let before = s.ruleset(TEAM_A);
    let written = s
        .team(TeamEvent::TeamRenamed {
            team_id: TEAM_A,
            name: TeamName::parse("Platform Core").unwrap(),
            by: ALICE,
            at: at(3),
        })
        .await;
    assert_eq!(written, vec![TEAM_A.to_string()]);
    let after = s.ruleset(TEAM_A);
    assert_eq!(after.team_name, "Platform Core");
    assert_eq!(
        (after.revision, &after.hash, after.position),
        (before.revision, &before.hash, before.position)
    );
}

#[tokio::test]
async fn membership_changes_do_not_touch_rule_sets() {
    let mut s = Scenario::new();
    s.team(team_created(TEAM_A, "Platform")).await;
    let written = s
        .team(TeamEvent::MemberAdded {
            team_id: TEAM_A,
            user: BOB,
            role: edict_domain::team::TeamRole::Member,
            by: ALICE,
            at: at(3),
        })
        .await;
    assert!(written.is_empty());
}

#[tokio::test]
async fn an_archived_team_keeps_an_empty_rule_set_marked_archived() {
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Organization, "Be kind")))
        .await;
    s.rule(approved_rule(RULE_B, spec(Layer::Team, "Small commits")))
        .await;
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(attached(TEAM_A, RULE_B, Layer::Team, Enforcement::BLOCK))
        .await;
    s.team(TeamEvent::TeamArchived {
        team_id: TEAM_A,
        by: ALICE,
        at: at(9),
    })
    .await;
    let doc = s.ruleset(TEAM_A);
    assert!(doc.archived);
    assert!(doc.layers.is_empty());
    assert_eq!(doc.revision, 3);
    assert_eq!(
        s.h.meta(RULESET_KIND, TEAM_A).unwrap().status.as_deref(),
        Some("archived")
    );

    // Later approvals of its former rules do not reach it.
    let written = s
        .rule(approve_revision(
            RULE_B,
            2,
            revised(Layer::Team, "Small commits", "Smaller.\n"),
        ))
        .await;
    assert!(written.is_empty());
}

#[tokio::test]
async fn an_archived_team_without_rules_is_marked_without_a_new_revision() {
    let mut s = Scenario::new();
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(TeamEvent::TeamArchived {
        team_id: TEAM_A,
        by: ALICE,
        at: at(9),
    })
    .await;
    let doc = s.ruleset(TEAM_A);
    assert!(doc.archived);
    assert_eq!(doc.revision, 1, "the content did not change");
}

#[tokio::test]
async fn the_three_layers_render_with_their_rules_in_order() {
    let mut s = Scenario::new();
    let security = |mut spec: RuleSpec, priority| {
        spec.category = Some(Category::parse("Security").unwrap());
        spec.priority = priority;
        spec
    };
    s.rule(approved_rule(
        RULE_A,
        security(spec(Layer::Organization, "No secrets"), 5),
    ))
    .await;
    s.rule(approved_rule(
        RULE_B,
        security(spec(Layer::Project, "Scan deps"), 9),
    ))
    .await;
    let mut uncategorized = spec(Layer::Project, "Readme");
    uncategorized.category = None;
    uncategorized.triggers = Vec::new();
    s.rule(approved_rule(RULE_C, uncategorized)).await;
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(attached(
        TEAM_A,
        RULE_B,
        Layer::Project,
        Enforcement::WARNING,
    ))
    .await;
    s.team(attached(TEAM_A, RULE_C, Layer::Project, Enforcement::BLOCK))
        .await;
    let doc = s.ruleset(TEAM_A);
    assert_eq!(
        doc.layers.organization.text,
        format!(
            "## Security\n\n{}\n### No secrets\n\nNo secrets: do it.\n{END}\n",
            marker(RULE_A)
        )
    );
    assert_eq!(
        doc.layers.project.text,
        format!(
            "## General\n\n{}\n### Readme\n\nReadme: do it.\n{END}\n\n## Security\n\n{}\n### Scan deps\n\n\
             Applies to: `src/**`\n\nScan deps: do it.\n{END}\n",
            marker(RULE_C),
            marker(RULE_B)
        )
    );
    let ids: Vec<_> = doc
        .layers
        .project
        .rules
        .iter()
        .map(|r| RuleId(r.rule_id))
        .collect();
    assert_eq!(ids, vec![RULE_C, RULE_B]);
    assert_eq!(
        doc.layers.project.rules[1].triggers,
        vec!["src/**".to_owned()]
    );
    assert_eq!(doc.revision, 3);
}

#[tokio::test]
async fn teams_with_the_same_rules_have_the_same_hash() {
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Team, "Small commits")))
        .await;
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(team_created(TEAM_B, "Payments")).await;
    assert_eq!(s.ruleset(TEAM_A).hash, s.ruleset(TEAM_B).hash);
    s.team(attached(TEAM_A, RULE_A, Layer::Team, Enforcement::BLOCK))
        .await;
    assert_ne!(s.ruleset(TEAM_A).hash, s.ruleset(TEAM_B).hash);
    s.team(attached(TEAM_B, RULE_A, Layer::Team, Enforcement::BLOCK))
        .await;
    assert_eq!(s.ruleset(TEAM_A).hash, s.ruleset(TEAM_B).hash);
}

#[tokio::test]
async fn an_event_about_a_team_never_created_is_inconsistent() {
    let mut log = Log::default();
    let event = log.team(attached(TEAM_A, RULE_A, Layer::Team, Enforcement::BLOCK));
    let err = crate::replay(&TeamRulesets, &[event]).await.unwrap_err();
    assert!(
        matches!(err, ProjectionError::Inconsistent { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stored_rule_set_whose_hash_is_not_that_of_its_rules_gets_a_new_revision() {
    // A rule set an older renderer wrote: its text and hash are not what its rules render to now. The
    // next recompute finds the hash changed, as it would comparing hashes.
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Team, "Small commits")))
        .await;
    s.team(team_created(TEAM_A, "Platform")).await;
    s.team(attached(TEAM_A, RULE_A, Layer::Team, Enforcement::BLOCK))
        .await;
    let current = s.ruleset(TEAM_A);
    let key = (RULESET_KIND.to_owned(), TEAM_A.to_string());
    let mut old = current.clone();
    old.layers.team.text = "## Old renderer\n".into();
    old.hash = old.layers.hash();
    s.h.store.0.get_mut(&key).unwrap().doc = serde_json::to_value(&old).unwrap();

    // Setting the enforcement it has changes no rule: still a new revision, with today's rendering.
    let written = s
        .team(TeamEvent::EnforcementChanged {
            team_id: TEAM_A,
            rule_id: RULE_A,
            enforcement: Enforcement::BLOCK,
            by: ALICE,
            at: at(8),
        })
        .await;
    assert_eq!(written, vec![TEAM_A.to_string()]);
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, current.revision + 1);
    assert_eq!(doc.layers, current.layers);
    assert_eq!(doc.hash, current.hash);
    assert_eq!(doc.position, 7);

    // Now it is current: the same event again writes nothing, and a rename keeps the revision.
    let written = s
        .team(TeamEvent::EnforcementChanged {
            team_id: TEAM_A,
            rule_id: RULE_A,
            enforcement: Enforcement::BLOCK,
            by: ALICE,
            at: at(9),
        })
        .await;
    assert!(written.is_empty());
    s.team(TeamEvent::TeamRenamed {
        team_id: TEAM_A,
        name: TeamName::parse("Platform Core").unwrap(),
        by: ALICE,
        at: at(10),
    })
    .await;
    let renamed = s.ruleset(TEAM_A);
    assert_eq!(
        (renamed.revision, &renamed.hash, renamed.position),
        (doc.revision, &doc.hash, doc.position)
    );
    assert_eq!(renamed.team_name, "Platform Core");
}

#[tokio::test]
async fn a_batch_writes_each_rule_set_once_with_one_revision_per_change() {
    let mut s = Scenario::new();
    s.rule(approved_rule(RULE_A, spec(Layer::Team, "Small commits")))
        .await;
    s.rule(approved_rule(RULE_B, spec(Layer::Project, "Rust style")))
        .await;
    s.team(team_created(TEAM_A, "Platform")).await;
    assert_eq!(s.revision(TEAM_A), 1);
    // Three content changes and a rename in one batch: one write, three revisions.
    let events: Vec<_> = [
        attached(TEAM_A, RULE_A, Layer::Team, Enforcement::BLOCK),
        attached(TEAM_A, RULE_B, Layer::Project, Enforcement::WARNING),
        TeamEvent::TeamRenamed {
            team_id: TEAM_A,
            name: TeamName::parse("Platform Core").unwrap(),
            by: ALICE,
            at: at(6),
        },
        TeamEvent::RuleDetached {
            team_id: TEAM_A,
            rule_id: RULE_A,
            by: ALICE,
            at: at(7),
        },
    ]
    .into_iter()
    .map(|e| s.log.team(e))
    .collect();
    let written = s.h.batch(&TeamRulesets, &events).await;
    assert_eq!(
        written
            .iter()
            .filter(|(kind, _)| kind == RULESET_KIND)
            .count(),
        1
    );
    let doc = s.ruleset(TEAM_A);
    assert_eq!(doc.revision, 4);
    assert_eq!(doc.team_name, "Platform Core");
    assert_eq!(doc.position, events[3].global_position);
    assert_eq!(doc.hash, doc.layers.hash());
    assert!(doc.layers.team.rules.is_empty());
    assert_eq!(RuleId(doc.layers.project.rules[0].rule_id), RULE_B);
}
