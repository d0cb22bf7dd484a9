//! The rule library pages: the list with its filters, a rule's page (its revision in force, the
//! revision under work, the diff between them, and the review actions), and the decisions posted from
//! it (submit, approve, reject).
//!
//! Layout: this module lists, shows and decides; `form` drafts and edits (with the live preview);
//! `review` renders a revision as its managed section and diffs two of them; `revisions` lists a rule's
//! revisions and events (its history page).

mod form;
mod review;
mod revisions;

pub use form::{create, edit_form, new_form, preview, update};
pub use revisions::history;

use super::command::Posted;
use super::layout::{Action, Layout, can};
use super::render::{Done, Failure, page, when};
use super::session::Session;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_application::queries::{PageRequest, RuleQuery};
use edict_domain::rule::{Rule, WorkingState};
use edict_domain::value::Reason;
use edict_domain::{RuleId, UserId, Versioned};
use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Response, handler};
use review::DiffLine;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The statuses the list filters by.
const STATUSES: [&str; 5] = ["draft", "pending", "approved", "rejected", "archived"];
/// The layers.
pub(super) const LAYERS: [&str; 3] = ["organization", "team", "project"];

/// The list's filters, as the query string carries them.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    layer: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: Option<String>,
}

/// A rule as the list shows it.
pub struct RuleRow {
    id: String,
    name: String,
    layer: String,
    status: String,
    revision: String,
    updated: String,
}

/// The rule library.
#[derive(Template, WebTemplate)]
#[template(path = "console/rules_list.html")]
pub struct RulesListPage {
    layout: Layout,
    rows: Vec<RuleRow>,
    status: String,
    layer: String,
    q: String,
    statuses: &'static [&'static str],
    layers: &'static [&'static str],
    next: Option<String>,
    can_write: bool,
    lag: i64,
}

/// `GET /console/rules`: the library, filtered by status, layer and text.
#[handler]
pub async fn list(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Query(filters): Query<ListQuery>,
) -> poem::Result<Response> {
    let layout = Layout::new(&session, "/console/rules");
    let status = known(&filters.status, &STATUSES);
    let layer = known(&filters.layer, &LAYERS);
    let query = RuleQuery {
        status: status.clone(),
        layer: layer.clone(),
        tag: None,
        text: Some(filters.q.trim().to_owned()).filter(|q| !q.is_empty()),
    };
    let page_request = PageRequest {
        after: filters.after.clone().filter(|a| !a.is_empty()),
        limit: Some(50),
        min_position: None,
    };
    let listed = edict
        .list_rules(&session.principal, &query, &page_request)
        .await
        .map_err(|e| Failure::new(layout.clone(), e))?;
    let rows = listed.items.iter().map(row).collect();
    let next = listed.next.map(|after| {
        serde_urlencoded::to_string([
            ("status", status.as_deref().unwrap_or("")),
            ("layer", layer.as_deref().unwrap_or("")),
            ("q", filters.q.as_str()),
            ("after", after.as_str()),
        ])
        .unwrap_or_default()
    });
    Ok(page(
        RulesListPage {
            can_write: can(&session.principal, Action::WriteRules),
            layout,
            rows,
            status: status.unwrap_or_default(),
            layer: layer.unwrap_or_default(),
            q: filters.q,
            statuses: &STATUSES,
            layers: &LAYERS,
            next,
            lag: listed.freshness.lag,
        },
        StatusCode::OK,
    ))
}

/// `value` when it is one of `allowed`.
fn known(value: &str, allowed: &[&str]) -> Option<String> {
    allowed.contains(&value).then(|| value.to_owned())
}

