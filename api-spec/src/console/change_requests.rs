//! The change-request inbox: the list of change requests the viewer may see, filtered by team and
//! status, and a change request's page (the developer's diff beside the content of the rule it
//! touched, who made it, on which machine and when, its decision and its exceptions), with the
//! decisions the API offers on it, one to one (`decide`).
//!
//! Every figure comes from the use cases the API's change-request endpoints call
//! (`list_change_requests`, `change_request`), so a role sees here exactly what it may read there: all
//! of them for org_admins and auditors, a team's for its team_admins (with the team chosen), one's own
//! otherwise. Both pages are live (`data-live`, see `live`): they refresh when what they show changed.

mod decide;

pub use decide::{approve, deny_exception, grant_exception, reject, request_exception, withdraw};

use super::layout::{Action, Layout, can};
use super::live;
use super::render::{Failure, page, when};
use super::session::Session;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_application::queries::PageRequest;
use edict_domain::change_request::{
    ChangeRequest, ChangeRequestStatus, ExceptionKind, ExceptionResolution,
};
use edict_domain::{AgentId, ChangeRequestId, RuleId, TeamId, UserId, Versioned};
use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Response, handler};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Where the inbox lives.
pub const INBOX: &str = "/console/change-requests";
/// The statuses the inbox filters by, as the API names them.
pub const STATUSES: [&str; 8] = [
    "pending",
    "approved",
    "rejected",
    "auto_reverted",
    "exception_requested",
    "exception_granted",
    "exception_denied",
    "withdrawn",
];
/// Change requests on one page of the inbox.
pub const PAGE_SIZE: usize = 50;
/// Teams offered in the filter at most.
const MAX_TEAMS: usize = 200;

/// The inbox's filters, as the query string carries them.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct InboxQuery {
    /// A team's id (empty: every team the viewer may see).
    #[serde(default)]
    pub team: String,
    /// One of [`STATUSES`] (empty: any).
    #[serde(default)]
    pub status: String,
    /// The cursor of the page.
    #[serde(default)]
    pub after: Option<String>,
}

impl InboxQuery {
    /// The team filter, when it names one.
    pub fn team(&self) -> Option<String> {
        Some(self.team.trim().to_owned()).filter(|t| !t.is_empty())
    }

    /// The status filter, when it is a known status.
    pub fn status(&self) -> Option<String> {
        STATUSES
            .contains(&self.status.as_str())
            .then(|| self.status.clone())
    }

    /// The page asked for.
    pub fn page(&self) -> PageRequest {
        PageRequest {
            after: self.after.clone().filter(|a| !a.is_empty()),
            limit: Some(PAGE_SIZE),
            min_position: None,
        }
    }
}

/// The inbox's page of change requests for `principal` with `filters`, as the list shows it and the
/// live stream watches it.
pub async fn inbox_page(
    edict: &Edict,
    principal: &Principal,
    filters: &InboxQuery,
) -> Result<edict_application::queries::Listed, AppError> {
    edict
        .list_change_requests(principal, filters.team(), filters.status(), &filters.page())
        .await
}

/// What the live stream compares for the inbox: each listed change request's id and version, and
/// whether there is a next page.
pub fn inbox_fingerprint(listed: &edict_application::queries::Listed) -> String {
    let mut parts: Vec<String> = listed
        .items
        .iter()
        .map(|doc| format!("{}@{}", doc["id"], doc["version"]))
        .collect();
    parts.push(listed.next.clone().unwrap_or_default());
    live::digest(&parts)
}

/// A team in the filter.
pub struct TeamOption {
    id: String,
    name: String,
}

/// A change request as the inbox lists it.
pub struct ChangeRow {
    id: String,
    file: String,
    rule: String,
    team: String,
    developer: String,
    status: String,
    opened: String,
    /// When a pending one is reverted, or when it was decided.
    deadline: String,
}

/// The inbox.
#[derive(Template, WebTemplate)]
#[template(path = "console/change_requests_list.html")]
pub struct InboxPage {
    layout: Layout,
    rows: Vec<ChangeRow>,
    teams: Vec<TeamOption>,
    team: String,
    status: String,
    statuses: &'static [&'static str],
    next: Option<String>,
    own_only: bool,
    lag: i64,
    version: String,
    live_query: String,
}

