//! A change request's page: the developer's diff beside the content of the rule it touched, who
//! made it, on which machine and when, its decision and its exceptions, and the decisions the viewer
//! may make on it (the forms post to `decide`).

use super::{INBOX, Names, short};
use crate::console::layout::{Action, Layout, can};
use crate::console::live;
use crate::console::render::{Done, Failure, page, when};
use crate::console::session::Session;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_domain::change_request::{
    ChangeRequest, ChangeRequestStatus, ExceptionKind, ExceptionResolution,
};
use edict_domain::{AgentId, ChangeRequestId, RuleId, TeamId, Versioned};
use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Response, handler};
use std::sync::Arc;

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

/// `GET /console/change-requests/{id}`.
#[handler]
pub async fn show(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> poem::Result<Response> {
    let notice = done.notice(&[
        ("approved", "Approved: the developer keeps the change."),
        ("rejected", "Rejected: the agent reverts the change."),
        ("withdrawn", "Withdrawn."),
        ("requested", "Exception requested: a team admin decides it."),
        ("granted", "Exception granted."),
        ("denied", "Exception denied: the change stays reverted."),
    ]);
    let view = change_page(&edict, &session, &id, notice.map(str::to_owned), None, "").await?;
    Ok(page(view, StatusCode::OK))
}

/// The change request id in a path (a malformed one is a change request that does not exist).
pub(in crate::console) fn parse_id(id: &str) -> Result<ChangeRequestId, AppError> {
    id.parse()
        .map_err(|_| AppError::NotFound("change request".into()))
}

/// Whether `principal` may decide on changes of `team`: an org_admin, or a team_admin of it (the
/// check the decision use cases make).
pub(super) async fn decides_for(
    edict: &Edict,
    principal: &Principal,
    team: Option<TeamId>,
) -> bool {
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
}
