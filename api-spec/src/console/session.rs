//! The console's session, without server-side state (several API replicas share one load balancer):
//! the `edict_session` cookie holds the access and refresh tokens of a sign-in (the same tokens
//! `POST /api/v1/auth/login` answers), and each request rebuilds the `Principal` from them as the API
//! does from a bearer token. An expired access token is renewed with the refresh token on the way
//! (and the cookie replaced); a session that ended (signed out, revoked, past its lifetime) clears the
//! cookie.
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
//! `Path=/`, and `Secure` when the request came over TLS or the public URL is https. A visitor without
//! a session gets an `edict_visitor` cookie instead: a random value that keys the CSRF token of the
//! sign-in and device forms.

use super::csrf;
use crate::server::PublicUrl;
use crate::server::rate_limit::RateLimits;
use edict_application::Edict;
use edict_application::auth::Tokens;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use poem::http::{HeaderValue, header};
use poem::{FromRequest, Request, RequestBody, Response};
use std::sync::Arc;

/// The cookie of a signed-in session.
pub const SESSION_COOKIE: &str = "edict_session";
/// The cookie of a visitor who is not signed in (keys their forms' CSRF token).
pub const VISITOR_COOKIE: &str = "edict_visitor";

/// A signed-in person, as the page handler sees them. Extracting it from a request without a session
/// answers a redirect to the sign-in page (back to this page afterwards).
#[derive(Debug, Clone)]
pub struct Session {
    /// Who they are, with the roles they hold now: what every use case is called with.
    pub principal: Principal,
    /// Their email, shown in the header.
    pub email: String,
    /// The CSRF token their forms carry (stable for the session, across renewals).
    pub csrf: String,
}

/// Whoever asks: signed in or not. Pages that also serve visitors (sign-in, the device page) take it.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// The session, when signed in.
    pub session: Option<Session>,
    /// The CSRF token forms carry (the session's, or the visitor cookie's).
    pub csrf: String,
    /// Whether cookies must be `Secure` (TLS, or an https public URL).
    pub secure: bool,
}

impl<'a> FromRequest<'a> for Visitor {
    async fn from_request(request: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        request
            .extensions()
            .get::<Visitor>()
            .cloned()
            .ok_or_else(|| {
                poem::Error::from_string(
                    "the console guard did not run",
                    poem::http::StatusCode::INTERNAL_SERVER_ERROR,
                )
            })
    }
}

impl<'a> FromRequest<'a> for Session {
    async fn from_request(request: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let visitor = Visitor::from_request(request, body).await?;
        visitor
            .session
            .ok_or_else(|| poem::Error::from_response(super::render::to_sign_in(request)))
    }
}