/// `GET /console/change-requests`: the inbox, filtered by team and status.
#[handler]
pub async fn list(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Query(filters): Query<InboxQuery>,
) -> poem::Result<Response> {
    let layout = Layout::new(&session, INBOX);
    let fail = |e| Failure::new(layout.clone(), e);
    let listed = inbox_page(&edict, &session.principal, &filters)
        .await
        .map_err(fail)?;
    let version = inbox_fingerprint(&listed);
    let teams = team_options(&edict, &session.principal).await;
    let team_names: HashMap<&str, &str> = teams
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    let mut names = Names::new(&edict, &session.principal);
    let mut rows = Vec::with_capacity(listed.items.len());
    for doc in &listed.items {
        rows.push(row(doc, &team_names, &mut names).await);
    }
    let team = filters.team().unwrap_or_default();
    let status = filters.status().unwrap_or_default();
    let filter_query = |after: Option<&str>| {
        let mut pairs = vec![("team", team.as_str()), ("status", status.as_str())];
        if let Some(after) = after {
            pairs.push(("after", after));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    };
    let next = listed
        .next
        .as_deref()
        .map(|after| filter_query(Some(after)));
    let live_query = filter_query(filters.page().after.as_deref());
    let administers = filters.team().is_some()
        && decides_for(&edict, &session.principal, team.parse().ok()).await;
    let own_only = !(can(&session.principal, Action::ReadOperations) || administers);
    Ok(page(
        InboxPage {
            layout,
            rows,
            teams,
            team,
            status,
            statuses: &STATUSES,
            next,
            own_only,
            lag: listed.freshness.lag,
            version,
            live_query,
        },
        StatusCode::OK,
    ))
}

/// The teams the viewer may read, for the filter (every active team for org_admins and auditors).
async fn team_options(edict: &Edict, principal: &Principal) -> Vec<TeamOption> {
    let page = PageRequest {
        after: None,
        limit: Some(MAX_TEAMS),
        min_position: None,
    };
    let mut teams: Vec<TeamOption> = match edict.list_teams(principal, None, &page).await {
        Ok(listed) => listed
            .items
            .iter()
            .filter_map(|doc| {
                Some(TeamOption {
                    id: doc["id"].as_str()?.to_owned(),
                    name: doc["name"].as_str()?.to_owned(),
                })
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "the inbox could not list the teams for its filter");
            Vec::new()
        }
    };
    teams.sort_by_key(|t| t.name.to_lowercase());
    teams
}

async fn row(doc: &Value, teams: &HashMap<&str, &str>, names: &mut Names<'_>) -> ChangeRow {
    let text = |key: &str| doc[key].as_str().unwrap_or_default().to_owned();
    let time = |value: &Value| {
        value
            .as_str()
            .and_then(|t| t.parse().ok())
            .map(when)
            .unwrap_or_default()
    };
    let status = text("status");
    let deadline = if status == "pending" {
        format!("reverts {}", time(&doc["timeout_at"]))
    } else {
        match doc["decision"]["at"].as_str() {
            Some(_) => format!("decided {}", time(&doc["decision"]["at"])),
            None => String::new(),
        }
    };
    let team_id = text("team");
    ChangeRow {
        id: text("id"),
        file: text("file"),
        rule: names.rule(&text("rule")).await,
        team: teams
            .get(team_id.as_str())
            .map_or_else(|| short("team", &team_id), |name| (*name).to_owned()),
        developer: match text("user").parse() {
            Ok(user) => names.person(user).await,
            Err(_) => String::new(),
        },
        status,
        opened: time(&doc["opened_at"]),
        deadline,
    }
}

/// `what` and the first 8 characters of `id` (for what the viewer may not read the name of).
pub(super) fn short(what: &str, id: &str) -> String {
    format!("{what} {}", id.chars().take(8).collect::<String>())
}

/// Names for ids, as far as the viewer may read them (else a short id), each looked up once.
pub(super) struct Names<'a> {
    edict: &'a Edict,
    principal: &'a Principal,
    people: HashMap<UserId, String>,
    rules: HashMap<String, String>,
}

