//! The audit pages, for auditors and org_admins (read only: no page here changes anything): the event
//! log with the API's filters, paged by cursor; the export of the log as JSON lines, streamed.
//!
//! Layout: this module lists and exports, and holds what the audit pages share (the role check, times
//! typed into forms, an event as a row); `aggregate` shows one aggregate's events with its state after
//! each; `past` shows a team's rule set and a machine's enforced revisions at a past moment (time
//! travel); `checkpoints` shows the signed checkpoints and verifies the chain over the exported log.
//!
//! Every read calls the use case the API's endpoint calls (`list_events`, `history`,
//! `team_ruleset_as_of`, `agent_enforced_as_of`, `audit_checkpoints`, `export_events`), with the same
//! costly-read rate limit, so a member forcing a URL gets the use case's 403.

mod aggregate;
mod checkpoints;
mod past;

pub use aggregate::history;
pub use checkpoints::chain;
pub use past::time_travel;

use super::layout::{Action, Layout, can};
use super::render::{Failure, page};
use super::session::Session;
use crate::server::events::{decode_cursor, encode_cursor};
use crate::server::rate_limit::{RateLimits, Throttled};
use askama::Template;
use askama_web::WebTemplate;
use chrono::{DateTime, NaiveDateTime, Utc};
use edict_application::Edict;
use edict_application::audit::ExportRange;
use edict_application::error::AppError;
use edict_application::event_log::{Checkpoint, LogFilter, RecordedEvent};
use poem::http::{StatusCode, header};
use poem::web::{Data, Query};
use poem::{Body, IntoResponse, Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// The nav entry the audit pages belong to.
const NAV: &str = "/console/audit";
/// Events per page of the log.
const EVENT_PAGE: usize = 50;
/// The aggregate types the log filters by (the API's).
pub(super) const AGGREGATE_TYPES: [&str; 5] = ["Rule", "Team", "ChangeRequest", "User", "Agent"];

/// The frame of an audit page, once the viewer is known to be an auditor or an org_admin (the use
/// cases check it again; this answers the same 403 before any form is shown).
fn frame(session: &Session) -> Result<Layout, Failure> {
    let layout = Layout::new(session, NAV);
    if can(&session.principal, Action::ReadAudit) {
        Ok(layout)
    } else {
        Err(Failure::new(
            layout,
            AppError::Forbidden("only an auditor or an org_admin may read the audit pages".into()),
        ))
    }
}

/// The page of a throttled costly read.
#[derive(Template, WebTemplate)]
#[template(path = "console/error.html")]
struct ThrottledPage {
    layout: Layout,
    status: u16,
    heading: String,
    message: String,
}

/// The same costly-read budget as the API's history, time travel and export endpoints: the 429 page
/// when it is spent.
fn costly(limits: &RateLimits, session: &Session, layout: &Layout) -> Option<Response> {
    limits
        .costly_read(&session.principal)
        .err()
        .map(|t: Throttled| {
            page(
                ThrottledPage {
                    layout: layout.clone(),
                    status: 429,
                    heading: "Too many reads".into(),
                    message: format!(
                        "You asked for many costly reads in a short time; try again in {} seconds.",
                        t.retry_after_secs()
                    ),
                },
                StatusCode::TOO_MANY_REQUESTS,
            )
            .with_header(header::RETRY_AFTER, t.retry_after_secs().to_string())
            .into_response()
        })
}

/// A time typed into a form: a `datetime-local` value (`2026-12-06T03:30`, with or without seconds),
/// read as UTC, or an RFC 3339 time. Empty: none.
pub(super) fn form_time(field: &str, raw: &str) -> Result<Option<DateTime<Utc>>, AppError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
    .map(|t| Some(t.and_utc()))
    .ok_or_else(|| AppError::BadParameter {
        parameter: field.to_owned(),
        message: format!("{raw:?} is not a date and time (YYYY-MM-DDTHH:MM, UTC)"),
    })
}

/// An event as the audit tables show it.
pub struct EventRow {
    position: i64,
    at: String,
    aggregate_type: String,
    aggregate_id: String,
    /// The path of its aggregate's history page (empty for a type without one).
    history: String,
    sequence: i64,
    event_type: String,
    actor: String,
    source: String,
    request_id: String,
    /// The payload, pretty-printed.
    payload: String,
}

impl EventRow {
    pub(super) fn new(event: &RecordedEvent) -> EventRow {
        let meta = |name: &str| event.metadata[name].as_str().unwrap_or_default().to_owned();
        EventRow {
            position: event.global_position,
            at: exact(event.recorded_at),
            history: aggregate::path(&event.aggregate_type, &event.aggregate_id),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            event_type: event.event_type.clone(),
            actor: meta("actor"),
            source: meta("source"),
            request_id: meta("request_id"),
            payload: serde_json::to_string_pretty(&event.payload).unwrap_or_default(),
        }
    }
}

/// The log's filters, as the query string carries them.
#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    aggregate_type: String,
    #[serde(default)]
    aggregate_id: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
}

