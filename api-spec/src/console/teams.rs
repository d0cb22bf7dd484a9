//! The team pages: the list of teams (all of them for org_admins and auditors, one's own for others:
//! `list_teams` decides), the form that creates one, and a team's page: its members and their roles,
//! the rules it attached with their enforcement mode, the rendered managed section of each layer as
//! an agent writes it, and how many machines enforce the latest revision.
//!
//! Layout: this module lists and shows; `commands` handles the forms a team's page posts (rename,
//! archive, members, attachments); `people` turns user ids into emails as far as the viewer may read
//! users (the fleet pages use it too).

mod commands;
pub(super) mod people;

pub use commands::{
    add_member, archive, attach, change_mode, change_role, detach, remove_member, rename,
};

use super::command::context;
use super::layout::{Action, Layout, can};
use super::render::{Done, Failure, describe, page, see_other, when};
use super::session::Session;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::queries::{PageRequest, RuleQuery};
use edict_domain::team::{Team, TeamName};
use edict_domain::value::{Enforcement, EnforcementMode};
use edict_domain::{TeamId, Versioned};
use people::People;
use poem::http::StatusCode;
use poem::web::{Data, Form, Path, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// The statuses the list filters by.
const STATUSES: [&str; 2] = ["active", "archived"];
/// The enforcement modes a rule is attached with.
const MODES: [&str; 3] = ["block", "temporary", "warning"];
/// The roles in a team.
const ROLES: [&str; 2] = ["member", "team_admin"];

/// The list's filters.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: Option<String>,
}

/// A team as the list shows it.
pub struct TeamRow {
    id: String,
    name: String,
    status: &'static str,
    members: usize,
    rules: usize,
    created: String,
}

/// The list of teams.
#[derive(Template, WebTemplate)]
#[template(path = "console/teams_list.html")]
pub struct TeamsListPage {
    layout: Layout,
    rows: Vec<TeamRow>,
    status: String,
    statuses: &'static [&'static str],
    next: Option<String>,
    can_create: bool,
    all_teams: bool,
    lag: i64,
    /// The name typed in a refused creation, and why it was refused.
    name: String,
    error: Option<String>,
}

/// `GET /console/teams`.
#[handler]
pub async fn list(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Query(filters): Query<ListQuery>,
) -> poem::Result<Response> {
    let view = list_page(&edict, &session, filters, String::new(), None).await?;
    Ok(page(view, StatusCode::OK))
}

