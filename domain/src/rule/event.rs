//! What happened to a rule. Event payloads are a public, versioned contract: variants are never renamed
//! or deleted, new fields come with defaults, and each variant has a golden JSON test below.

use super::value::RuleSpec;
use crate::value::{Enforcement, Reason};
use crate::{RuleId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An event of the [`Rule`](super::Rule) aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleEvent {
    /// The rule was created with revision 1 as a draft.
    RuleDrafted {
        /// The rule.
        rule_id: RuleId,
        /// Always 1.
        revision: u32,
        /// The draft's spec.
        spec: RuleSpec,
        /// The author.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The working revision's spec was replaced (and a rejected revision went back to draft).
    RuleDraftEdited {
        /// The rule.
        rule_id: RuleId,
        /// The working revision.
        revision: u32,
        /// The new spec.
        spec: RuleSpec,
        /// The editor.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The working revision was sent to review.
    RuleSubmitted {
        /// The rule.
        rule_id: RuleId,
        /// The working revision.
        revision: u32,
        /// Who submitted it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// One reviewer approved the pending revision.
    RuleApprovalRecorded {
        /// The rule.
        rule_id: RuleId,
        /// The pending revision.
        revision: u32,
        /// The reviewer.
        approver: UserId,
        /// The number of approvals of this revision, this one included.
        approvals: u32,
        /// The number of approvals required, as the command stated it.
        quorum: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// The pending revision reached its quorum and is now the revision in force.
    RuleRevisionApproved {
        /// The rule.
        rule_id: RuleId,
        /// The revision now in force.
        revision: u32,
        /// Its spec.
        spec: RuleSpec,
        /// Who approved it, in order.
        approvers: Vec<UserId>,
        /// When it came into force.
        at: DateTime<Utc>,
    },
    /// A reviewer sent the pending revision back.
    RuleRejected {
        /// The rule.
        rule_id: RuleId,
        /// The revision sent back.
        revision: u32,
        /// The reviewer.
        reviewer: UserId,
        /// Why.
        reason: Reason,
        /// When.
        at: DateTime<Utc>,
    },
    /// A new revision was opened as a draft; the approved one stays in force.
    RuleRevisionOpened {
        /// The rule.
        rule_id: RuleId,
        /// The new revision's number.
        revision: u32,
        /// Its spec.
        spec: RuleSpec,
        /// Its author.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// How the organization-layer rule is enforced on every team.
    OrganizationEnforcementSet {
        /// The rule.
        rule_id: RuleId,
        /// The enforcement.
        enforcement: Enforcement,
        /// Who set it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The rule was archived.
    RuleArchived {
        /// The rule.
        rule_id: RuleId,
        /// Who archived it.
        by: UserId,
        /// When.
        at: DateTime<Utc>,
    },
}

domain_event! {
    RuleEvent:
    RuleDrafted RuleDraftEdited RuleSubmitted RuleApprovalRecorded RuleRevisionApproved
    RuleRejected RuleRevisionOpened OrganizationEnforcementSet RuleArchived
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{assert_golden, golden_time, uuid};
    use crate::rule::{Category, Description, PathGlob, RuleContent, RuleName, Tag};
    use crate::value::Layer;

    const RULE: RuleId = RuleId(uuid(1));
    const ALICE: UserId = UserId(uuid(0xa));
    const BOB: UserId = UserId(uuid(0xb));

    fn spec() -> RuleSpec {
        RuleSpec {
            name: RuleName::parse("No secrets").unwrap(),
            description: Description::parse("Keep credentials out").unwrap(),
            layer: Layer::Project,
            content: RuleContent::parse("Never commit secrets.\n").unwrap(),
            category: Some(Category::parse("Security").unwrap()),
            priority: 10,
            tags: [Tag::parse("security").unwrap()].into(),
            triggers: vec![PathGlob::parse("src/**/*.rs").unwrap()],
        }
    }

    #[test]
    fn rule_drafted_has_a_stable_json_shape() {
        let event = RuleEvent::RuleDrafted {
            rule_id: RULE,
            revision: 1,
            spec: spec(),
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RuleDrafted":{"rule_id":"00000000-0000-0000-0000-000000000001","revision":1,"spec":{"name":"No secrets","description":"Keep credentials out","layer":"project","content":"Never commit secrets.\n","category":"Security","priority":10,"tags":["security"],"triggers":["src/**/*.rs"]},"by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleDrafted", json);
    }

    #[test]
    fn rule_draft_edited_has_a_stable_json_shape() {
        let event = RuleEvent::RuleDraftEdited {
            rule_id: RULE,
            revision: 2,
            spec: spec(),
            by: BOB,
            at: golden_time(),
        };
        let json = r#"{"RuleDraftEdited":{"rule_id":"00000000-0000-0000-0000-000000000001","revision":2,"spec":{"name":"No secrets","description":"Keep credentials out","layer":"project","content":"Never commit secrets.\n","category":"Security","priority":10,"tags":["security"],"triggers":["src/**/*.rs"]},"by":"00000000-0000-0000-0000-00000000000b","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleDraftEdited", json);
    }

    #[test]
    fn rule_submitted_has_a_stable_json_shape() {
        let event = RuleEvent::RuleSubmitted {
            rule_id: RULE,
            revision: 1,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RuleSubmitted":{"rule_id":"00000000-0000-0000-0000-000000000001","revision":1,"by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleSubmitted", json);
    }

    #[test]
    fn rule_approval_recorded_has_a_stable_json_shape() {
        let event = RuleEvent::RuleApprovalRecorded {
            rule_id: RULE,
            revision: 1,
            approver: BOB,
            approvals: 1,
            quorum: 2,
            at: golden_time(),
        };
        let json = r#"{"RuleApprovalRecorded":{"rule_id":"00000000-0000-0000-0000-000000000001","revision":1,"approver":"00000000-0000-0000-0000-00000000000b","approvals":1,"quorum":2,"at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleApprovalRecorded", json);
    }

    #[test]
    fn rule_revision_approved_has_a_stable_json_shape() {
        let event = RuleEvent::RuleRevisionApproved {
            rule_id: RULE,
            revision: 1,
            spec: spec(),
            approvers: vec![BOB],
            at: golden_time(),
        };
        let json = r#"{"RuleRevisionApproved":{"rule_id":"00000000-0000-0000-0000-000000000001","revision":1,"spec":{"name":"No secrets","description":"Keep credentials out","layer":"project","content":"Never commit secrets.\n","category":"Security","priority":10,"tags":["security"],"triggers":["src/**/*.rs"]},"approvers":["00000000-0000-0000-0000-00000000000b"],"at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleRevisionApproved", json);
    }

    #[test]
    fn rule_rejected_has_a_stable_json_shape() {
        let event = RuleEvent::RuleRejected {
            rule_id: RULE,
            revision: 1,
            reviewer: BOB,
            reason: Reason::parse("too vague").unwrap(),
            at: golden_time(),
        };
        let json = r#"{"RuleRejected":{"rule_id":"00000000-0000-0000-0000-000000000001","revision":1,"reviewer":"00000000-0000-0000-0000-00000000000b","reason":"too vague","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleRejected", json);
    }

    #[test]
    fn rule_revision_opened_has_a_stable_json_shape() {
        let event = RuleEvent::RuleRevisionOpened {
            rule_id: RULE,
            revision: 2,
            spec: spec(),
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RuleRevisionOpened":{"rule_id":"00000000-0000-0000-0000-000000000001","revision":2,"spec":{"name":"No secrets","description":"Keep credentials out","layer":"project","content":"Never commit secrets.\n","category":"Security","priority":10,"tags":["security"],"triggers":["src/**/*.rs"]},"by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleRevisionOpened", json);
    }

    #[test]
    fn organization_enforcement_set_has_a_stable_json_shape() {
        let event = RuleEvent::OrganizationEnforcementSet {
            rule_id: RULE,
            enforcement: Enforcement::temporary(86_400).unwrap(),
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"OrganizationEnforcementSet":{"rule_id":"00000000-0000-0000-0000-000000000001","enforcement":{"mode":"temporary","temporary_timeout_secs":86400},"by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "OrganizationEnforcementSet", json);
    }

    #[test]
    fn rule_archived_has_a_stable_json_shape() {
        let event = RuleEvent::RuleArchived {
            rule_id: RULE,
            by: ALICE,
            at: golden_time(),
        };
        let json = r#"{"RuleArchived":{"rule_id":"00000000-0000-0000-0000-000000000001","by":"00000000-0000-0000-0000-00000000000a","at":"2026-01-02T03:04:05Z"}}"#;
        assert_golden(&event, "RuleArchived", json);
    }

    #[test]
    fn a_spec_written_before_optional_fields_existed_still_reads() {
        // Only the required fields: description, category, priority, tags and triggers default.
        let json = r#"{"name":"n","layer":"team","content":"c"}"#;
        let spec: RuleSpec = serde_json::from_str(json).unwrap();
        assert_eq!(spec.description.as_str(), "");
        assert_eq!(spec.category, None);
        assert!(spec.tags.is_empty() && spec.triggers.is_empty());
    }
}
