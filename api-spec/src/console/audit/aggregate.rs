//! One aggregate's history (`/console/audit/history/{type}/{id}`): every event of a rule, team,
//! change request, user or agent, oldest first, each with who, when and the state after it: the
//! `history` use case of `GET /api/v1/{rules,teams,…}/{id}/history`.

use super::{EventRow, costly, frame};
use crate::console::layout::Layout;
use crate::console::render::{Failure, page};
use crate::console::session::Session;
use crate::server::rate_limit::RateLimits;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::history::Audited;
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Response, handler};
use std::sync::Arc;

/// The path segment of each aggregate type, and its use case's kind.
const KINDS: [(&str, &str, Audited); 5] = [
    ("Rule", "rule", Audited::Rule),
    ("Team", "team", Audited::Team),
    ("ChangeRequest", "change-request", Audited::ChangeRequest),
    ("User", "user", Audited::User),
    ("Agent", "agent", Audited::Agent),
];

/// The history page of the aggregate `aggregate_type`/`id` (empty for a type without one).
pub(in crate::console) fn path(aggregate_type: &str, id: &str) -> String {
    KINDS
        .iter()
        .find(|(t, _, _)| *t == aggregate_type)
        .map(|(_, segment, _)| format!("/console/audit/history/{segment}/{}", percent(id)))
        .unwrap_or_default()
}

/// `id` safe in a path segment (ids are UUIDs; anything else is encoded).
fn percent(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An event and the state after it.
pub struct EntryView {
    event: EventRow,
    state: String,
}

/// An aggregate's history.
#[derive(Template, WebTemplate)]
#[template(path = "console/audit_history.html")]
pub struct HistoryPage {
    layout: Layout,
    aggregate_type: String,
    id: String,
    /// The log filtered to this aggregate.
    log_query: String,
    entries: Vec<EntryView>,
}

/// `GET /console/audit/history/{type}/{id}`.
#[handler]
pub async fn history(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    session: Session,
    Path((segment, id)): Path<(String, String)>,
) -> poem::Result<Response> {
    let layout = frame(&session)?;
    let fail = |e| Failure::new(layout.clone(), e);
    let (aggregate_type, _, kind) = KINDS
        .iter()
        .find(|(_, s, _)| *s == segment)
        .ok_or_else(|| fail(AppError::NotFound("kind of history".into())))?;
    let what = aggregate_type.to_lowercase();
    let uuid: uuid::Uuid = id.parse().map_err(|_| fail(AppError::NotFound(what)))?;
    if let Some(throttled) = costly(&limits, &session, &layout) {
        return Ok(throttled);
    }
    let entries = edict
        .history(&session.principal, *kind, &uuid.to_string())
        .await
        .map_err(fail)?;
    let entries = entries
        .iter()
        .rev()
        .map(|entry| EntryView {
            event: EventRow::new(&entry.event),
            state: serde_json::to_string_pretty(&entry.state).unwrap_or_default(),
        })
        .collect();
    let log_query = serde_urlencoded::to_string([
        ("aggregate_type", *aggregate_type),
        ("aggregate_id", &uuid.to_string()),
    ])
    .unwrap_or_default();
    Ok(page(
        HistoryPage {
            layout,
            aggregate_type: (*aggregate_type).to_owned(),
            id: uuid.to_string(),
            log_query,
            entries,
        },
        StatusCode::OK,
    ))
}
