//! The device approval page at `/device` (where `edict-agent login` sends its user): sign in, enter
//! the code the agent printed, read which machine asks, and consent explicitly before approving.
//! Nothing is approved by opening a link: approving is a POST with the consent box ticked and the
//! form's CSRF token. The same use cases as `GET/POST /api/v1/device/requests/{code}[/approve|/deny]`.

use super::layout::Layout;
use super::render::{describe, page, see_other, when};
use super::session::{self, Visitor};
use super::signin::attempt;
use crate::server::rate_limit::RateLimits;
use askama::Template;
use askama_web::WebTemplate;
use chrono::{TimeZone, Utc};
use edict_application::Edict;
use edict_application::auth::DeviceStatus;
use edict_application::error::AppError;
use edict_domain::user::GlobalRole;
use poem::http::{StatusCode, header};
use poem::web::{Data, Form, Query};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// The machine asking, as the consent step shows it.
pub struct Asking {
    machine_name: String,
    machine_id: String,
    requested_at: String,
    expires_at: String,
    status: String,
    pending: bool,
}

/// The device page.
#[derive(Template, WebTemplate)]
#[template(path = "console/device.html")]
pub struct DevicePage {
    layout: Layout,
    signed_in: bool,
    code: String,
    email: String,
    asking: Option<Asking>,
    /// Whether the role may approve (auditors change nothing).
    may_decide: bool,
    notice: Option<String>,
    error: Option<String>,
}

/// The page's query: the code, and what was just done.
#[derive(Debug, Default, Deserialize)]
pub struct DeviceQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    done: String,
}

/// `GET /device`: the sign-in and code form, or the machine behind the code with the consent form.
#[handler]
pub async fn page_get(
    edict: Data<&Arc<Edict>>,
    visitor: Visitor,
    Query(query): Query<DeviceQuery>,
) -> Response {
    let notice = match query.done.as_str() {
        "approved" => Some("Approved: the agent finishes its login by itself.".to_owned()),
        "denied" => Some("Denied: the agent's login fails.".to_owned()),
        _ => None,
    };
    let code = query.code.trim().to_owned();
    render(
        &edict,
        &visitor,
        code,
        String::new(),
        notice,
        None,
        StatusCode::OK,
    )
    .await
}

async fn render(
    edict: &Edict,
    visitor: &Visitor,
    code: String,
    email: String,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let layout = Layout::for_visitor(visitor, "");
    let Some(session) = &visitor.session else {
        return device_page(
            layout, false, code, email, None, false, notice, error, status,
        );
    };
    let principal = &session.principal;
    let may_decide = !principal.has_role(GlobalRole::Auditor) || principal.is_org_admin();
    let (asking, error, status) = if code.is_empty() {
        (None, error, status)
    } else {
        match edict.device_request(principal, &code).await {
            Ok(found) => (
                Some(Asking {
                    machine_name: found.machine_name,
                    machine_id: found.machine_id,
                    requested_at: time(found.created_at),
                    expires_at: time(found.expires_at),
                    status: format!("{:?}", found.status).to_lowercase(),
                    pending: found.status == DeviceStatus::Pending,
                }),
                error,
                status,
            ),
            Err(AppError::NotFound(_)) => (
                None,
                Some("No device login has this code; check it and try again.".into()),
                StatusCode::NOT_FOUND,
            ),
            Err(e) => {
                let (status, _, message) = describe(&e);
                (None, Some(message), status)
            }
        }
    };
    device_page(
        layout, true, code, email, asking, may_decide, notice, error, status,
    )
}

#[allow(clippy::too_many_arguments)]
fn device_page(
    layout: Layout,
    signed_in: bool,
    code: String,
    email: String,
    asking: Option<Asking>,
    may_decide: bool,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    page(
        DevicePage {
            layout,
            signed_in,
            code,
            email,
            asking,
            may_decide,
            notice,
            error,
        },
        status,
    )
}

fn time(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(when)
        .unwrap_or_default()
}

/// What the page posts: a sign-in (with the code), or a decision.
#[derive(Debug, Default, Deserialize)]
pub struct DeviceForm {
    #[serde(default)]
    intent: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// The consent box (`on` when ticked).
    #[serde(default)]
    consent: String,
}

/// `POST /device`: signs in (then shows the code's machine), approves with consent, or denies.
#[handler]
pub async fn decide(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    request: &Request,
    visitor: Visitor,
    Form(form): Form<DeviceForm>,
) -> Response {
    let code = form.code.trim().to_owned();
    let back = |done: &str| {
        let query = serde_urlencoded::to_string([("code", code.as_str()), ("done", done)])
            .unwrap_or_default();
        format!("/device?{query}")
    };
    if form.intent == "sign-in" {
        return match attempt(&edict, &limits, request, &form.email, &form.password).await {
            Ok(tokens) => see_other(&back(""))
                .with_header(
                    header::SET_COOKIE,
                    session::session_cookie(&tokens, visitor.secure),
                )
                .into_response(),
            Err((message, status)) => {
                render(
                    &edict,
                    &visitor,
                    code,
                    form.email,
                    None,
                    Some(message),
                    status,
                )
                .await
            }
        };
    }
    let Some(session) = &visitor.session else {
        return render(
            &edict,
            &visitor,
            code,
            String::new(),
            None,
            Some("Sign in first.".into()),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    };
    let approve = match form.intent.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return render(
                &edict,
                &visitor,
                code,
                String::new(),
                None,
                Some("Choose Approve or Deny.".into()),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    if approve && form.consent != "on" {
        return render(
            &edict,
            &visitor,
            code,
            String::new(),
            None,
            Some(
                "Tick the box to confirm this is your machine: approving enrolls it with your \
                 identity."
                    .into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let context = super::command::context(request, None);
    match edict
        .decide_device_request(&session.principal, &code, approve, &context)
        .await
    {
        Ok(_) => see_other(&back(if approve { "approved" } else { "denied" })),
        Err(error) => {
            let (status, _, message) = describe(&error);
            render(
                &edict,
                &visitor,
                code,
                String::new(),
                None,
                Some(message),
                status,
            )
            .await
        }
    }
}
