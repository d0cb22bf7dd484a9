//! The fleet pages: the enrolled machines (all of them for org_admins and auditors, one's own for
//! others: `list_agents` decides) with filters, and a machine's page: its owner, the revision of each
//! team's rule set it enforces against the team's latest, its integrity failures, the reports it sent
//! (for those who may read the audit trail), and revoking it, after a confirmation. Both show where a
//! machine is connected: its gateway and when the gateway last heard from it.

use super::command::Posted;
use super::layout::Layout;
use super::render::{Done, Failure, page, when};
use super::session::Session;
use super::teams::people::People;
use crate::server::rate_limit::RateLimits;
use askama::Template;
use askama_web::WebTemplate;
use chrono::{DateTime, Utc};
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::history::Audited;
use edict_application::queries::PageRequest;
use edict_domain::agent::Agent;
use edict_domain::user::GlobalRole;
use edict_domain::value::Reason;
use edict_domain::{AgentId, Versioned};
use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// Machines a list page shows (and reads per read of the fleet).
const PAGE: usize = 200;
/// Machines one filtered list page reads at most, looking for a page's worth of matches.
const MAX_SCANNED: usize = 5_000;

/// The statuses the list filters by.
const STATUSES: [&str; 2] = ["enrolled", "revoked"];

/// The list's filters.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    /// Text in the machine's name or id, or its owner's email.
    #[serde(default)]
    q: String,
    /// `yes`: only machines that reported an integrity failure.
    #[serde(default)]
    failing: String,
    #[serde(default)]
    after: Option<String>,
}

/// A machine as the list shows it.
pub struct AgentRow {
    id: String,
    machine_name: String,
    machine_id: String,
    owner: String,
    enrolled: String,
    status: &'static str,
    integrity_failures: u64,
    last_failure: String,
    connection: Connection,
}

/// A machine's connection as the pages read it.
pub struct Connection {
    /// `online`, `silent` (no word for a while and no recorded end: its gateway may have stopped),
    /// `offline` or `never` (connected).
    pub(super) state: &'static str,
    /// The gateway of its last connection (empty: never connected).
    pub(super) gateway: String,
    /// When the gateway last heard from it.
    pub(super) last_seen: String,
}

/// A connection with no word for this long and no recorded end reads as silent (a live connection's
/// presence is recorded at least once a minute).
const SILENT_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(3);

impl Connection {
    fn of(
        gateway: &str,
        last_seen: Option<DateTime<Utc>>,
        ended: Option<DateTime<Utc>>,
    ) -> Connection {
        let Some(last_seen) = last_seen else {
            return Connection {
                state: "never",
                gateway: String::new(),
                last_seen: String::new(),
            };
        };
        let state = if ended.is_some() {
            "offline"
        } else if Utc::now() - last_seen > SILENT_AFTER {
            "silent"
        } else {
            "online"
        };
        Connection {
            state,
            gateway: gateway.to_owned(),
            last_seen: when(last_seen),
        }
    }

    /// From the `presence` of a fleet document.
    pub(super) fn of_doc(presence: &serde_json::Value) -> Connection {
        let time = |key: &str| presence[key].as_str().and_then(|t| t.parse().ok());
        Connection::of(
            presence["gateway"].as_str().unwrap_or_default(),
            time("last_seen_at"),
            time("disconnected_at"),
        )
    }
}

/// The fleet.
#[derive(Template, WebTemplate)]
#[template(path = "console/fleet_list.html")]
pub struct FleetPage {
    layout: Layout,
    rows: Vec<AgentRow>,
    status: String,
    q: String,
    failing: bool,
    statuses: &'static [&'static str],
    next: Option<String>,
    all_machines: bool,
    lag: i64,
}

/// `GET /console/fleet`.
#[handler]
pub async fn list(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Query(filters): Query<ListQuery>,
) -> poem::Result<Response> {
    let layout = Layout::new(&session, "/console/fleet");
    let status = STATUSES
        .contains(&filters.status.as_str())
        .then(|| filters.status.clone());
    let failing = filters.failing == "yes";
    let needle = filters.q.trim().to_lowercase();
    let filtering = failing || !needle.is_empty();
    let mut people = People::new(&edict, &session.principal);
    let mut rows = Vec::new();
    let mut scanned = 0;
    let mut after = filters.after.clone().filter(|a| !a.is_empty());
    // The filters run over the pages of the fleet until a page's worth matched (or the scan's
    // budget is spent), so a machine past the first page is found; "Next page" goes on from there.
    let (next, lag) = loop {
        let page_request = PageRequest {
            after: after.take(),
            limit: Some(PAGE),
            min_position: None,
        };
        let listed = edict
            .list_agents(&session.principal, status.clone(), &page_request)
            .await
            .map_err(|e| Failure::new(layout.clone(), e))?;
        scanned += listed.items.len();
        for doc in &listed.items {
            let row = agent_row(doc, &mut people).await;
            let matches = (!failing || row.integrity_failures > 0)
                && (needle.is_empty()
                    || [&row.machine_name, &row.machine_id, &row.owner]
                        .iter()
                        .any(|t| t.to_lowercase().contains(&needle)));
            if matches {
                rows.push(row);
            }
        }
        match listed.next {
            Some(cursor) if filtering && rows.len() < PAGE && scanned < MAX_SCANNED => {
                after = Some(cursor);
            }
            next => break (next, listed.freshness.lag),
        }
    };
    let next = next.map(|after| {
        serde_urlencoded::to_string([
            ("status", status.as_deref().unwrap_or("")),
            ("q", filters.q.as_str()),
            ("failing", filters.failing.as_str()),
            ("after", after.as_str()),
        ])
        .unwrap_or_default()
    });
    Ok(page(
        FleetPage {
            all_machines: session.principal.can_read_all(),
            layout,
            rows,
            status: status.unwrap_or_default(),
            q: filters.q,
            failing,
            statuses: &STATUSES,
            next,
            lag,
        },
        StatusCode::OK,
    ))
}

