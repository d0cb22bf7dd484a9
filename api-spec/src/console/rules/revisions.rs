//! A rule's history page: every revision as the rule catalog records it (who opened, submitted,
//! approved or rejected it, and when), and, for those who may read the audit trail, every event.

use super::{People, parse_id};
use crate::console::layout::Layout;
use crate::console::render::{Failure, page, when};
use crate::console::session::Session;
use crate::server::rate_limit::RateLimits;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::history::Audited;
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// A revision as the catalog records it.
#[derive(Debug, Deserialize)]
struct Revision {
    number: u32,
    #[serde(default)]
    state: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    opened_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    submitted_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    approved_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    rejections: Vec<Rejection>,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct Rejection {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
    at: chrono::DateTime<chrono::Utc>,
}

/// A revision's row.
pub struct RevisionRow {
    number: u32,
    name: String,
    state: String,
    author: String,
    opened: String,
    submitted: String,
    approved: String,
    approvers: String,
    rejections: Vec<String>,
}

/// An event's row.
pub struct EventRow {
    position: i64,
    event_type: String,
    at: String,
    actor: String,
}

/// The history page.
#[derive(Template, WebTemplate)]
#[template(path = "console/rule_history.html")]
pub struct HistoryPage {
    layout: Layout,
    id: String,
    name: String,
    revisions: Vec<RevisionRow>,
    /// None when the viewer may not read the audit trail.
    events: Option<Vec<EventRow>>,
}

/// `GET /console/rules/{id}/history`.
#[handler]
pub async fn history(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    session: Session,
    Path(id): Path<String>,
) -> poem::Result<Response> {
    let layout = Layout::new(&session, "/console/rules");
    let fail = |e| Failure::new(layout.clone(), e);
    parse_id(&id).map_err(fail)?;
    let entry = edict
        .rule_entry(&session.principal, &id, None)
        .await
        .map_err(fail)?;
    let revisions: Vec<Revision> =
        serde_json::from_value(entry.item["revisions"].clone()).unwrap_or_default();
    let mut people = People::new(&edict, &session.principal);
    let mut rows = Vec::with_capacity(revisions.len());
    for r in revisions.into_iter().rev() {
        let mut approvers = Vec::with_capacity(r.approvers.len());
        for a in &r.approvers {
            approvers.push(people.name_of(a).await);
        }
        let mut rejections = Vec::with_capacity(r.rejections.len());
        for j in &r.rejections {
            let by = people.name_of(&j.by).await;
            rejections.push(format!("{} by {by}: {}", when(j.at), j.reason));
        }
        rows.push(RevisionRow {
            number: r.number,
            name: r.spec.name,
            state: r.state,
            author: people.name_of(&r.author).await,
            opened: r.opened_at.map(when).unwrap_or_default(),
            submitted: r.submitted_at.map(when).unwrap_or_default(),
            approved: r.approved_at.map(when).unwrap_or_default(),
            approvers: approvers.join(", "),
            rejections,
        });
    }
    let events = if session.principal.can_read_all() {
        if let Err(throttled) = limits.costly_read(&session.principal) {
            return Err(
                fail(edict_application::error::AppError::Unavailable(format!(
                    "too many history reads; retry in {} s",
                    throttled.retry_after_secs()
                )))
                .into(),
            );
        }
        let entries = edict
            .history(&session.principal, Audited::Rule, &id)
            .await
            .map_err(fail)?;
        let mut events = Vec::with_capacity(entries.len());
        for e in entries.into_iter().rev() {
            let actor = e.event.metadata["actor"].as_str().unwrap_or_default();
            events.push(EventRow {
                position: e.event.global_position,
                actor: people.name_of(actor).await,
                event_type: e.event.event_type,
                at: when(e.event.recorded_at),
            });
        }
        Some(events)
    } else {
        None
    };
    Ok(page(
        HistoryPage {
            name: entry.item["name"].as_str().unwrap_or_default().to_owned(),
            layout,
            id,
            revisions: rows,
            events,
        },
        StatusCode::OK,
    ))
}
