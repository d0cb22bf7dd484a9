//! The change inbox: one [`ChangeRequestDoc`] per change request (kind `change_request`, key = its id;
//! meta: team = its team, status = its status as the aggregate names it, sort key = its id, UUID v7 so
//! opening order). Team admins list their team's pending requests from it; agents and developers
//! follow the decisions. The fold mirrors the ChangeRequest aggregate's `apply`.

pub mod decision;

use crate::Applied;
use crate::decode::AnyEvent;
use crate::{DocMeta, Docs, RecordedEvent, inconsistent, version_of};
use chrono::{DateTime, Utc};
use edict_domain::change_request::{
    ChangeRequestEvent, ChangeRequestStatus, Decision, ExceptionRequest, ExceptionResolution,
};
use edict_domain::{AgentId, ChangeRequestId, Layer, RuleId, TeamId, UserId};
use serde::{Deserialize, Serialize};

/// The document kind of a change request.
pub const CHANGE_REQUEST_KIND: &str = "change_request";

/// A change request as the inbox shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequestDoc {
    /// The change request.
    pub id: ChangeRequestId,
    /// The agent that reported the edit.
    pub agent: AgentId,
    /// The developer who made the edit (the requester).
    pub user: UserId,
    /// The team whose rule set the edited section belongs to.
    pub team: TeamId,
    /// The rule whose text was edited.
    pub rule: RuleId,
    /// The edited file, as the agent reported it.
    pub file: String,
    /// The layer of the edited section.
    pub layer: Layer,
    /// SHA-256 of the section as Edict wrote it (what a revert restores).
    pub original_hash: String,
    /// SHA-256 of the section as last edited.
    pub new_hash: String,
    /// The last reported edit, as a unified diff.
    pub diff: String,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// When the change is reverted if nobody decides.
    pub timeout_at: DateTime<Utc>,
    /// Where it is in its life.
    pub status: ChangeRequestStatus,
    /// How the pending phase ended (approval, rejection, automatic revert, withdrawal), once it has:
    /// `by` (absent for an automatic revert), `reason` (for a rejection), `at`.
    pub decision: Option<Decision>,
    /// Every exception asked for afterwards, oldest first, each with its `kind` (`time_limited` with
    /// `until`, or `permanent`) and its `resolution` (granted with `until`, or denied with a reason).
    pub exceptions: Vec<ExceptionRequest>,
    /// The ids of the agent reports folded into it, oldest first.
    pub report_ids: Vec<String>,
    /// The change request aggregate's version: the sequence of the last event applied.
    pub version: u64,
    /// When the last event about it happened (its `at`).
    pub updated_at: DateTime<Utc>,
}

projection! {
    /// The change inbox projection (`change_inbox`).
    ChangeInbox, "change_inbox", [ChangeRequest], apply
}

/// Applies `event`, `decoded` when it is about an aggregate this projection follows.
async fn apply(decoded: Option<AnyEvent>, event: &RecordedEvent, docs: &mut Docs<'_>) -> Applied {
    let Some(AnyEvent::ChangeRequest(cr_event)) = decoded else {
        return Ok(());
    };
    let mut doc = match cr_event {
        ChangeRequestEvent::ChangeRequestOpened {
            change_request_id,
            agent,
            user,
            team,
            rule,
            file,
            layer,
            original_hash,
            new_hash,
            diff,
            timeout_at,
            report_id,
            at,
        } => {
            let key = change_request_id.to_string();
            if docs
                .get::<ChangeRequestDoc>(CHANGE_REQUEST_KIND, &key)
                .await?
                .is_some()
            {
                return Err(inconsistent(
                    event,
                    format!("change request {key} opened twice"),
                ));
            }
            ChangeRequestDoc {
                id: change_request_id,
                agent,
                user,
                team,
                rule,
                file: file.as_str().to_owned(),
                layer,
                original_hash: original_hash.as_str().to_owned(),
                new_hash: new_hash.as_str().to_owned(),
                diff: diff.as_str().to_owned(),
                opened_at: at,
                timeout_at,
                status: ChangeRequestStatus::Pending,
                decision: None,
                exceptions: Vec::new(),
                report_ids: vec![report_id.as_str().to_owned()],
                version: 0,
                updated_at: at,
            }
        }
        other => {
            let key = id_of(&other).to_string();
            let Some(mut doc) = docs
                .get::<ChangeRequestDoc>(CHANGE_REQUEST_KIND, &key)
                .await?
            else {
                return Err(inconsistent(
                    event,
                    format!("change request {key} is not in the inbox"),
                ));
            };
            fold(&mut doc, other);
            doc
        }
    };
    doc.version = version_of(event);
    let key = doc.id.to_string();
    let meta = DocMeta {
        team: Some(doc.team.to_string()),
        status: Some(doc.status.as_str().to_owned()),
        sort_key: key.clone(),
    };
    docs.put(CHANGE_REQUEST_KIND, &key, meta, &doc)
}

