//! Drafting and editing a rule: the form (new draft, edit of a draft or rejected revision, or a new
//! revision of an approved rule), its live preview of the rendered section (`console.js` posts the form
//! to [`preview`] as it is typed; without script, the form's Preview button renders it server-side),
//! and the posts that save it.

use super::review;
use super::{LAYERS, editable, parse_id};
use crate::console::command::context;
use crate::console::layout::{Action, Layout, can};
use crate::console::render::{Failure, describe, page, see_other};
use crate::console::session::Session;
use crate::ruleset::{EffectiveRule, Mode};
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_domain::rule::{Category, Description, PathGlob, RuleContent, RuleName, RuleSpec, Tag};
use edict_domain::value::Layer;
use edict_domain::{RuleId, Versioned};
use poem::http::StatusCode;
use poem::web::{Data, Form, Path};
use poem::{Request, Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// The form's fields, as typed (kept as text so a refused form comes back as the user left it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    layer: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    priority: String,
    /// Separated by commas or spaces.
    #[serde(default)]
    tags: String,
    /// One per line.
    #[serde(default)]
    triggers: String,
    /// The rule's version the form was opened at (edits only).
    #[serde(default)]
    version: Option<u64>,
    /// `preview` to render the preview instead of saving (the form without script).
    #[serde(default)]
    intent: String,
}

impl RuleForm {
    fn of(spec: &RuleSpec, version: u64) -> RuleForm {
        RuleForm {
            name: spec.name.as_str().to_owned(),
            description: spec.description.as_str().to_owned(),
            layer: spec.layer.as_str().to_owned(),
            content: spec.content.as_str().to_owned(),
            category: spec
                .category
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            priority: spec.priority.to_string(),
            tags: spec
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            triggers: spec
                .triggers
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            version: Some(version),
            intent: String::new(),
        }
    }

    fn layer(&self) -> Result<Layer, AppError> {
        Layer::parse(self.layer.trim()).map_err(AppError::from)
    }

    fn priority(&self) -> Result<i32, AppError> {
        let priority = self.priority.trim();
        if priority.is_empty() {
            return Ok(0);
        }
        priority.parse().map_err(|_| AppError::Invalid {
            field: "priority".into(),
            message: "must be a whole number".into(),
        })
    }