fn row(doc: &Value) -> RuleRow {
    let text = |key: &str| doc[key].as_str().unwrap_or_default().to_owned();
    let revision = match (
        doc["approved_revision"].as_u64(),
        doc["working_revision"].as_u64(),
    ) {
        (Some(a), Some(w)) => format!("{a} in force, {w} under work"),
        (Some(a), None) => format!("{a}"),
        (None, Some(w)) => format!("{w} (none in force)"),
        (None, None) => String::new(),
    };
    RuleRow {
        id: text("id"),
        name: text("name"),
        layer: text("layer"),
        status: text("status"),
        revision,
        updated: doc["updated_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .map(when)
            .unwrap_or_default(),
    }
}

/// A revision as the rule page shows it.
pub struct RevisionView {
    number: u32,
    name: String,
    description: String,
    author: String,
    rendered: String,
    state: String,
    /// Who approved (in force) or has approved so far (pending).
    approvers: Vec<String>,
    /// When it came into force, or was submitted.
    at: String,
    rejection: Option<String>,
}

/// A rule's page.
#[derive(Template, WebTemplate)]
#[template(path = "console/rule.html")]
pub struct RulePage {
    layout: Layout,
    id: String,
    name: String,
    layer: String,
    status: String,
    version: u64,
    approved: Option<RevisionView>,
    working: Option<RevisionView>,
    diff: Vec<DiffLine>,
    can_edit: bool,
    can_submit: bool,
    can_review: bool,
    can_revise: bool,
    own_revision: bool,
    notice: Option<String>,
    error: Option<String>,
    reason: String,
}

/// `GET /console/rules/{id}`: the rule, its revisions and what the viewer may do with it.
#[handler]
pub async fn show(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> poem::Result<Response> {
    let notice = done.notice(&[
        ("drafted", "Draft saved."),
        ("saved", "Changes saved."),
        ("submitted", "Submitted for review."),
        ("approved", "Approval recorded."),
        ("rejected", "Revision rejected and sent back to its author."),
    ]);
    let view = rule_page(&edict, &session, &id, notice.map(str::to_owned), None, "").await?;
    Ok(page(view, StatusCode::OK))
}

/// Builds a rule's page, with `error` (and the reason typed) after a refused decision.
async fn rule_page(
    edict: &Edict,
    session: &Session,
    id: &str,
    notice: Option<String>,
    error: Option<String>,
    reason: &str,
) -> Result<RulePage, Failure> {
    let layout = Layout::new(session, "/console/rules");
    let fail = |e| Failure::new(layout.clone(), e);
    let rule_id = parse_id(id).map_err(fail)?;
    let rule = edict
        .rule(&session.principal, rule_id)
        .await
        .map_err(fail)?;
    let (Some(layer), Some(status)) = (rule.layer(), rule.status()) else {
        return Err(fail(AppError::NotFound("rule".into())));
    };
    let mut people = People::new(edict, &session.principal);
    let approved = match rule.approved() {
        Some(a) => Some(RevisionView {
            number: a.number(),
            name: a.spec().name.as_str().to_owned(),
            description: a.spec().description.as_str().to_owned(),
            author: people.name(a.author()).await,
            rendered: review::rendered(rule_id, a.number(), a.spec()),
            state: "approved".into(),
            approvers: people.names(a.approvers()).await,
            at: when(a.approved_at()),
            rejection: None,
        }),
        None => None,
    };
    let working = match rule.working() {
        Some(w) => {
            let (approvers, at, rejection) = match w.state() {
                WorkingState::Draft => (Vec::new(), when(w.opened_at()), None),
                WorkingState::Pending {
                    submitted_at,
                    approvals,
                    ..
                } => {
                    let by: Vec<UserId> = approvals.iter().map(|a| a.by).collect();
                    (people.names(&by).await, when(*submitted_at), None)
                }
                WorkingState::Rejected { by, reason, at } => (
                    Vec::new(),
                    when(*at),
                    Some(format!("{}: {}", people.name(*by).await, reason.as_str())),
                ),
            };
            Some(RevisionView {
                number: w.number(),
                name: w.spec().name.as_str().to_owned(),
                description: w.spec().description.as_str().to_owned(),
                author: people.name(w.author()).await,
                rendered: review::rendered(rule_id, w.number(), w.spec()),
                state: w.status().as_str().to_owned(),
                approvers,
                at,
                rejection,
            })
        }
        None => None,
    };
    let diff = match &working {
        Some(w) => review::diff(
            approved.as_ref().map_or("", |a| a.rendered.as_str()),
            &w.rendered,
        ),
        None => Vec::new(),
    };
    let writer = can(&session.principal, Action::WriteRules) && !rule.archived();
    let state = rule.working().map(|w| w.state());
    let own_revision = rule
        .working()
        .is_some_and(|w| w.is_written_by(session.principal.user()));
    Ok(RulePage {
        id: id.to_owned(),
        name: working
            .as_ref()
            .or(approved.as_ref())
            .map(|r| r.name.clone())
            .unwrap_or_default(),
        layer: layer.as_str().to_owned(),
        status: status.as_str().to_owned(),
        version: rule.version(),
        can_edit: writer
            && matches!(
                state,
                Some(WorkingState::Draft | WorkingState::Rejected { .. })
            ),
        can_submit: writer
            && matches!(
                state,
                Some(WorkingState::Draft | WorkingState::Rejected { .. })
            ),
        can_review: writer && matches!(state, Some(WorkingState::Pending { .. })),
        can_revise: writer && rule.working().is_none() && rule.approved().is_some(),
        own_revision,
        approved,
        working,
        diff,
        notice,
        error,
        reason: reason.to_owned(),
        layout,
    })
}

/// The rule id in a path (a malformed one is a rule that does not exist).
fn parse_id(id: &str) -> Result<RuleId, AppError> {
    id.parse().map_err(|_| AppError::NotFound("rule".into()))
}

/// Emails for user ids, as far as the viewer may read users (else the id).
pub(super) struct People<'a> {
    edict: &'a Edict,
    principal: &'a Principal,
    known: HashMap<UserId, String>,
}

impl<'a> People<'a> {
    pub(super) fn new(edict: &'a Edict, principal: &'a Principal) -> Self {
        People {
            edict,
            principal,
            known: HashMap::new(),
        }
    }

    pub(super) async fn name(&mut self, id: UserId) -> String {
        if let Some(name) = self.known.get(&id) {
            return name.clone();
        }
        let name = match self.edict.user(self.principal, id).await {
            Ok(user) => user
                .email()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_else(|| id.to_string()),
            Err(_) => format!("user {id}"),
        };
        self.known.insert(id, name.clone());
        name
    }

    pub(super) async fn names(&mut self, ids: &[UserId]) -> Vec<String> {
        let mut names = Vec::with_capacity(ids.len());
        for id in ids {
            names.push(self.name(*id).await);
        }
        names
    }

    /// The name of a user id as a document spells it (`user:<id>` or `<id>`); other actors as they are.
    pub(super) async fn name_of(&mut self, raw: &str) -> String {
        match raw.strip_prefix("user:").unwrap_or(raw).parse::<UserId>() {
            Ok(id) => self.name(id).await,
            Err(_) => raw.to_owned(),
        }
    }
}

/// A decision's form: the version the page showed (so a decision applies only to what was seen) and,
/// for a rejection, the reason.
#[derive(Debug, Deserialize)]
pub struct Decision {
    version: Option<u64>,
    #[serde(default)]
    reason: String,
}

/// Which decision a form posts.
enum Verdict {
    Submit,
    Approve,
    Reject,
}

async fn decide(post: Posted<'_, Decision>, verdict: Verdict) -> poem::Result<Response> {
    let (edict, by, context) = (post.edict, post.by(), post.context(post.form.version));
    let outcome = async {
        let rule = parse_id(&post.id)?;
        match verdict {
            Verdict::Submit => edict.submit_rule(by, rule, &context).await,
            Verdict::Approve => edict.approve_rule(by, rule, &context).await,
            Verdict::Reject => {
                let reason = Reason::parse(&post.form.reason)?;
                edict.reject_rule(by, rule, reason, &context).await
            }
        }
    };
    let done = match verdict {
        Verdict::Submit => "submitted",
        Verdict::Approve => "approved",
        Verdict::Reject => "rejected",
    };
    let (session, reason) = (&post.session, &post.form.reason);
    let again =
        async |message| rule_page(edict, session, &post.id, None, Some(message), reason).await;
    post.answer("/console/rules", outcome.await, done, again)
        .await
}

/// `POST /console/rules/{id}/submit`.
#[handler]
pub async fn submit(post: Posted<'_, Decision>) -> poem::Result<Response> {
    decide(post, Verdict::Submit).await
}

/// `POST /console/rules/{id}/approve`.
#[handler]
pub async fn approve(post: Posted<'_, Decision>) -> poem::Result<Response> {
    decide(post, Verdict::Approve).await
}

/// `POST /console/rules/{id}/reject`.
#[handler]
pub async fn reject(post: Posted<'_, Decision>) -> poem::Result<Response> {
    decide(post, Verdict::Reject).await
}

/// Whether a rule exists and is at a state the edit form can change (used by `form`).
pub(super) fn editable(rule: &Rule) -> bool {
    !rule.archived()
        && match rule.working().map(|w| w.state()) {
            Some(WorkingState::Draft | WorkingState::Rejected { .. }) => true,
            Some(WorkingState::Pending { .. }) => false,
            None => rule.approved().is_some(),
        }
}