fn id_of(event: &ChangeRequestEvent) -> ChangeRequestId {
    use ChangeRequestEvent as Ev;
    match event {
        Ev::ChangeRequestOpened {
            change_request_id, ..
        }
        | Ev::ChangeRequestAmended {
            change_request_id, ..
        }
        | Ev::ChangeApproved {
            change_request_id, ..
        }
        | Ev::ChangeRejected {
            change_request_id, ..
        }
        | Ev::ChangeAutoReverted {
            change_request_id, ..
        }
        | Ev::ExceptionRequested {
            change_request_id, ..
        }
        | Ev::ExceptionGranted {
            change_request_id, ..
        }
        | Ev::ExceptionDenied {
            change_request_id, ..
        }
        | Ev::ChangeRequestWithdrawn {
            change_request_id, ..
        } => *change_request_id,
    }
}

/// Applies one event (other than the opening) to the document, as the aggregate does.
fn fold(doc: &mut ChangeRequestDoc, event: ChangeRequestEvent) {
    use ChangeRequestEvent as Ev;
    use ChangeRequestStatus as S;
    doc.updated_at = match event {
        Ev::ChangeRequestOpened { at, .. } => at,
        Ev::ChangeRequestAmended {
            new_hash,
            diff,
            report_id,
            at,
            ..
        } => {
            doc.new_hash = new_hash.as_str().to_owned();
            doc.diff = diff.as_str().to_owned();
            doc.report_ids.push(report_id.as_str().to_owned());
            at
        }
        Ev::ChangeApproved { by, at, .. } => {
            decided(doc, S::Approved, Some(by), None, at);
            at
        }
        Ev::ChangeRejected { by, reason, at, .. } => {
            decided(doc, S::Rejected, Some(by), Some(reason), at);
            at
        }
        Ev::ChangeAutoReverted { at, .. } => {
            decided(doc, S::AutoReverted, None, None, at);
            at
        }
        Ev::ChangeRequestWithdrawn { by, at, .. } => {
            decided(doc, S::Withdrawn, Some(by), None, at);
            at
        }
        Ev::ExceptionRequested {
            exception_id,
            by,
            justification,
            kind,
            at,
            ..
        } => {
            doc.status = S::ExceptionRequested;
            doc.exceptions.push(ExceptionRequest {
                id: exception_id,
                requested_by: by,
                justification,
                kind,
                requested_at: at,
                resolution: None,
            });
            at
        }
        Ev::ExceptionGranted { by, until, at, .. } => {
            resolve(
                doc,
                S::ExceptionGranted,
                ExceptionResolution::Granted { by, until, at },
            );
            at
        }
        Ev::ExceptionDenied { by, reason, at, .. } => {
            resolve(
                doc,
                S::ExceptionDenied,
                ExceptionResolution::Denied { by, reason, at },
            );
            at
        }
    };
}

fn decided(
    doc: &mut ChangeRequestDoc,
    status: ChangeRequestStatus,
    by: Option<UserId>,
    reason: Option<edict_domain::Reason>,
    at: DateTime<Utc>,
) {
    doc.status = status;
    doc.decision = Some(Decision { by, reason, at });
}

