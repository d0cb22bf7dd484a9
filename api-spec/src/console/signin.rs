//! Signing in and out of the console: the same use cases (and rate limits) as
//! `POST /api/v1/auth/login` and `POST /api/v1/auth/logout`; the tokens go into the session cookie.

use super::layout::Layout;
use super::render::{local_path, page, see_other};
use super::session::{self, Visitor};
use crate::server::rate_limit::RateLimits;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::auth::Tokens;
use edict_application::error::AppError;
use poem::http::{StatusCode, header};
use poem::web::{Data, Form, Query};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// The sign-in page.
#[derive(Template, WebTemplate)]
#[template(path = "console/signin.html")]
pub struct SignInPage {
    /// The frame.
    pub layout: Layout,
    /// Where to go afterwards.
    pub next: String,
    /// The email typed (kept after a failed attempt).
    pub email: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// Where the sign-in page came from.
#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// `GET /console/sign-in`: the form (or straight on, when signed in already).
#[handler]
pub fn form(visitor: Visitor, Query(next): Query<Next>) -> Response {
    let next = local_path(next.next.as_deref());
    if visitor.session.is_some() {
        return see_other(&next);
    }
    sign_in_page(&visitor, next, String::new(), None, StatusCode::OK)
}

/// `/` for a visitor who is not signed in.
pub fn sign_in_page(
    visitor: &Visitor,
    next: String,
    email: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    page(
        SignInPage {
            layout: Layout::for_visitor(visitor, ""),
            next,
            email,
            error,
        },
        status,
    )
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    email: String,
    password: String,
    next: Option<String>,
}

/// `POST /console/sign-in`: signs in, sets the session cookie, goes on to `next`.
#[handler]
pub async fn submit(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    request: &Request,
    visitor: Visitor,
    Form(credentials): Form<Credentials>,
) -> Response {
    let next = local_path(credentials.next.as_deref());
    match attempt(
        &edict,
        &limits,
        request,
        &credentials.email,
        &credentials.password,
    )
    .await
    {
        Ok(tokens) => see_other(&next)
            .with_header(
                header::SET_COOKIE,
                session::session_cookie(&tokens, visitor.secure),
            )
            .into_response(),
        Err((message, status)) => {
            sign_in_page(&visitor, next, credentials.email, Some(message), status)
        }
    }
}

/// Signs in as `POST /api/v1/auth/login` does (its rate limits included): the tokens, or what to
/// tell the person and the status to answer.
///
/// # Errors
/// 429 when throttled, 401 for a wrong email or password, 503 when the store fails.
pub async fn attempt(
    edict: &Edict,
    limits: &RateLimits,
    request: &Request,
    email: &str,
    password: &str,
) -> Result<Tokens, (String, StatusCode)> {
    if let Err(throttled) = limits.login(request, email) {
        return Err((
            format!(
                "Too many sign-in attempts; try again in {} seconds.",
                throttled.retry_after_secs()
            ),
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let sign_in = limits.sign_in(request, email);
    match edict
        .login_with_priority(email, password, sign_in.priority)
        .await
    {
        Ok(tokens) => {
            sign_in.succeeded();
            Ok(tokens)
        }
        Err(AppError::Unauthenticated) => {
            sign_in.failed();
            Err((
                "The email or the password is wrong.".into(),
                StatusCode::UNAUTHORIZED,
            ))
        }
        Err(error) => {
            let (status, _, message) = super::render::describe(&error);
            Err((message, status))
        }
    }
}

/// `POST /console/sign-out`: closes the session (as the API's logout does) and clears the cookie.
#[handler]
pub async fn sign_out(edict: Data<&Arc<Edict>>, visitor: Visitor) -> Response {
    if let Some(session) = &visitor.session
        && let Err(error) = edict.logout(&session.principal).await
    {
        tracing::warn!(%error, "console sign-out could not close the session");
    }
    see_other("/console/sign-in")
        .with_header(
            header::SET_COOKIE,
            session::clear_cookie(session::SESSION_COOKIE, visitor.secure),
        )
        .into_response()
}
