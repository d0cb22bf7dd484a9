//! The dashboard at `/`: convergence at a glance (each team's latest rule set revision against the
//! revisions its machines acknowledged), the machines behind, failing integrity or silent, the change
//! requests waiting, and, for org_admins and auditors, projection and relay lag. A visitor who is not
//! signed in gets the sign-in page there instead.
//!
//! Every figure comes from the use cases the API's endpoints call (`list_teams`, `team_convergence`,
//! `list_agents`, `list_change_requests`, `projection_statuses`), so a role sees here what it may read
//! there; relay lag is the gauge `/metrics` exports (sampled by every process from the store).

use super::layout::{Action, Layout, can};
use super::render::{page, when};
use super::session::{Session, Visitor};
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::metrics::Exposition;
use edict_application::queries::PageRequest;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{Request, Response, handler};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// How many teams, machines and change requests one dashboard reads at most.
const MAX_ITEMS: usize = 200;

/// One team's convergence.
pub struct TeamRow {
    name: String,
    latest: String,
    current: usize,
    machines: usize,
    last_ack: String,
}

/// A machine that needs a look.
pub struct MachineRow {
    name: String,
    team: String,
    problem: String,
    since: String,
}

/// A projection's lag.
pub struct ProjectionRow {
    name: String,
    lag: i64,
    error: String,
    updated: String,
}

/// The operations section (org_admins and auditors).
pub struct Operations {
    projections: Vec<ProjectionRow>,
    /// `None` when this process samples no relay (the in-process bus delivers directly).
    relay_positions: Option<String>,
    relay_seconds: Option<String>,
}

/// The dashboard.
#[derive(Template, WebTemplate)]
#[template(path = "console/dashboard.html")]
pub struct DashboardPage {
    layout: Layout,
    teams: Vec<TeamRow>,
    machines: Vec<MachineRow>,
    waiting: String,
    exceptions: String,
    operations: Option<Operations>,
    problems: Vec<String>,
}

/// `GET /`: the dashboard, or the sign-in page.
#[handler]
pub async fn home(edict: Data<&Arc<Edict>>, request: &Request, visitor: Visitor) -> Response {
    let Some(session) = &visitor.session else {
        return super::signin::sign_in_page(
            &visitor,
            "/".into(),
            String::new(),
            None,
            StatusCode::OK,
        );
    };
    let mut problems = Vec::new();
    let agents = names_of_agents(&edict, session, &mut problems).await;
    let (teams, mut machines) = convergence(&edict, session, &agents, &mut problems).await;
    machines.extend(failing_integrity(&agents));
    machines.extend(silent(&agents));
    let waiting = count(&edict, session, "pending", &mut problems).await;
    let exceptions = count(&edict, session, "exception_requested", &mut problems).await;
    let operations = if can(&session.principal, Action::ReadOperations) {
        Some(operations(&edict, session, request.data::<Exposition>(), &mut problems).await)
    } else {
        None
    };
    page(
        DashboardPage {
            layout: Layout::new(session, "/"),
            teams,
            machines,
            waiting,
            exceptions,
            operations,
            problems,
        },
        StatusCode::OK,
    )
}

fn first_page() -> PageRequest {
    PageRequest {
        after: None,
        limit: Some(MAX_ITEMS),
        min_position: None,
    }
}

/// The enrolled machines the viewer may see, by id.
async fn names_of_agents(
    edict: &Edict,
    session: &Session,
    problems: &mut Vec<String>,
) -> HashMap<String, Value> {
    match edict
        .list_agents(&session.principal, Some("enrolled".into()), &first_page())
        .await
    {
        Ok(listed) => listed
            .items
            .into_iter()
            .filter_map(|doc| Some((doc["id"].as_str()?.to_owned(), doc)))
            .collect(),
        Err(error) => {
            problems.push(format!("machines: {error}"));
            HashMap::new()
        }
    }
}

fn machine_name(agents: &HashMap<String, Value>, id: &str) -> String {
    agents
        .get(id)
        .and_then(|doc| doc["machine_name"].as_str())
        .filter(|name| !name.is_empty())
        .map_or_else(
            || format!("machine {}", &id[..id.len().min(8)]),
            str::to_owned,
        )
}

