//! Time travel (`/console/audit/time-travel`): pick a moment (a time, or an event's position) and a
//! team, a machine or both: the team's rule set as it was in force then (replayed from the log by
//! `team_ruleset_as_of`, as `GET /api/v1/teams/{id}/ruleset?as_of=`), rendered per layer, and what the
//! machine enforced then (`agent_enforced_as_of`, as `GET /api/v1/agents/{id}/enforced?as_of=`).

use super::{costly, exact, form_time, frame};
use crate::console::layout::Layout;
use crate::console::render::{Failure, describe, page};
use crate::console::session::Session;
use crate::server::rate_limit::RateLimits;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::history::AsOf;
use edict_application::queries::PageRequest;
use edict_domain::AgentId;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{Response, handler};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The most teams and machines the pickers list.
const PICKER_MAX: usize = 500;

/// The form, as the query string carries it.
#[derive(Debug, Default, Deserialize)]
pub struct TravelQuery {
    /// A `datetime-local` value, read as UTC.
    #[serde(default)]
    at: String,
    /// Or a global position (wins over `at`).
    #[serde(default)]
    position: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    agent: String,
}

/// A choice of a picker.
pub struct Choice {
    id: String,
    label: String,
}

/// One rule of a past rule set.
pub struct PastRule {
    name: String,
    revision: String,
    category: String,
    mode: String,
}

/// One layer of a past rule set.
pub struct PastLayer {
    name: &'static str,
    rules: Vec<PastRule>,
    text: String,
}

/// A team's rule set at the moment.
pub struct PastRuleset {
    team: String,
    revision: String,
    hash: String,
    updated: String,
    archived: bool,
    layers: Vec<PastLayer>,
    replayed: String,
}

/// A rule set a machine had applied at the moment.
pub struct PastEnforced {
    team: String,
    revision: u64,
    hash: String,
    applied: String,
    current: bool,
}

/// The time travel page.
#[derive(Template, WebTemplate)]
#[template(path = "console/audit_time_travel.html")]
pub struct TravelPage {
    layout: Layout,
    at: String,
    position: String,
    team: String,
    agent: String,
    teams: Vec<Choice>,
    agents: Vec<Choice>,
    /// What the moment is, in words.
    moment: String,
    ruleset: Option<PastRuleset>,
    ruleset_error: Option<String>,
    enforced: Option<Vec<PastEnforced>>,
    enforced_error: Option<String>,
    error: Option<String>,
}

/// `GET /console/audit/time-travel`: the form, and with a moment and a team or machine, the past.
#[handler]
pub async fn time_travel(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    session: Session,
    Query(form): Query<TravelQuery>,
) -> poem::Result<Response> {
    let layout = frame(&session)?;
    let fail = |e| Failure::new(layout.clone(), e);
    let teams = choices(
        edict
            .list_teams(&session.principal, None, &picker())
            .await
            .map_err(fail)?
            .items,
        "name",
    );
    let agents = choices(
        edict
            .list_agents(&session.principal, None, &picker())
            .await
            .map_err(fail)?
            .items,
        "machine_name",
    );
    let mut view = TravelPage {
        layout: layout.clone(),
        at: form.at.clone(),
        position: form.position.clone(),
        team: form.team.clone(),
        agent: form.agent.clone(),
        moment: String::new(),
        ruleset: None,
        ruleset_error: None,
        enforced: None,
        enforced_error: None,
        error: None,
        teams,
        agents,
    };
    let asked = !form.team.is_empty() || !form.agent.is_empty();
    let as_of = match moment(&form) {
        Ok(Some(as_of)) => as_of,
        Ok(None) => {
            if asked {
                view.error = Some("Pick a moment: a date and time, or an event position.".into());
                return Ok(page(view, StatusCode::BAD_REQUEST));
            }
            return Ok(page(view, StatusCode::OK));
        }
        Err(error) => {
            let (status, _, message) = describe(&error);
            view.error = Some(message);
            return Ok(page(view, status));
        }
    };
    view.moment = match as_of {
        AsOf::Time(t) => format!("at {}", exact(t)),
        AsOf::Position(p) => format!("just after the event at position {p}"),
    };
    if !asked {
        view.error = Some("Pick a team, a machine or both.".into());
        return Ok(page(view, StatusCode::BAD_REQUEST));
    }
    if let Some(throttled) = costly(&limits, &session, &layout) {
        return Ok(throttled);
    }
    let team_names: HashMap<String, String> = view
        .teams
        .iter()
        .map(|c| (c.id.clone(), c.label.clone()))
        .collect();
    if !form.team.is_empty() {
        match edict
            .team_ruleset_as_of(&session.principal, &form.team, as_of)
            .await
        {
            Ok(past) => {
                let replayed = format!(
                    "{} events replayed{}",
                    past.events,
                    past.through
                        .map(|c| format!(", through position {}", c.position))
                        .unwrap_or_default()
                );
                view.ruleset = Some(ruleset(&past.ruleset, replayed));
            }
            Err(AppError::Forbidden(why)) => return Err(fail(AppError::Forbidden(why)).into()),
            Err(AppError::NotFound(_)) => {
                view.ruleset_error = Some("The team had no rule set at that moment.".into());
            }
            Err(error) => view.ruleset_error = Some(describe(&error).2),
        }
    }
    if !form.agent.is_empty() {
        let result = match form.agent.parse::<AgentId>() {
            Ok(id) => {
                edict
                    .agent_enforced_as_of(&session.principal, id, as_of)
                    .await
            }
            Err(_) => Err(AppError::NotFound("agent".into())),
        };
        match result {
            Ok(enforced) => {
                view.enforced = Some(
                    enforced
                        .into_iter()
                        .map(|(e, current)| PastEnforced {
                            team: team_names
                                .get(&e.team_id)
                                .cloned()
                                .unwrap_or_else(|| e.team_id.clone()),
                            revision: e.revision,
                            hash: e.hash,
                            applied: exact(e.applied_at),
                            current,
                        })
                        .collect(),
                );
            }
            Err(AppError::Forbidden(why)) => return Err(fail(AppError::Forbidden(why)).into()),
            Err(error) => view.enforced_error = Some(describe(&error).2),
        }
    }
    Ok(page(view, StatusCode::OK))
}