impl<'a> Names<'a> {
    pub(super) fn new(edict: &'a Edict, principal: &'a Principal) -> Self {
        Names {
            edict,
            principal,
            people: HashMap::new(),
            rules: HashMap::new(),
        }
    }

    /// A person's email ("you" for the viewer).
    pub(super) async fn person(&mut self, id: UserId) -> String {
        if id == self.principal.user() {
            return "you".into();
        }
        if let Some(name) = self.people.get(&id) {
            return name.clone();
        }
        let name = match self.edict.user(self.principal, id).await {
            Ok(user) => user
                .email()
                .map_or_else(|| short("user", &id.to_string()), |e| e.as_str().to_owned()),
            Err(_) => short("user", &id.to_string()),
        };
        self.people.insert(id, name.clone());
        name
    }

    /// A rule's name, from the rule catalog.
    async fn rule(&mut self, id: &str) -> String {
        if let Some(name) = self.rules.get(id) {
            return name.clone();
        }
        let name = match self.edict.rule_entry(self.principal, id, None).await {
            Ok(entry) => entry.item["name"]
                .as_str()
                .map_or_else(|| short("rule", id), str::to_owned),
            Err(_) => short("rule", id),
        };
        self.rules.insert(id.to_owned(), name.clone());
        name
    }
}

/// One line of the developer's diff.
pub struct DiffLine {
    /// `ins`, `del`, `hunk` (an `@@` header), `meta` (the `---`/`+++` file names) or `same`.
    kind: &'static str,
    text: String,
}

/// The lines of a unified diff, each with its kind.
fn diff_lines(diff: &str) -> Vec<DiffLine> {
    diff.lines()
        .map(|line| DiffLine {
            kind: if line.starts_with("+++") || line.starts_with("---") {
                "meta"
            } else if line.starts_with("@@") {
                "hunk"
            } else if line.starts_with('+') {
                "ins"
            } else if line.starts_with('-') {
                "del"
            } else {
                "same"
            },
            text: line.to_owned(),
        })
        .collect()
}

/// An exception as the page shows it.
pub struct ExceptionView {
    requested_by: String,
    requested_at: String,
    justification: String,
    asked: String,
    outcome: String,
    decided: String,
}

/// The rule a change touched, as the page shows it.
pub struct RuleView {
    id: String,
    name: String,
    revision: Option<u32>,
    content: String,
}

/// A change request's page.
#[derive(Template, WebTemplate)]
#[template(path = "console/change_request.html")]
pub struct ChangePage {
    layout: Layout,
    id: String,
    version: u64,
    status: String,
    file: String,
    layer: String,
    team: String,
    developer: String,
    machine: String,
    opened: String,
    timeout: String,
    original_hash: String,
    new_hash: String,
    reports: usize,
    diff: Vec<DiffLine>,
    rule: RuleView,
    decision: Option<String>,
    exceptions: Vec<ExceptionView>,
    /// The viewer may approve or reject it now.
    can_decide: bool,
    /// The viewer may grant or deny its pending exception now.
    can_resolve: bool,
    /// The viewer is its developer and it is pending.
    can_withdraw: bool,
    /// The viewer is its developer and may ask for an exception now.
    can_request: bool,
    /// The viewer administers it but made the change.
    own_change: bool,
    /// When the pending exception asked to end (pre-fills the grant form), `YYYY-MM-DDTHH:MM` UTC.
    requested_until: String,
    notice: Option<String>,
    error: Option<String>,
    /// What the viewer typed in a refused form, to show again.
    typed: String,
    live_version: String,
}

/// What a decision's redirect says happened (`?done=`).
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: String,
}