    /// The spec, each field checked by the domain's own constructors.
    fn spec(&self) -> Result<RuleSpec, AppError> {
        let category = self.category.trim();
        Ok(RuleSpec {
            name: RuleName::parse(&self.name)?,
            description: Description::parse(&self.description)?,
            layer: self.layer()?,
            content: RuleContent::parse(&self.content)?,
            category: (!category.is_empty())
                .then(|| Category::parse(category))
                .transpose()?,
            priority: self.priority()?,
            tags: self
                .tags
                .split([',', ' ', '\n', '\t'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Tag::parse)
                .collect::<Result<_, _>>()?,
            triggers: self
                .triggers
                .lines()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(PathGlob::parse)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The section as typed, without refusing what the domain would (a preview while typing).
    fn preview(&self) -> String {
        let Ok(layer) = self.layer() else {
            return String::new();
        };
        let category = self.category.trim();
        review::section(
            layer,
            EffectiveRule {
                rule_id: uuid::Uuid::nil(),
                revision: 0,
                name: self.name.trim().to_owned(),
                category: (!category.is_empty()).then(|| category.to_owned()),
                priority: self.priority().unwrap_or(0),
                mode: Mode::Block,
                temporary_timeout_secs: None,
                triggers: self
                    .triggers
                    .lines()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                content: self.content.clone(),
            },
        )
    }
}

/// The draft or edit form.
#[derive(Template, WebTemplate)]
#[template(path = "console/rule_form.html")]
pub struct RuleFormPage {
    layout: Layout,
    heading: String,
    action: String,
    cancel: String,
    form: RuleForm,
    /// The layer cannot change once drafted.
    layer_fixed: bool,
    layers: &'static [&'static str],
    preview: String,
    error: Option<String>,
}

/// Which form: its heading, where it posts, where Cancel leads, whether the layer is fixed.
struct Frame {
    heading: String,
    action: String,
    cancel: String,
    layer_fixed: bool,
}

fn form_page(
    session: &Session,
    frame: Frame,
    form: RuleForm,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let rendered = form.preview();
    page(
        RuleFormPage {
            layout: Layout::new(session, "/console/rules"),
            heading: frame.heading,
            action: frame.action,
            cancel: frame.cancel,
            form,
            layer_fixed: frame.layer_fixed,
            layers: &LAYERS,
            preview: rendered,
            error,
        },
        status,
    )
}

/// Refuses a role that may not write rules before showing a form (the use case refuses the post too).
fn writer(session: &Session) -> Result<(), Failure> {
    if can(&session.principal, Action::WriteRules) {
        Ok(())
    } else {
        Err(Failure::new(
            Layout::new(session, "/console/rules"),
            AppError::Forbidden("only an org_admin may write rules".into()),
        ))
    }
}

/// `GET /console/rules/new`.
#[handler]
pub async fn new_form(session: Session) -> poem::Result<Response> {
    writer(&session)?;
    let form = RuleForm {
        layer: "team".into(),
        priority: "0".into(),
        ..RuleForm::default()
    };
    Ok(new_page(&session, form, None, StatusCode::OK))
}

fn new_page(
    session: &Session,
    form: RuleForm,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let frame = Frame {
        heading: "New rule".into(),
        action: "/console/rules/new".into(),
        cancel: "/console/rules".into(),
        layer_fixed: false,
    };
    form_page(session, frame, form, error, status)
}

/// `POST /console/rules/new`: drafts the rule, or shows the form again with what was wrong.
#[handler]
pub async fn create(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Form(form): Form<RuleForm>,
) -> poem::Result<Response> {
    if form.intent == "preview" {
        return Ok(new_page(&session, form, None, StatusCode::OK));
    }
    let drafted = match form.spec() {
        Ok(spec) => {
            edict
                .draft_rule(&session.principal, spec, &context(request, None))
                .await
        }
        Err(e) => Err(e),
    };
    match drafted {
        Ok(outcome) => Ok(see_other(&format!(
            "/console/rules/{}?done=drafted",
            outcome.id
        ))),
        Err(error @ AppError::Forbidden(_)) => {
            Err(Failure::new(Layout::new(&session, "/console/rules"), error).into())
        }
        Err(error) => {
            let (status, _, message) = describe(&error);
            Ok(new_page(&session, form, Some(message), status))
        }
    }
}

/// `GET /console/rules/{id}/edit`: the working revision's spec, or the approved one's for a new
/// revision.
#[handler]
pub async fn edit_form(
    edict: Data<&Arc<Edict>>,
    session: Session,
    Path(id): Path<String>,
) -> poem::Result<Response> {
    writer(&session)?;
    let layout = Layout::new(&session, "/console/rules");
    let fail = |e| Failure::new(layout.clone(), e);
    let rule = edict
        .rule(&session.principal, parse_id(&id).map_err(fail)?)
        .await
        .map_err(fail)?;
    if !editable(&rule) {
        return Err(fail(AppError::Rule {
            rule: "not_editable".into(),
            message: "this rule cannot be edited now (it is pending review or archived)".into(),
        })
        .into());
    }
    let spec = match (rule.working(), rule.approved()) {
        (Some(w), _) => w.spec(),
        (None, Some(a)) => a.spec(),
        (None, None) => return Err(fail(AppError::NotFound("rule".into())).into()),
    };
    let form = RuleForm::of(spec, rule.version());
    Ok(edit_page(
        &session,
        &id,
        rule.working().is_none(),
        form,
        None,
        StatusCode::OK,
    ))
}

fn edit_page(
    session: &Session,
    id: &str,
    revising: bool,
    form: RuleForm,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let heading = if revising {
        format!("New revision of {}", form.name)
    } else {
        format!("Edit {}", form.name)
    };
    let frame = Frame {
        heading,
        action: format!("/console/rules/{id}/edit"),
        cancel: format!("/console/rules/{id}"),
        layer_fixed: true,
    };
    form_page(session, frame, form, error, status)
}

/// `POST /console/rules/{id}/edit`: saves the draft (or opens the new revision of an approved rule).
#[handler]
pub async fn update(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path(id): Path<String>,
    Form(form): Form<RuleForm>,
) -> poem::Result<Response> {
    let layout = Layout::new(&session, "/console/rules");
    let fail = |e| Failure::new(layout.clone(), e);
    let rule_id: RuleId = parse_id(&id).map_err(fail)?;
    let rule = edict
        .rule(&session.principal, rule_id)
        .await
        .map_err(fail)?;
    let revising = rule.working().is_none();
    if form.intent == "preview" {
        return Ok(edit_page(
            &session,
            &id,
            revising,
            form,
            None,
            StatusCode::OK,
        ));
    }
    let context = context(request, form.version);
    let saved = match form.spec() {
        Ok(spec) if revising => {
            edict
                .revise_rule(&session.principal, rule_id, spec, &context)
                .await
        }
        Ok(spec) => {
            edict
                .edit_rule(&session.principal, rule_id, spec, &context)
                .await
        }
        Err(e) => Err(e),
    };
    match saved {
        Ok(_) => Ok(see_other(&format!("/console/rules/{id}?done=saved"))),
        Err(error @ (AppError::Forbidden(_) | AppError::NotFound(_))) => Err(fail(error).into()),
        Err(error) => {
            let (status, _, message) = describe(&error);
            Ok(edit_page(
                &session,
                &id,
                revising,
                form,
                Some(message),
                status,
            ))
        }
    }
}

/// `POST /console/rules/preview`: the managed section the form's fields render to, as plain text
/// (what `console.js` shows while the author types).
#[handler]
pub fn preview(_session: Session, Form(form): Form<RuleForm>) -> Response {
    Response::builder()
        .content_type("text/plain; charset=utf-8")
        .body(form.preview())
}