/// A request's visitor, and the cookies to set on its response.
pub(super) struct Resolved {
    /// Who asks.
    pub visitor: Visitor,
    /// `Set-Cookie` values: a renewed or cleared session, a new visitor cookie.
    set_cookies: Vec<(&'static str, String)>,
}

impl Resolved {
    /// Adds the cookies to `response`, except one the handler set itself (a sign-in or sign-out).
    pub fn finish(self, mut response: Response) -> Response {
        for (name, cookie) in self.set_cookies {
            let prefix = format!("{name}=");
            let set_by_handler = response
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.starts_with(&prefix)));
            if !set_by_handler && let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

/// Who sends `request`: its session cookie authenticated (renewed when its access token expired).
pub(super) async fn resolve(request: &Request) -> Resolved {
    let secure = is_secure(request);
    let mut set_cookies = Vec::new();
    let session = match (
        request.data::<Arc<Edict>>(),
        cookie(request, SESSION_COOKIE).and_then(|v| SessionTokens::parse(&v)),
    ) {
        (Some(edict), Some(tokens)) => match open(edict, request, &tokens).await {
            Opened::Current(session) => Some(session),
            Opened::Renewed(session, tokens) => {
                set_cookies.push((SESSION_COOKIE, session_cookie(&tokens, secure)));
                Some(session)
            }
            Opened::Ended => {
                set_cookies.push((SESSION_COOKIE, clear_cookie(SESSION_COOKIE, secure)));
                None
            }
            Opened::Unavailable => None,
        },
        _ => None,
    };
    let csrf = match &session {
        Some(session) => session.csrf.clone(),
        None => {
            let value = cookie(request, VISITOR_COOKIE)
                .filter(|v| v.len() >= 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or_else(|| {
                    let value = format!(
                        "{}{}",
                        uuid::Uuid::new_v4().simple(),
                        uuid::Uuid::new_v4().simple()
                    );
                    set_cookies.push((VISITOR_COOKIE, cookie_line(VISITOR_COOKIE, &value, secure)));
                    value
                });
            csrf::token("visitor", &value)
        }
    };
    Resolved {
        visitor: Visitor {
            session,
            csrf,
            secure,
        },
        set_cookies,
    }
}

/// What became of a session cookie.
enum Opened {
    /// Its access token is valid.
    Current(Session),
    /// Its access token expired and was renewed: the cookie must be replaced.
    Renewed(Session, Tokens),
    /// The session is over: the cookie must go.
    Ended,
    /// The store cannot tell now (the cookie stays).
    Unavailable,
}

async fn open(edict: &Edict, request: &Request, tokens: &SessionTokens) -> Opened {
    match session_of(edict, &tokens.access).await {
        Ok(session) => return Opened::Current(session),
        Err(AppError::Unauthenticated) => {}
        Err(_) => return Opened::Unavailable,
    }
    if let Some(limits) = request.data::<Arc<RateLimits>>()
        && limits.refresh(request).is_err()
    {
        return Opened::Unavailable;
    }
    let renewed = match edict.refresh(&tokens.refresh).await {
        Ok(renewed) => renewed,
        Err(AppError::Unauthenticated) => return Opened::Ended,
        Err(_) => return Opened::Unavailable,
    };
    match session_of(edict, &renewed.access_token).await {
        Ok(session) => Opened::Renewed(session, renewed),
        Err(AppError::Unauthenticated) => Opened::Ended,
        Err(_) => Opened::Unavailable,
    }
}

/// The session an access token stands for.
///
/// # Errors
/// 401 when the token is not valid now; 503 when the store fails.
pub(super) async fn session_of(edict: &Edict, access: &str) -> Result<Session, AppError> {
    let principal = edict.authenticate(access).await?;
    let Principal::User { session, id, .. } = &principal else {
        // An agent token is no console session.
        return Err(AppError::Unauthenticated);
    };
    let csrf = csrf::token("session", session);
    let email = edict
        .user(&principal, *id)
        .await?
        .email()
        .map(|e| e.as_str().to_owned())
        .unwrap_or_default();
    Ok(Session {
        principal,
        email,
        csrf,
    })
}

/// The two tokens a session cookie holds, as `<access>~<refresh>` (neither contains `~`).
pub(super) struct SessionTokens {
    access: String,
    refresh: String,
}

impl SessionTokens {
    fn parse(value: &str) -> Option<SessionTokens> {
        let (access, refresh) = value.split_once('~')?;
        (!access.is_empty() && !refresh.is_empty()).then(|| SessionTokens {
            access: access.to_owned(),
            refresh: refresh.to_owned(),
        })
    }
}

/// The `Set-Cookie` value of a new session.
pub(super) fn session_cookie(tokens: &Tokens, secure: bool) -> String {
    let value = format!("{}~{}", tokens.access_token, tokens.refresh_token);
    cookie_line(SESSION_COOKIE, &value, secure)
}

/// The `Set-Cookie` value that removes cookie `name`.
pub(super) fn clear_cookie(name: &str, secure: bool) -> String {
    format!("{}; Max-Age=0", cookie_line(name, "", secure))
}

fn cookie_line(name: &str, value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// Whether the request came over TLS, or the public URL the server is known by is https (TLS ends
/// at a proxy in front).
fn is_secure(request: &Request) -> bool {
    request.scheme() == &poem::http::uri::Scheme::HTTPS
        || request
            .data::<PublicUrl>()
            .is_some_and(|url| url.0.starts_with("https://"))
}