/// `GET /console/change-requests/{id}`.
#[handler]
pub async fn show(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> poem::Result<Response> {
    let notice = match done.done.as_str() {
        "approved" => Some("Approved: the developer keeps the change."),
        "rejected" => Some("Rejected: the agent reverts the change."),
        "withdrawn" => Some("Withdrawn."),
        "requested" => Some("Exception requested: a team admin decides it."),
        "granted" => Some("Exception granted."),
        "denied" => Some("Exception denied: the change stays reverted."),
        _ => None,
    };
    let view = change_page(&edict, &session, &id, notice.map(str::to_owned), None, "").await?;
    Ok(page(view, StatusCode::OK))
}

/// The change request id in a path (a malformed one is a change request that does not exist).
pub(super) fn parse_id(id: &str) -> Result<ChangeRequestId, AppError> {
    id.parse()
        .map_err(|_| AppError::NotFound("change request".into()))
}

/// Whether `principal` may decide on changes of `team`: an org_admin, or a team_admin of it (the
/// check the decision use cases make).
async fn decides_for(edict: &Edict, principal: &Principal, team: Option<TeamId>) -> bool {
    if can(principal, Action::DecideChangeRequests) {
        return true;
    }
    match team {
        Some(team) if principal.is_user() => edict
            .team(principal, team)
            .await
            .is_ok_and(|t| t.is_team_admin(principal.user())),
        _ => false,
    }
}

/// A time as a `datetime-local` field holds it (UTC).
fn local_input(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M").to_string()
}

/// Builds a change request's page, with `error` (and what was typed) after a refused form.
pub(super) async fn change_page(
    edict: &Edict,
    session: &Session,
    id: &str,
    notice: Option<String>,
    error: Option<String>,
    typed: &str,
) -> Result<ChangePage, Failure> {
    let layout = Layout::new(session, INBOX);
    let fail = |e| Failure::new(layout.clone(), e);
    let change_id = parse_id(id).map_err(fail)?;
    let change = edict
        .change_request(&session.principal, change_id)
        .await
        .map_err(fail)?;
    let Some(status) = change.status() else {
        return Err(fail(AppError::NotFound("change request".into())));
    };
    let principal = &session.principal;
    let mut names = Names::new(edict, principal);
    let own = change.user() == Some(principal.user());
    let decides = decides_for(edict, principal, change.team()).await;
    let pending_exception = change
        .exception()
        .filter(|e| e.resolution.is_none())
        .cloned();
    let can_request = own
        && matches!(
            status,
            ChangeRequestStatus::Rejected
                | ChangeRequestStatus::AutoReverted
                | ChangeRequestStatus::ExceptionDenied
        );
    let decision = match change.decision() {
        Some(d) => {
            let by = match d.by {
                Some(by) => names.person(by).await,
                None => "nobody in time (reverted automatically)".into(),
            };
            let reason = d
                .reason
                .as_ref()
                .map(|r| format!(": {}", r.as_str()))
                .unwrap_or_default();
            Some(format!(
                "{} by {by}, {}{reason}",
                status_label(status),
                when(d.at)
            ))
        }
        None => None,
    };
    let exceptions = exception_views(&change, &mut names).await;
    Ok(ChangePage {
        id: id.to_owned(),
        version: change.version(),
        status: status.as_str().to_owned(),
        file: change
            .file()
            .map(|f| f.as_str().to_owned())
            .unwrap_or_default(),
        layer: change
            .layer()
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default(),
        team: team_name(edict, principal, change.team()).await,
        developer: match change.user() {
            Some(user) => names.person(user).await,
            None => String::new(),
        },
        machine: machine(edict, principal, change.agent()).await,
        opened: change.opened_at().map(when).unwrap_or_default(),
        timeout: change.timeout_at().map(when).unwrap_or_default(),
        original_hash: change
            .original_hash()
            .map(|h| h.as_str().to_owned())
            .unwrap_or_default(),
        new_hash: change
            .new_hash()
            .map(|h| h.as_str().to_owned())
            .unwrap_or_default(),
        reports: change.report_ids().len(),
        diff: diff_lines(change.diff().map(|d| d.as_str()).unwrap_or_default()),
        rule: rule_view(edict, principal, change.rule()).await,
        decision,
        exceptions,
        can_decide: decides && !own && status == ChangeRequestStatus::Pending,
        can_resolve: decides && !own && pending_exception.is_some(),
        can_withdraw: own && status == ChangeRequestStatus::Pending,
        can_request,
        own_change: decides && own,
        requested_until: match pending_exception.map(|e| e.kind) {
            Some(ExceptionKind::TimeLimited { until }) => local_input(until),
            _ => String::new(),
        },
        live_version: live::digest(&[change.version()]),
        notice,
        error,
        typed: typed.to_owned(),
        layout,
    })
}

/// How a status reads in a sentence.
fn status_label(status: ChangeRequestStatus) -> &'static str {
    match status {
        ChangeRequestStatus::Pending => "Pending",
        ChangeRequestStatus::Approved => "Approved",
        ChangeRequestStatus::Rejected
        | ChangeRequestStatus::ExceptionRequested
        | ChangeRequestStatus::ExceptionGranted
        | ChangeRequestStatus::ExceptionDenied => "Decided",
        ChangeRequestStatus::AutoReverted => "Reverted",
        ChangeRequestStatus::Withdrawn => "Withdrawn",
    }
}