/// A fleet document as a row of the list.
async fn agent_row(doc: &serde_json::Value, people: &mut People<'_>) -> AgentRow {
    let text = |key: &str| doc[key].as_str().unwrap_or_default().to_owned();
    AgentRow {
        id: text("id"),
        machine_name: text("machine_name"),
        machine_id: text("machine_id"),
        owner: people.name_of(&text("user")).await,
        enrolled: doc["enrolled_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .map(when)
            .unwrap_or_default(),
        status: if doc["revoked"].as_bool().unwrap_or(false) {
            "revoked"
        } else {
            "enrolled"
        },
        integrity_failures: doc["integrity_failures"].as_u64().unwrap_or(0),
        last_failure: doc["last_integrity_failure"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        connection: Connection::of_doc(&doc["presence"]),
    }
}

/// A team's rule set as the machine enforces it.
pub struct EnforcedRow {
    team_id: String,
    team: String,
    revision: u64,
    /// The team's latest revision, when the viewer may read it.
    latest: String,
    current: bool,
    applied: String,
}

/// A report of the machine, from its events.
pub struct ReportRow {
    at: String,
    kind: String,
    detail: String,
}

/// A machine's page.
#[derive(Template, WebTemplate)]
#[template(path = "console/fleet_agent.html")]
pub struct AgentPage {
    layout: Layout,
    id: String,
    version: u64,
    machine_name: String,
    machine_id: String,
    owner: String,
    enrolled: String,
    revoked: bool,
    enforced: Vec<EnforcedRow>,
    integrity_failures: u64,
    last_failure: Option<String>,
    connection: Connection,
    /// None when the viewer may not read the audit trail.
    reports: Option<Vec<ReportRow>>,
    /// The reports were not read: too many history reads just now.
    reports_throttled: bool,
    can_revoke: bool,
    notice: Option<&'static str>,
    error: Option<String>,
    reason: String,
}

/// `GET /console/fleet/{id}`.
#[handler]
pub async fn show(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> poem::Result<Response> {
    let notice = done.notice(&[("revoked", "Machine revoked: its token is refused.")]);
    let view = agent_page(&edict, &limits, &session, &id, notice, None, "").await?;
    Ok(page(view, StatusCode::OK))
}

fn parse_id(id: &str) -> Result<AgentId, AppError> {
    id.parse().map_err(|_| AppError::NotFound("agent".into()))
}

/// Whether `session` may revoke `agent`: what `revoke_agent` checks (its owner unless an auditor, or
/// an org_admin), on an agent not revoked yet.
fn may_revoke(session: &Session, agent: &Agent) -> bool {
    let principal = &session.principal;
    let owner = agent.user() == Some(principal.user()) && !principal.has_role(GlobalRole::Auditor);
    principal.is_user() && (principal.is_org_admin() || owner) && !agent.revoked()
}

async fn agent_page(
    edict: &Edict,
    limits: &RateLimits,
    session: &Session,
    id: &str,
    notice: Option<&'static str>,
    error: Option<String>,
    reason: &str,
) -> Result<AgentPage, Failure> {
    let layout = Layout::new(session, "/console/fleet");
    let fail = |e| Failure::new(layout.clone(), e);
    let agent_id = parse_id(id).map_err(fail)?;
    let agent = edict
        .agent(&session.principal, agent_id)
        .await
        .map_err(fail)?;
    let mut people = People::new(edict, &session.principal);
    let owner = match agent.user() {
        Some(user) => people.name(user).await,
        None => String::new(),
    };
    let mut enforced = Vec::new();
    for (e, current) in edict
        .agent_enforced(&session.principal, agent_id)
        .await
        .map_err(fail)?
    {
        let team = match e.team_id.parse() {
            Ok(team_id) => edict
                .team(&session.principal, team_id)
                .await
                .ok()
                .and_then(|t| t.name().map(|n| n.as_str().to_owned())),
            Err(_) => None,
        };
        let latest = edict
            .team_ruleset(&session.principal, &e.team_id, None)
            .await
            .ok()
            .and_then(|f| f.item["revision"].as_u64())
            .map(|r| r.to_string())
            .unwrap_or_default();
        enforced.push(EnforcedRow {
            team: team.unwrap_or_else(|| {
                format!("team {}", e.team_id.chars().take(8).collect::<String>())
            }),
            team_id: e.team_id,
            revision: e.revision,
            latest,
            current,
            applied: when(e.applied_at),
        });
    }
    let connection = match edict
        .agent_presence(&session.principal, agent_id)
        .await
        .map_err(fail)?
    {
        Some(p) => Connection::of(&p.gateway, Some(p.last_seen_at), p.disconnected_at),
        None => Connection::of("", None, None),
    };
    let last_failure = agent.last_integrity_failure().map(|f| {
        format!(
            "{}: {} (team {}, revision {}) — {}",
            when(f.at),
            f.reason,
            f.team,
            f.revision,
            f.detail
        )
    });
    let mut reports_throttled = false;
    let reports = if !session.principal.can_read_all() {
        None
    } else if limits.costly_read(&session.principal).is_err() {
        reports_throttled = true;
        None
    } else {
        let entries = edict
            .history(&session.principal, Audited::Agent, id)
            .await
            .map_err(fail)?;
        Some(
            entries
                .into_iter()
                .rev()
                .filter_map(|entry| report(&entry.event))
                .take(50)
                .collect(),
        )
    };
    Ok(AgentPage {
        id: id.to_owned(),
        version: agent.version(),
        machine_name: agent
            .machine_name()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        machine_id: agent
            .machine_id()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
        owner,
        enrolled: agent.enrolled_at().map(when).unwrap_or_default(),
        revoked: agent.revoked(),
        can_revoke: may_revoke(session, &agent),
        enforced,
        integrity_failures: agent.integrity_failures(),
        last_failure,
        connection,
        reports,
        reports_throttled,
        notice,
        error,
        reason: reason.to_owned(),
        layout,
    })
}

/// An enforcement or integrity report as a row (other events are not reports).
fn report(event: &edict_application::event_log::RecordedEvent) -> Option<ReportRow> {
    let p = &event.payload;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let (kind, detail) = match event.event_type.as_str() {
        "EnforcementReported" => (
            format!("enforcement: {}", text(&p["kind"])),
            format!(
                "{} ({} layer, rule {})",
                text(&p["file"]),
                text(&p["layer"]),
                text(&p["rule"]).chars().take(8).collect::<String>()
            ),
        ),
        "IntegrityFailureReported" => (
            format!("integrity failure: {}", text(&p["reason"])),
            format!(
                "team {}, revision {}: {}",
                text(&p["team"]),
                p["revision"].as_u64().unwrap_or_default(),
                text(&p["detail"])
            ),
        ),
        _ => return None,
    };
    Some(ReportRow {
        at: when(event.recorded_at),
        kind,
        detail,
    })
}

/// The revocation form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    version: Option<u64>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /console/fleet/{id}/revoke`: its owner or an org_admin, after ticking the confirmation.
#[handler]
pub async fn revoke(
    limits: Data<&Arc<RateLimits>>,
    post: Posted<'_, RevokeForm>,
) -> poem::Result<Response> {
    let (edict, by, form) = (post.edict, post.by(), &post.form);
    let ctx = post.context(form.version);
    let outcome = async {
        let agent = parse_id(&post.id)?;
        let reason = match form.reason.trim() {
            "" => None,
            reason => Some(Reason::parse(reason)?),
        };
        // Whoever may not revoke is told so first: read the agent as the use case would.
        if form.confirm != "yes" && may_revoke(&post.session, &edict.agent(by, agent).await?) {
            return Err(AppError::Invalid {
                field: "confirmation".into(),
                message: "tick the box to confirm the revocation".into(),
            });
        }
        edict.revoke_agent(by, agent, reason, &ctx).await
    };
    let (session, typed) = (&post.session, &form.reason);
    let again = async |message| {
        agent_page(
            edict,
            &limits,
            session,
            &post.id,
            None,
            Some(message),
            typed,
        )
        .await
    };
    post.answer("/console/fleet", outcome.await, "revoked", again)
        .await
}

#[cfg(test)]
mod tests {
    use super::Connection;
    use chrono::{TimeDelta, Utc};

    #[test]
    fn a_connection_reads_online_silent_offline_or_never() {
        let now = Utc::now();
        let state = |seen: Option<TimeDelta>, ended: bool| {
            let last_seen = seen.map(|ago| now - ago);
            Connection::of("gw:1", last_seen, last_seen.filter(|_| ended)).state
        };
        assert_eq!(state(None, false), "never");
        assert_eq!(state(Some(TimeDelta::seconds(30)), false), "online");
        assert_eq!(state(Some(TimeDelta::minutes(10)), false), "silent");
        assert_eq!(state(Some(TimeDelta::seconds(30)), true), "offline");
        assert_eq!(state(Some(TimeDelta::minutes(10)), true), "offline");
        let doc = serde_json::json!({"gateway": "gw:1", "last_seen_at": now.to_rfc3339()});
        assert_eq!(Connection::of_doc(&doc).state, "online");
        assert_eq!(Connection::of_doc(&serde_json::Value::Null).state, "never");
    }
}