async fn list_page(
    edict: &Edict,
    session: &Session,
    filters: ListQuery,
    name: String,
    error: Option<String>,
) -> Result<TeamsListPage, Failure> {
    let layout = Layout::new(session, "/console/teams");
    let status = STATUSES
        .contains(&filters.status.as_str())
        .then(|| filters.status.clone());
    let page_request = PageRequest {
        after: filters.after.filter(|a| !a.is_empty()),
        limit: Some(100),
        min_position: None,
    };
    let listed = edict
        .list_teams(&session.principal, status.clone(), &page_request)
        .await
        .map_err(|e| Failure::new(layout.clone(), e))?;
    let rows = listed
        .items
        .iter()
        .map(|doc| TeamRow {
            id: doc["id"].as_str().unwrap_or_default().to_owned(),
            name: doc["name"].as_str().unwrap_or_default().to_owned(),
            status: if doc["archived"].as_bool().unwrap_or(false) {
                "archived"
            } else {
                "active"
            },
            members: doc["members"].as_object().map_or(0, |m| m.len()),
            rules: doc["rules"].as_object().map_or(0, |r| r.len()),
            created: doc["created_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .map(when)
                .unwrap_or_default(),
        })
        .collect();
    let next = listed.next.map(|after| {
        serde_urlencoded::to_string([
            ("status", status.as_deref().unwrap_or("")),
            ("after", after.as_str()),
        ])
        .unwrap_or_default()
    });
    Ok(TeamsListPage {
        can_create: can(&session.principal, Action::WriteTeams),
        all_teams: session.principal.can_read_all(),
        layout,
        rows,
        status: status.unwrap_or_default(),
        statuses: &STATUSES,
        next,
        lag: listed.freshness.lag,
        name,
        error,
    })
}

/// The creation form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

/// `POST /console/teams`: creates a team (org_admins), then shows it.
#[handler]
pub async fn create(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Form(form): Form<CreateForm>,
) -> poem::Result<Response> {
    let outcome = match TeamName::parse(form.name.trim()) {
        Ok(name) => {
            edict
                .create_team(&session.principal, name, &context(request, None))
                .await
        }
        Err(e) => Err(AppError::from(e)),
    };
    match outcome {
        Ok(created) => Ok(see_other(&format!(
            "/console/teams/{}?done=created",
            created.id
        ))),
        Err(error @ AppError::Forbidden(_)) => {
            Err(Failure::new(Layout::new(&session, "/console/teams"), error).into())
        }
        Err(error) => {
            let (status, _, message) = describe(&error);
            let view = list_page(
                &edict,
                &session,
                ListQuery::default(),
                form.name,
                Some(message),
            )
            .await?;
            Ok(page(view, status))
        }
    }
}

/// A member's row.
pub struct MemberRow {
    user_id: String,
    name: String,
    role: &'static str,
    /// Whether the viewer may change this member's role or remove them (what the use case allows:
    /// an org_admin anyone, a team_admin members and themself).
    can_change: bool,
}

/// An attached rule's row.
pub struct AttachedRow {
    rule_id: String,
    name: String,
    layer: &'static str,
    revision: u32,
    mode: &'static str,
    /// The time limit of a temporary rule, in minutes (empty otherwise).
    minutes: String,
    attached_by: String,
    attached_at: String,
}

/// One layer of the team's rule set.
pub struct LayerView {
    layer: &'static str,
    rules: usize,
    text: String,
}

/// An approved rule the team may attach.
pub struct RuleOption {
    id: String,
    label: String,
}

/// A user who may be added.
pub struct UserOption {
    id: String,
    label: String,
}

/// A team's page.
#[derive(Template, WebTemplate)]
#[template(path = "console/team.html")]
pub struct TeamPage {
    layout: Layout,
    id: String,
    name: String,
    version: u64,
    archived: bool,
    created: String,
    members: Vec<MemberRow>,
    attached: Vec<AttachedRow>,
    /// The rule set per layer (None: the read model has no rule set for it yet).
    layers: Option<Vec<LayerView>>,
    ruleset_revision: u64,
    ruleset_hash: String,
    /// Machines enforcing the latest revision, of those that applied one.
    converged: usize,
    machines: usize,
    /// The viewer manages this team (org_admin, or its team_admin), and it is not archived.
    can_manage: bool,
    /// The viewer is an org_admin (rename is a team_admin's too; archive and appointing are not).
    can_admin: bool,
    rules_to_attach: Vec<RuleOption>,
    users_to_add: Vec<UserOption>,
    modes: &'static [&'static str],
    roles: &'static [&'static str],
    notice: Option<&'static str>,
    error: Option<String>,
}