/// The event log.
#[derive(Template, WebTemplate)]
#[template(path = "console/audit_log.html")]
pub struct LogPage {
    layout: Layout,
    filters: LogQuery,
    aggregate_types: &'static [&'static str],
    rows: Vec<EventRow>,
    /// The query string of the next page.
    next: Option<String>,
    /// The query string of the first page (when this one is not).
    first: Option<String>,
    /// The export link's query string (the time range of the filters).
    export_query: String,
    error: Option<String>,
}

/// `GET /console/audit`: the event log in commit order, filtered as the API's `GET /api/v1/events`.
#[handler]
pub async fn log(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    session: Session,
    Query(filters): Query<LogQuery>,
) -> poem::Result<Response> {
    let layout = frame(&session)?;
    let filter = match log_filter(&filters) {
        Ok(filter) => filter,
        Err(error) => {
            let (status, _, message) = super::render::describe(&error);
            return Ok(page(
                log_page(layout, filters, Vec::new(), None, Some(message)),
                status,
            ));
        }
    };
    let filtered = filter != LogFilter::default();
    if filtered && let Some(throttled) = costly(&limits, &session, &layout) {
        return Ok(throttled);
    }
    let start = if filters.after.is_empty() {
        Checkpoint::START
    } else {
        match decode_cursor(&filters.after) {
            Some(start) => start,
            None => {
                let message = "after: not a cursor of this list; start from the first page".into();
                return Ok(page(
                    log_page(layout, filters, Vec::new(), None, Some(message)),
                    StatusCode::BAD_REQUEST,
                ));
            }
        }
    };
    let events = edict
        .list_events(&session.principal, &filter, start, Some(EVENT_PAGE))
        .await
        .map_err(|e| Failure::new(layout.clone(), e))?;
    let rows = events.events.iter().map(EventRow::new).collect();
    let next = events.next.map(|c| query(&filters, &encode_cursor(c)));
    Ok(page(
        log_page(layout, filters, rows, next, None),
        StatusCode::OK,
    ))
}

fn log_page(
    layout: Layout,
    filters: LogQuery,
    rows: Vec<EventRow>,
    next: Option<String>,
    error: Option<String>,
) -> LogPage {
    let export_query = serde_urlencoded::to_string([
        ("since", filters.since.as_str()),
        ("until", filters.until.as_str()),
    ])
    .unwrap_or_default();
    LogPage {
        first: (!filters.after.is_empty()).then(|| query(&filters, "")),
        layout,
        aggregate_types: &AGGREGATE_TYPES,
        rows,
        next,
        export_query,
        error,
        filters,
    }
}

/// The log filter of the form, checked as the API checks its parameters.
fn log_filter(filters: &LogQuery) -> Result<LogFilter, AppError> {
    let aggregate_type = filters.aggregate_type.trim();
    if !aggregate_type.is_empty() && !AGGREGATE_TYPES.contains(&aggregate_type) {
        return Err(AppError::BadParameter {
            parameter: "aggregate_type".into(),
            message: format!(
                "{aggregate_type:?} is not one of {}",
                AGGREGATE_TYPES.join(", ")
            ),
        });
    }
    let text = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
    Ok(LogFilter {
        aggregate_types: text(aggregate_type).into_iter().collect(),
        aggregate_id: text(&filters.aggregate_id),
        actor: text(&filters.actor),
        event_types: filters
            .event_type
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        since: form_time("since", &filters.since)?,
        until: form_time("until", &filters.until)?,
    })
}

/// The query string of the log with `filters`, starting after `after` (empty: the first page).
fn query(filters: &LogQuery, after: &str) -> String {
    serde_urlencoded::to_string([
        ("aggregate_type", filters.aggregate_type.as_str()),
        ("aggregate_id", filters.aggregate_id.as_str()),
        ("event_type", filters.event_type.as_str()),
        ("actor", filters.actor.as_str()),
        ("since", filters.since.as_str()),
        ("until", filters.until.as_str()),
        ("after", after),
    ])
    .unwrap_or_default()
}

/// The export's time range, as the query string carries it.
#[derive(Debug, Default, Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

/// `GET /console/audit/export`: the log (in the time range) as JSON lines with each event's chain
/// hashes, streamed as a download: the API's `GET /api/v1/events/export`, verifiable offline with
/// `edict audit verify --file`.
#[handler]
pub async fn export(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    session: Session,
    Query(range): Query<ExportQuery>,
) -> poem::Result<Response> {
    let layout = Layout::new(&session, NAV);
    let fail = |e| Failure::new(layout.clone(), e);
    let range = ExportRange {
        since: form_time("since", &range.since).map_err(fail)?,
        until: form_time("until", &range.until).map_err(fail)?,
    };
    let reader = edict
        .export_events(&session.principal, range)
        .map_err(fail)?;
    if let Some(throttled) = costly(&limits, &session, &layout) {
        return Ok(throttled);
    }
    let name = format!(
        "edict-events-{}.ndjson",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .content_type("application/x-ndjson")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .body(Body::from_bytes_stream(crate::server::audit::ndjson(
            reader,
        ))))
}

/// A time as the audit pages show it, to the second.
pub(super) fn exact(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
