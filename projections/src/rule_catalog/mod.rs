//! The rule catalog: one [`RuleDoc`] per rule (kind `rule`, key = rule id), with the current revision's
//! spec on top for listing and searching, and every revision below for the history.
//!
//! Meta: `status` = the rule's status (`draft|pending|approved|rejected|archived`), `sort_key` = the rule
//! id (UUID v7, so creation order), no team. The fold mirrors the Rule aggregate's `apply`, but keeps
//! what the aggregate forgets (superseded revisions, earlier rejections).

mod doc;

#[cfg(test)]
mod tests;

pub use doc::{Rejection, RevisionDoc, RevisionState, RuleDoc, RuleFilter, matches};

use crate::Applied;
use crate::decode::AnyEvent;
use crate::{DocMeta, Docs, ProjectionError, RecordedEvent, inconsistent, version_of};
use chrono::{DateTime, Utc};
use edict_domain::RuleId;
use edict_domain::rule::{Approval, RuleEvent, RuleSpec, RuleStatus};
use std::collections::BTreeSet;

/// The document kind of a rule in the catalog.
pub const RULE_KIND: &str = "rule";

projection! {
    /// The rule catalog projection (`rule_catalog`).
    RuleCatalog, "rule_catalog", [Rule], apply
}

/// Applies `event`, `decoded` when it is about an aggregate this projection follows.
async fn apply(decoded: Option<AnyEvent>, event: &RecordedEvent, docs: &mut Docs<'_>) -> Applied {
    let Some(AnyEvent::Rule(rule_event)) = decoded else {
        return Ok(());
    };
    let version = version_of(event);
    let doc = match rule_event {
        RuleEvent::RuleDrafted {
            rule_id,
            revision,
            spec,
            by,
            at,
        } => {
            if docs
                .get::<RuleDoc>(RULE_KIND, &rule_id.to_string())
                .await?
                .is_some()
            {
                return Err(inconsistent(event, format!("rule {rule_id} drafted twice")));
            }
            new_doc(rule_id, revision, spec, by, at, version)
        }
        other => {
            let rule_id = rule_id_of(&other);
            let Some(mut doc) = docs.get::<RuleDoc>(RULE_KIND, &rule_id.to_string()).await? else {
                return Err(inconsistent(
                    event,
                    format!("rule {rule_id} is not in the catalog"),
                ));
            };
            fold(&mut doc, other, event)?;
            doc.version = version;
            doc
        }
    };
    let meta = DocMeta {
        team: None,
        status: Some(doc.status.as_str().to_owned()),
        sort_key: doc.id.to_string(),
    };
    docs.put(RULE_KIND, &doc.id.to_string(), meta, &doc)
}

fn rule_id_of(event: &RuleEvent) -> RuleId {
    match event {
        RuleEvent::RuleDrafted { rule_id, .. }
        | RuleEvent::RuleDraftEdited { rule_id, .. }
        | RuleEvent::RuleSubmitted { rule_id, .. }
        | RuleEvent::RuleApprovalRecorded { rule_id, .. }
        | RuleEvent::RuleRevisionApproved { rule_id, .. }
        | RuleEvent::RuleRejected { rule_id, .. }
        | RuleEvent::RuleRevisionOpened { rule_id, .. }
        | RuleEvent::OrganizationEnforcementSet { rule_id, .. }
        | RuleEvent::RuleArchived { rule_id, .. } => *rule_id,
    }
}

fn new_revision(
    number: u32,
    spec: RuleSpec,
    by: edict_domain::UserId,
    at: DateTime<Utc>,
) -> RevisionDoc {
    RevisionDoc {
        number,
        spec,
        state: RevisionState::Draft,
        author: by,
        editors: BTreeSet::new(),
        opened_at: at,
        submitted_by: None,
        submitted_at: None,
        approvals: Vec::new(),
        rejections: Vec::new(),
        approvers: Vec::new(),
        approved_at: None,
        superseded_at: None,
    }
}

fn new_doc(
    rule_id: RuleId,
    revision: u32,
    spec: RuleSpec,
    by: edict_domain::UserId,
    at: DateTime<Utc>,
    version: u64,
) -> RuleDoc {
    let mut doc = RuleDoc {
        id: rule_id,
        status: RuleStatus::Draft,
        layer: spec.layer,
        author: by,
        created_at: at,
        updated_at: at,
        name: String::new(),
        description: String::new(),
        content: String::new(),
        category: None,
        priority: 0,
        tags: Vec::new(),
        triggers: Vec::new(),
        approved_revision: None,
        working_revision: None,
        working_state: None,
        organization_enforcement: None,
        archived: false,
        archived_at: None,
        version,
        revisions: vec![new_revision(revision, spec, by, at)],
    };
    refresh(&mut doc);
    doc
}