/// `GET /console/teams/{id}`.
#[handler]
pub async fn show(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> poem::Result<Response> {
    let notice = done.notice(&[
        ("created", "Team created."),
        ("renamed", "Team renamed."),
        ("archived", "Team archived."),
        ("added", "Member added."),
        ("role", "Role changed."),
        ("removed", "Member removed."),
        ("attached", "Rule attached."),
        ("mode", "Enforcement changed."),
        ("detached", "Rule detached."),
    ]);
    let view = team_page(&edict, &session, &id, notice, None).await?;
    Ok(page(view, StatusCode::OK))
}

/// The team id in a path (a malformed one is a team that does not exist).
pub(super) fn parse_id(id: &str) -> Result<TeamId, AppError> {
    id.parse().map_err(|_| AppError::NotFound("team".into()))
}

/// Whether `session` may manage `team`'s members and rules: what the use cases check (an org_admin,
/// or a team_admin of the team; auditors change nothing).
fn manages(session: &Session, team: &Team) -> bool {
    can(&session.principal, Action::WriteTeams)
        || (session.principal.is_user()
            && !session.principal.can_read_all()
            && team.is_team_admin(session.principal.user()))
}

/// Builds a team's page, with `error` after a refused form.
/// Where the teams pages are.
const TEAMS: &str = "/console/teams";

async fn team_page(
    edict: &Edict,
    session: &Session,
    id: &str,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<TeamPage, Failure> {
    let layout = Layout::new(session, "/console/teams");
    let fail = |e| Failure::new(layout.clone(), e);
    let team_id = parse_id(id).map_err(fail)?;
    let team = edict
        .team(&session.principal, team_id)
        .await
        .map_err(fail)?;
    let Some(name) = team.name() else {
        return Err(fail(AppError::NotFound("team".into())));
    };
    let can_admin = can(&session.principal, Action::WriteTeams) && !team.archived();
    let can_manage = manages(session, &team) && !team.archived();
    let me = session.principal.user();
    let mut people = People::new(edict, &session.principal);
    let mut members = Vec::new();
    for (user, role) in team.members() {
        members.push(MemberRow {
            user_id: user.to_string(),
            name: people.name(*user).await,
            role: role.as_str(),
            can_change: can_manage && (can_admin || *user == me || !team.is_team_admin(*user)),
        });
    }
    let mut attached = Vec::new();
    for (rule, a) in team.attachments() {
        let name = match edict.rule(&session.principal, *rule).await {
            Ok(r) => r
                .approved()
                .map(|a| a.spec().name.as_str().to_owned())
                .unwrap_or_else(|| rule.to_string()),
            Err(_) => rule.to_string(),
        };
        let (mode, minutes) = enforcement(a.enforcement());
        attached.push(AttachedRow {
            rule_id: rule.to_string(),
            name,
            layer: a.rule_layer().as_str(),
            revision: a.rule_revision(),
            mode,
            minutes,
            attached_by: people.name(a.attached_by()).await,
            attached_at: when(a.attached_at()),
        });
    }
    let (layers, ruleset_revision, ruleset_hash) = match edict
        .team_ruleset(&session.principal, id, None)
        .await
    {
        Ok(fetched) => {
            let doc = &fetched.item;
            let layers = ["organization", "team", "project"]
                .into_iter()
                .map(|layer| LayerView {
                    layer,
                    rules: doc["layers"][layer]["rules"].as_array().map_or(0, Vec::len),
                    text: doc["layers"][layer]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                })
                .collect();
            (
                Some(layers),
                doc["revision"].as_u64().unwrap_or_default(),
                doc["hash"].as_str().unwrap_or_default().to_owned(),
            )
        }
        Err(AppError::NotFound(_) | AppError::NotYetConsistent { .. }) => (None, 0, String::new()),
        Err(e) => return Err(fail(e)),
    };
    let (converged, machines) = match edict.team_convergence(&session.principal, id).await {
        Ok((latest, enforced)) => {
            let revision = latest.as_ref().and_then(|d| d["revision"].as_u64());
            let hash = latest
                .as_ref()
                .and_then(|d| d["hash"].as_str().map(str::to_owned));
            let current = enforced
                .iter()
                .filter(|e| {
                    Some(e.revision) == revision && hash.as_deref() == Some(e.hash.as_str())
                })
                .count();
            (current, enforced.len())
        }
        Err(_) => (0, 0),
    };
    let rules_to_attach = if can_manage {
        attachable(edict, session, &team).await
    } else {
        Vec::new()
    };
    let users_to_add = if can_manage && session.principal.can_read_all() {
        addable(edict, session, &team).await
    } else {
        Vec::new()
    };
    Ok(TeamPage {
        id: id.to_owned(),
        name: name.as_str().to_owned(),
        version: team.version(),
        archived: team.archived(),
        created: team.created_at().map(when).unwrap_or_default(),
        members,
        attached,
        layers,
        ruleset_revision,
        ruleset_hash,
        converged,
        machines,
        can_manage,
        can_admin,
        rules_to_attach,
        users_to_add,
        modes: &MODES,
        roles: &ROLES,
        notice,
        error,
        layout,
    })
}

/// A mode as the page shows it, and a temporary rule's time limit in minutes.
fn enforcement(e: Enforcement) -> (&'static str, String) {
    let minutes = e
        .temporary_timeout_secs()
        .map(|s| (s / 60).max(1).to_string())
        .unwrap_or_default();
    (e.mode().as_str(), minutes)
}

/// Parses a mode and its time limit in minutes, as the forms send them.
pub(super) fn parse_enforcement(mode: &str, minutes: &str) -> Result<Enforcement, AppError> {
    let mode = EnforcementMode::parse(mode.trim())?;
    let minutes = minutes.trim();
    let secs = if mode == EnforcementMode::Temporary {
        let minutes: u64 = minutes.parse().map_err(|_| AppError::Invalid {
            field: "time limit".into(),
            message: "a temporary rule needs a time limit, in whole minutes".into(),
        })?;
        Some(minutes.saturating_mul(60))
    } else {
        None
    };
    Ok(Enforcement::parse(mode, secs)?)
}

/// Approved team- and project-layer rules the team has not attached (what the attach form offers).
async fn attachable(edict: &Edict, session: &Session, team: &Team) -> Vec<RuleOption> {
    let query = RuleQuery {
        status: Some("approved".into()),
        layer: None,
        tag: None,
        text: None,
    };
    let page_request = PageRequest {
        after: None,
        limit: Some(200),
        min_position: None,
    };
    let Ok(listed) = edict
        .list_rules(&session.principal, &query, &page_request)
        .await
    else {
        return Vec::new();
    };
    listed
        .items
        .iter()
        .filter(|doc| doc["layer"].as_str() != Some("organization"))
        .filter(|doc| {
            doc["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .is_none_or(|id| team.attachment(id).is_none())
        })
        .map(|doc| RuleOption {
            id: doc["id"].as_str().unwrap_or_default().to_owned(),
            label: format!(
                "{} ({})",
                doc["name"].as_str().unwrap_or_default(),
                doc["layer"].as_str().unwrap_or_default()
            ),
        })
        .collect()
}

/// Active users who are not members yet (for those who may list users; others type an id).
async fn addable(edict: &Edict, session: &Session, team: &Team) -> Vec<UserOption> {
    let page_request = PageRequest {
        after: None,
        limit: Some(500),
        min_position: None,
    };
    let Ok(listed) = edict
        .list_users(&session.principal, None, &page_request)
        .await
    else {
        return Vec::new();
    };
    listed
        .items
        .iter()
        .filter(|doc| doc["active"].as_bool().unwrap_or(true))
        .filter(|doc| {
            doc["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .is_none_or(|id| !team.is_member(id))
        })
        .map(|doc| UserOption {
            id: doc["id"].as_str().unwrap_or_default().to_owned(),
            label: doc["email"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_mode_needs_minutes_and_others_take_none() {
        let temporary = parse_enforcement("temporary", "90").unwrap();
        assert_eq!(temporary.temporary_timeout_secs(), Some(5400));
        assert!(parse_enforcement("temporary", "").is_err());
        assert!(parse_enforcement("temporary", "0").is_err());
        let block = parse_enforcement("block", "").unwrap();
        assert_eq!(block.mode(), EnforcementMode::Block);
        assert!(parse_enforcement("sometimes", "").is_err());
    }
}
