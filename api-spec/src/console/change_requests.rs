//! The change-request inbox: the list of change requests the viewer may see, filtered by team and
//! status, and a change request's page (the developer's diff beside the content of the rule it
//! touched, who made it, on which machine and when, its decision and its exceptions), with the
//! decisions the API offers on it, one to one (`decide`).
//!
//! Every figure comes from the use cases the API's change-request endpoints call
//! (`list_change_requests`, `change_request`), so a role sees here exactly what it may read there: all
//! of them for org_admins and auditors, a team's for its team_admins (with the team chosen), one's own
//! otherwise. Both pages are live (`data-live`, see `live`): they refresh when what they show changed.
//!
//! Layout: this module lists (and names what the viewer may read the name of); `detail` shows one;
//! `decide` posts the decisions.

mod decide;
mod detail;

pub use decide::{approve, deny_exception, grant_exception, reject, request_exception, withdraw};
use detail::decides_for;
pub(super) use detail::parse_id;
pub use detail::show;

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
use edict_domain::UserId;
use poem::http::StatusCode;
use poem::web::{Data, Query};
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

#[cfg(test)]
mod tests {
    use super::*;

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