fn resolve(
    doc: &mut ChangeRequestDoc,
    status: ChangeRequestStatus,
    resolution: ExceptionResolution,
) {
    doc.status = status;
    if let Some(exception) = doc.exceptions.last_mut() {
        exception.resolution = Some(resolution);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProjectionError;
    use crate::decode::AggregateType;
    use crate::testkit::{ALICE, BOB, Harness, Log, RULE_A, TEAM_A, at};
    use edict_domain::change_request::{Diff, ExceptionKind, FilePath, ReportId};
    use edict_domain::{ExceptionId, Reason, Sha256Hex};
    use uuid::Uuid;

    const CR: ChangeRequestId = ChangeRequestId(Uuid::from_u128(0xc1));
    const AGENT: AgentId = AgentId(Uuid::from_u128(0xa9));

    fn opened() -> ChangeRequestEvent {
        ChangeRequestEvent::ChangeRequestOpened {
            change_request_id: CR,
            agent: AGENT,
            user: ALICE,
            team: TEAM_A,
            rule: RULE_A,
            file: FilePath::parse("/home/alice/.claude/CLAUDE.md").unwrap(),
            layer: Layer::Team,
            original_hash: Sha256Hex::parse("h", &"a".repeat(64)).unwrap(),
            new_hash: Sha256Hex::parse("h", &"b".repeat(64)).unwrap(),
            diff: Diff::parse("-old\n+new\n").unwrap(),
            timeout_at: at(60),
            report_id: ReportId::parse("report-1").unwrap(),
            at: at(1),
        }
    }

    fn record(log: &mut Log, event: ChangeRequestEvent) -> RecordedEvent {
        log.record(AggregateType::ChangeRequest, &event)
    }

    #[tokio::test]
    async fn an_opened_change_request_is_pending_in_its_teams_inbox() {
        let mut log = Log::default();
        let mut h = Harness::new();
        h.batch(&ChangeInbox, &[record(&mut log, opened())]).await;
        let doc: ChangeRequestDoc = h.doc(CHANGE_REQUEST_KIND, CR).unwrap();
        assert_eq!(doc.status, ChangeRequestStatus::Pending);
        assert_eq!(doc.file, "/home/alice/.claude/CLAUDE.md");
        assert_eq!(doc.report_ids, vec!["report-1".to_owned()]);
        assert_eq!(doc.version, 1);
        assert_eq!(
            h.meta(CHANGE_REQUEST_KIND, CR).unwrap(),
            DocMeta {
                team: Some(TEAM_A.to_string()),
                status: Some("pending".into()),
                sort_key: CR.to_string(),
            }
        );
    }

    #[tokio::test]
    async fn amendments_decisions_and_exceptions_are_folded_in() {
        let mut log = Log::default();
        let events = vec![
            record(&mut log, opened()),
            record(
                &mut log,
                ChangeRequestEvent::ChangeRequestAmended {
                    change_request_id: CR,
                    agent: AGENT,
                    new_hash: Sha256Hex::parse("h", &"c".repeat(64)).unwrap(),
                    diff: Diff::parse("-old\n+newer\n").unwrap(),
                    report_id: ReportId::parse("report-2").unwrap(),
                    at: at(2),
                },
            ),
            record(
                &mut log,
                ChangeRequestEvent::ChangeRejected {
                    change_request_id: CR,
                    by: BOB,
                    reason: Reason::parse("keep it").unwrap(),
                    at: at(3),
                },
            ),
            record(
                &mut log,
                ChangeRequestEvent::ExceptionRequested {
                    change_request_id: CR,
                    exception_id: ExceptionId(Uuid::from_u128(0xe1)),
                    by: ALICE,
                    justification: Reason::parse("needed for the migration").unwrap(),
                    kind: ExceptionKind::TimeLimited { until: at(600) },
                    at: at(4),
                },
            ),
            record(
                &mut log,
                ChangeRequestEvent::ExceptionGranted {
                    change_request_id: CR,
                    exception_id: ExceptionId(Uuid::from_u128(0xe1)),
                    by: BOB,
                    until: Some(at(300)),
                    at: at(5),
                },
            ),
        ];
        let mut h = Harness::new();
        h.batch(&ChangeInbox, &events).await;
        let doc: ChangeRequestDoc = h.doc(CHANGE_REQUEST_KIND, CR).unwrap();
        assert_eq!(doc.status, ChangeRequestStatus::ExceptionGranted);
        assert_eq!(doc.new_hash, "c".repeat(64));
        assert_eq!(
            doc.report_ids,
            vec!["report-1".to_owned(), "report-2".to_owned()]
        );
        let decision = doc.decision.unwrap();
        assert_eq!(
            (decision.by, decision.reason.unwrap().as_str()),
            (Some(BOB), "keep it")
        );
        assert_eq!(doc.exceptions.len(), 1);
        assert_eq!(
            doc.exceptions[0].resolution,
            Some(ExceptionResolution::Granted {
                by: BOB,
                until: Some(at(300)),
                at: at(5)
            })
        );
        assert_eq!((doc.version, doc.updated_at), (5, at(5)));
        assert_eq!(
            h.meta(CHANGE_REQUEST_KIND, CR).unwrap().status.as_deref(),
            Some("exception_granted")
        );
    }

    #[tokio::test]
    async fn an_event_about_an_unknown_change_request_is_inconsistent() {
        let mut log = Log::default();
        let event = record(
            &mut log,
            ChangeRequestEvent::ChangeApproved {
                change_request_id: CR,
                by: BOB,
                at: at(2),
            },
        );
        let err = crate::replay(&ChangeInbox, &[event]).await.unwrap_err();
        assert!(
            matches!(err, ProjectionError::Inconsistent { position: 1, .. }),
            "{err:?}"
        );
    }
}