/// The moment of the form: the position when given, else the time.
fn moment(form: &TravelQuery) -> Result<Option<AsOf>, AppError> {
    let position = form.position.trim();
    if !position.is_empty() {
        return AsOf::parse(position).and_then(|as_of| match as_of {
            AsOf::Position(_) => Ok(Some(as_of)),
            AsOf::Time(_) => Err(AppError::BadParameter {
                parameter: "position".into(),
                message: "an event position is a whole number".into(),
            }),
        });
    }
    Ok(form_time("at", &form.at)?.map(AsOf::Time))
}

fn picker() -> PageRequest {
    PageRequest {
        after: None,
        limit: Some(PICKER_MAX),
        min_position: None,
    }
}

/// The picker's choices from listed documents, labelled by `label` (else the id), sorted by label.
fn choices(docs: Vec<Value>, label: &str) -> Vec<Choice> {
    let mut choices: Vec<Choice> = docs
        .iter()
        .filter_map(|doc| {
            let id = doc["id"].as_str()?.to_owned();
            let name = doc[label].as_str().unwrap_or(&id).to_owned();
            let status = doc["status"].as_str().unwrap_or_default();
            let label = if status.is_empty() || status == "active" || status == "enrolled" {
                name
            } else {
                format!("{name} ({status})")
            };
            Some(Choice { id, label })
        })
        .collect();
    choices.sort_by(|a, b| a.label.cmp(&b.label));
    choices
}

/// A past rule set document as the page shows it.
fn ruleset(doc: &Value, replayed: String) -> PastRuleset {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let layers = ["organization", "team", "project"]
        .into_iter()
        .map(|name| {
            let layer = &doc["layers"][name];
            PastLayer {
                name,
                rules: layer["rules"]
                    .as_array()
                    .map(|rules| {
                        rules
                            .iter()
                            .map(|r| PastRule {
                                name: text(&r["name"]),
                                revision: r["revision"]
                                    .as_u64()
                                    .map(|n| n.to_string())
                                    .unwrap_or_default(),
                                category: text(&r["category"]),
                                mode: text(&r["mode"]),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                text: text(&layer["text"]),
            }
        })
        .collect();
    PastRuleset {
        team: text(&doc["team_name"]),
        revision: doc["revision"]
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        hash: text(&doc["hash"]),
        updated: doc["updated_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .map(exact)
            .unwrap_or_default(),
        archived: doc["archived"].as_bool().unwrap_or(false),
        layers,
        replayed,
    }
}