async fn exception_views(change: &ChangeRequest, names: &mut Names<'_>) -> Vec<ExceptionView> {
    let mut views = Vec::new();
    for e in change.exceptions() {
        let (outcome, decided) = match &e.resolution {
            None => ("pending".to_owned(), String::new()),
            Some(ExceptionResolution::Granted { by, until, at }) => (
                match until {
                    Some(until) => format!("granted until {}", when(*until)),
                    None => "granted for good".to_owned(),
                },
                format!("{}, {}", names.person(*by).await, when(*at)),
            ),
            Some(ExceptionResolution::Denied { by, reason, at }) => (
                format!("denied: {}", reason.as_str()),
                format!("{}, {}", names.person(*by).await, when(*at)),
            ),
        };
        views.push(ExceptionView {
            requested_by: names.person(e.requested_by).await,
            requested_at: when(e.requested_at),
            justification: e.justification.as_str().to_owned(),
            asked: match e.kind {
                ExceptionKind::TimeLimited { until } => format!("until {}", when(until)),
                ExceptionKind::Permanent => "for good".to_owned(),
            },
            outcome,
            decided,
        });
    }
    views
}

async fn team_name(edict: &Edict, principal: &Principal, team: Option<TeamId>) -> String {
    let Some(team) = team else {
        return String::new();
    };
    match edict.team(principal, team).await {
        Ok(found) => found.name().map_or_else(
            || short("team", &team.to_string()),
            |n| n.as_str().to_owned(),
        ),
        Err(_) => short("team", &team.to_string()),
    }
}

/// The machine the change was made on: its name and id, as far as the viewer may read the agent.
async fn machine(edict: &Edict, principal: &Principal, agent: Option<AgentId>) -> String {
    let Some(agent) = agent else {
        return String::new();
    };
    match edict.agent(principal, agent).await {
        Ok(found) => {
            let name = found.machine_name().map(|n| n.as_str().to_owned());
            let id = found.machine_id().map(|m| m.to_string());
            match (name, id) {
                (Some(name), Some(id)) if name != id => format!("{name} ({id})"),
                (Some(name), _) => name,
                (None, Some(id)) => id,
                (None, None) => short("agent", &agent.to_string()),
            }
        }
        Err(_) => short("agent", &agent.to_string()),
    }
}

async fn rule_view(edict: &Edict, principal: &Principal, rule: Option<RuleId>) -> RuleView {
    let Some(rule) = rule else {
        return RuleView {
            id: String::new(),
            name: String::new(),
            revision: None,
            content: String::new(),
        };
    };
    let found = edict.rule(principal, rule).await.ok();
    let approved = found.as_ref().and_then(|r| r.approved());
    RuleView {
        id: rule.to_string(),
        name: approved.map_or_else(
            || short("rule", &rule.to_string()),
            |a| a.spec().name.as_str().to_owned(),
        ),
        revision: approved.map(|a| a.number()),
        content: approved
            .map(|a| a.spec().content.as_str().to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unified_diff_is_split_by_kind() {
        let lines = diff_lines("--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same\n");
        let kinds: Vec<_> = lines.iter().map(|l| l.kind).collect();
        assert_eq!(kinds, ["meta", "meta", "hunk", "del", "ins", "same"]);
    }

    #[test]
    fn unknown_statuses_are_no_filter() {
        let query = InboxQuery {
            status: "bogus".into(),
            team: "  ".into(),
            after: None,
        };
        assert_eq!(query.status(), None);
        assert_eq!(query.team(), None);
    }
}