/// The revision numbered `number`, or an inconsistency.
fn revision<'d>(
    doc: &'d mut RuleDoc,
    number: u32,
    event: &RecordedEvent,
) -> Result<&'d mut RevisionDoc, ProjectionError> {
    let id = doc.id;
    doc.revisions
        .iter_mut()
        .find(|r| r.number == number)
        .ok_or_else(|| inconsistent(event, format!("rule {id} has no revision {number}")))
}

/// Applies one event (other than `RuleDrafted`) to the document.
fn fold(
    doc: &mut RuleDoc,
    rule_event: RuleEvent,
    event: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let at = match rule_event {
        RuleEvent::RuleDrafted { at, .. } => at,
        RuleEvent::RuleDraftEdited {
            revision: number,
            spec,
            by,
            at,
            ..
        } => {
            let rev = revision(doc, number, event)?;
            rev.spec = spec;
            if by != rev.author {
                rev.editors.insert(by);
            }
            rev.state = RevisionState::Draft;
            rev.approvals.clear();
            at
        }
        RuleEvent::RuleSubmitted {
            revision: number,
            by,
            at,
            ..
        } => {
            let rev = revision(doc, number, event)?;
            rev.state = RevisionState::Pending;
            rev.submitted_by = Some(by);
            rev.submitted_at = Some(at);
            rev.approvals.clear();
            at
        }
        RuleEvent::RuleApprovalRecorded {
            revision: number,
            approver,
            at,
            ..
        } => {
            let rev = revision(doc, number, event)?;
            rev.approvals.push(Approval { by: approver, at });
            at
        }
        RuleEvent::RuleRevisionApproved {
            revision: number,
            spec,
            approvers,
            at,
            ..
        } => {
            for earlier in doc
                .revisions
                .iter_mut()
                .filter(|r| r.state == RevisionState::Approved)
            {
                earlier.state = RevisionState::Superseded;
                earlier.superseded_at = Some(at);
            }
            let rev = revision(doc, number, event)?;
            rev.spec = spec;
            rev.state = RevisionState::Approved;
            rev.approvers = approvers;
            rev.approved_at = Some(at);
            at
        }
        RuleEvent::RuleRejected {
            revision: number,
            reviewer,
            reason,
            at,
            ..
        } => {
            let rev = revision(doc, number, event)?;
            rev.state = RevisionState::Rejected;
            rev.approvals.clear();
            rev.rejections.push(Rejection {
                by: reviewer,
                reason: reason.as_str().to_owned(),
                at,
            });
            at
        }
        RuleEvent::RuleRevisionOpened {
            revision: number,
            spec,
            by,
            at,
            ..
        } => {
            if doc.revisions.iter().any(|r| r.number == number) {
                return Err(inconsistent(
                    event,
                    format!("rule {} already has a revision {number}", doc.id),
                ));
            }
            doc.revisions.push(new_revision(number, spec, by, at));
            at
        }
        RuleEvent::OrganizationEnforcementSet {
            enforcement, at, ..
        } => {
            doc.organization_enforcement = Some(enforcement);
            at
        }
        RuleEvent::RuleArchived { at, .. } => {
            doc.archived = true;
            doc.archived_at = Some(at);
            at
        }
    };
    doc.updated_at = at;
    refresh(doc);
    Ok(())
}

/// Recomputes the fields derived from the revisions: the current spec, the working and approved
/// revision numbers, and the status.
fn refresh(doc: &mut RuleDoc) {
    let working = doc.revisions.iter().rev().find(|r| r.state.is_working());
    let approved = doc
        .revisions
        .iter()
        .find(|r| r.state == RevisionState::Approved);
    doc.working_revision = working.map(|r| r.number);
    doc.working_state = working.map(|r| r.state);
    doc.approved_revision = approved.map(|r| r.number);
    doc.status = if doc.archived {
        RuleStatus::Archived
    } else {
        match working.map(|r| r.state) {
            Some(RevisionState::Draft) => RuleStatus::Draft,
            Some(RevisionState::Pending) => RuleStatus::Pending,
            Some(RevisionState::Rejected) => RuleStatus::Rejected,
            Some(RevisionState::Approved | RevisionState::Superseded) | None => {
                RuleStatus::Approved
            }
        }
    };
    if let Some(current) = working.or(approved) {
        let spec = &current.spec;
        doc.name = spec.name.as_str().to_owned();
        doc.description = spec.description.as_str().to_owned();
        doc.content = spec.content.as_str().to_owned();
        doc.category = spec.category.as_ref().map(|c| c.as_str().to_owned());
        doc.priority = spec.priority;
        doc.tags = spec.tags.iter().map(|t| t.as_str().to_owned()).collect();
        doc.triggers = spec
            .triggers
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
    }
}