/// Each team's convergence, and the machines behind its latest revision.
async fn convergence(
    edict: &Edict,
    session: &Session,
    agents: &HashMap<String, Value>,
    problems: &mut Vec<String>,
) -> (Vec<TeamRow>, Vec<MachineRow>) {
    let teams = match edict
        .list_teams(&session.principal, Some("active".into()), &first_page())
        .await
    {
        Ok(listed) => listed.items,
        Err(error) => {
            problems.push(format!("teams: {error}"));
            return (Vec::new(), Vec::new());
        }
    };
    let mut rows = Vec::new();
    let mut behind = Vec::new();
    for team in teams {
        let (Some(id), Some(name)) = (team["id"].as_str(), team["name"].as_str()) else {
            continue;
        };
        let (latest, enforced) = match edict.team_convergence(&session.principal, id).await {
            Ok(found) => found,
            Err(error) => {
                problems.push(format!("convergence of {name}: {error}"));
                continue;
            }
        };
        let revision = latest.as_ref().and_then(|doc| doc["revision"].as_u64());
        let hash = latest.as_ref().and_then(|doc| doc["hash"].as_str());
        let mut current = 0;
        for e in &enforced {
            if Some(e.revision) == revision && hash == Some(e.hash.as_str()) {
                current += 1;
            } else {
                behind.push(MachineRow {
                    name: machine_name(agents, &e.agent_id),
                    team: name.to_owned(),
                    problem: format!(
                        "enforces revision {} of {}",
                        e.revision,
                        revision.map_or_else(|| "none".to_owned(), |r| r.to_string())
                    ),
                    since: when(e.applied_at),
                });
            }
        }
        rows.push(TeamRow {
            name: name.to_owned(),
            latest: revision.map_or_else(|| "none yet".to_owned(), |r| r.to_string()),
            current,
            machines: enforced.len(),
            last_ack: enforced
                .iter()
                .map(|e| e.applied_at)
                .max()
                .map(when)
                .unwrap_or_default(),
        });
    }
    (rows, behind)
}

/// The machines that reported refusing an untrusted rule set.
fn failing_integrity(agents: &HashMap<String, Value>) -> Vec<MachineRow> {
    let mut rows: Vec<MachineRow> = agents
        .iter()
        .filter(|(_, doc)| doc["integrity_failures"].as_u64().unwrap_or(0) > 0)
        .map(|(id, doc)| {
            let last = &doc["last_integrity_failure"];
            MachineRow {
                name: machine_name(agents, id),
                team: last["team"].as_str().unwrap_or_default().to_owned(),
                problem: format!(
                    "{} integrity failure(s), last: {}",
                    doc["integrity_failures"].as_u64().unwrap_or(0),
                    last["reason"].as_str().unwrap_or("unknown")
                ),
                since: last["at"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .map(when)
                    .unwrap_or_default(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// The machines whose gateway stopped hearing from them without their connection ending (a gateway
/// that died, a network that drops everything).
fn silent(agents: &HashMap<String, Value>) -> Vec<MachineRow> {
    let mut rows: Vec<MachineRow> = agents
        .iter()
        .filter_map(|(id, doc)| {
            let connection = super::fleet::Connection::of_doc(&doc["presence"]);
            (connection.state == "silent").then(|| MachineRow {
                name: machine_name(agents, id),
                team: String::new(),
                problem: format!("silent: {} last heard from it", connection.gateway),
                since: connection.last_seen,
            })
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// How many change requests the viewer may see are in `status` (`200+` past one page).
async fn count(
    edict: &Edict,
    session: &Session,
    status: &str,
    problems: &mut Vec<String>,
) -> String {
    match edict
        .list_change_requests(
            &session.principal,
            None,
            Some(status.to_owned()),
            &first_page(),
        )
        .await
    {
        Ok(listed) if listed.next.is_some() => format!("{MAX_ITEMS}+"),
        Ok(listed) => listed.items.len().to_string(),
        Err(error) => {
            problems.push(format!("change requests: {error}"));
            "?".into()
        }
    }
}

async fn operations(
    edict: &Edict,
    session: &Session,
    exposition: Option<&Exposition>,
    problems: &mut Vec<String>,
) -> Operations {
    let projections = match edict.projection_statuses(&session.principal).await {
        Ok(statuses) => statuses
            .into_iter()
            .map(|s| ProjectionRow {
                name: s.name,
                lag: s.lag,
                error: s.error.unwrap_or_default(),
                updated: when(s.updated_at),
            })
            .collect(),
        Err(error) => {
            problems.push(format!("projections: {error}"));
            Vec::new()
        }
    };
    let page = exposition.map(Exposition::render).unwrap_or_default();
    Operations {
        projections,
        relay_positions: gauge(
            &page,
            edict_application::metrics::names::RELAY_LAG_POSITIONS,
        ),
        relay_seconds: gauge(&page, edict_application::metrics::names::RELAY_LAG_SECONDS),
    }
}

/// The value of an unlabelled gauge in a Prometheus text page.
fn gauge(page: &str, name: &str) -> Option<String> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::gauge;

    #[test]
    fn a_gauge_is_read_from_the_exposition() {
        let page = "# HELP edict_relay_lag_positions x\nedict_relay_lag_positions 3\nother 1\n";
        assert_eq!(
            gauge(page, "edict_relay_lag_positions").as_deref(),
            Some("3")
        );
        assert_eq!(gauge(page, "edict_relay_lag_seconds"), None);
    }
}
