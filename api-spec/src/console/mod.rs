//! The web console: pages for people, served by the API process at `/` (docs/adr/0028-web-console.md).
//!
//! Every page calls the same `Edict` use cases as the API, with the `Principal` its session cookie
//! stands for, so what a role may do is decided in one place; the console only hides what the role may
//! not do. No JavaScript build: templates are askama (escaped by construction), the CSS and the one
//! small script are embedded.
//!
//! Layout:
//! - this module: the routes ([`mount`] adds the console to the API's route; [`console_app`] is
//!   everything under `/console`) and [`guard`], the middleware every page goes through (security
//!   headers, the session, the CSRF check);
//! - `session`: the `edict_session` cookie, and the [`Session`] / [`Visitor`] extractors;
//! - `csrf`: the token every form carries, and the check of every POST;
//! - `layout`: the frame each page shares (skip link, nav by role, sign-out) and [`can`];
//! - `render`: answering a template, a redirect or a failure as a page;
//! - `command`: a form a page posts to run a command, and its answer;
//! - `assets`: the embedded CSS and JS at `/console/static/...`;
//! - `live`: the server-sent events at `/console/events` that keep `data-live` pages current;
//! - one module per page group (`signin`, `dashboard`, `rules`, `change_requests`, `teams`,
//!   `fleet`, `device`, `audit`), each with its templates
//!   under `api-spec/templates/console/`.
//!
//! A new page: a module here with its handlers, a template extending `console/layout.html` (blocks
//! `title` and `content`, a `layout: Layout` field), a route in [`console_app`], and a nav entry in
//! `layout` if it is a top-level page.

mod assets;
mod audit;
mod change_requests;
mod command;
mod csrf;
mod dashboard;
mod device;
mod fleet;
mod layout;
mod live;
mod render;
mod rules;
mod session;
mod signin;
mod teams;

pub use layout::{Action, Layout, NavItem, can};
pub use render::{Failure, page, see_other, when};
pub use session::{Session, Visitor};

use poem::http::{HeaderValue, Method, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, post};

/// The Content-Security-Policy of every console response: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Adds the console's pages to `route` (the API's): everything under `/console`, the device approval
/// page at `/device`.
pub fn mount(route: Route) -> Route {
    route
        .at(
            "/device",
            get(device::page_get).post(device::decide).around(guard),
        )
        .nest("/console", console_app())
}

/// Serves `/` itself (the dashboard, or the sign-in page) in front of `routes`: a route nested at `/`
/// (the API) would otherwise take `/` too.
pub fn at_root(routes: Route) -> poem::endpoint::BoxEndpoint<'static, Response> {
    AtRoot {
        home: get(dashboard::home).around(guard),
        rest: routes,
    }
    .boxed()
}

/// The endpoint of [`at_root`].
struct AtRoot<H, E> {
    home: H,
    rest: E,
}

impl<H: Endpoint, E: Endpoint> Endpoint for AtRoot<H, E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        if request.uri().path() == "/" {
            self.home
                .call(request)
                .await
                .map(IntoResponse::into_response)
        } else {
            self.rest
                .call(request)
                .await
                .map(IntoResponse::into_response)
        }
    }
}

/// Everything under `/console`: the static assets, and the pages behind [`guard`].
pub fn console_app() -> Route {
    Route::new()
        .nest("/static", assets::routes())
        .nest("/", pages().around(guard))
}

/// The pages under `/console` (paths relative to it).
fn pages() -> Route {
    Route::new()
        .at("/", get(dashboard::home))
        .at("/sign-in", get(signin::form).post(signin::submit))
        .at("/sign-out", post(signin::sign_out))
        .at("/rules", get(rules::list))
        .at("/rules/new", get(rules::new_form).post(rules::create))
        .at("/rules/preview", post(rules::preview))
        .at("/rules/:id", get(rules::show))
        .at("/rules/:id/edit", get(rules::edit_form).post(rules::update))
        .at("/rules/:id/submit", post(rules::submit))
        .at("/rules/:id/approve", post(rules::approve))
        .at("/rules/:id/reject", post(rules::reject))
        .at("/rules/:id/history", get(rules::history))
        .at("/teams", get(teams::list).post(teams::create))
        .at("/teams/:id", get(teams::show))
        .at("/teams/:id/rename", post(teams::rename))
        .at("/teams/:id/archive", post(teams::archive))
        .at("/teams/:id/members", post(teams::add_member))
        .at("/teams/:id/members/:user/role", post(teams::change_role))
        .at(
            "/teams/:id/members/:user/remove",
            post(teams::remove_member),
        )
        .at("/teams/:id/rules", post(teams::attach))
        .at("/teams/:id/rules/:rule/mode", post(teams::change_mode))
        .at("/teams/:id/rules/:rule/detach", post(teams::detach))
        .at("/fleet", get(fleet::list))
        .at("/fleet/:id", get(fleet::show))
        .at("/fleet/:id/revoke", post(fleet::revoke))
        .at("/audit", get(audit::log))
        .at("/audit/export", get(audit::export))
        .at("/audit/history/:kind/:id", get(audit::history))
        .at("/audit/time-travel", get(audit::time_travel))
        .at("/audit/chain", get(audit::chain))
        .at("/change-requests", get(change_requests::list))
        .at("/change-requests/:id", get(change_requests::show))
        .at(
            "/change-requests/:id/approve",
            post(change_requests::approve),
        )
        .at("/change-requests/:id/reject", post(change_requests::reject))
        .at(
            "/change-requests/:id/withdraw",
            post(change_requests::withdraw),
        )
        .at(
            "/change-requests/:id/exception",
            post(change_requests::request_exception),
        )
        .at(
            "/change-requests/:id/exception/grant",
            post(change_requests::grant_exception),
        )
        .at(
            "/change-requests/:id/exception/deny",
            post(change_requests::deny_exception),
        )
        .at("/events", get(live::events))
}

/// The middleware of every console page: resolves the session (renewing it when its access token
/// expired), refuses a state-changing request without the right CSRF token (403, nothing changed), and
/// sets the security headers on whatever is answered.
pub async fn guard<E: Endpoint>(next: E, mut request: Request) -> poem::Result<Response> {
    let resolved = session::resolve(&request).await;
    let unsafe_method = !matches!(*request.method(), Method::GET | Method::HEAD);
    let response = if unsafe_method && !csrf::check(&mut request, &resolved.visitor).await {
        render::forbidden_form(&resolved.visitor)
    } else {
        request.extensions_mut().insert(resolved.visitor.clone());
        match next.call(request).await {
            Ok(response) => response.into_response(),
            Err(error) => error.into_response(),
        }
    };
    let mut response = resolved.finish(response);
    secure_headers(&mut response);
    Ok(response)
}

/// The headers of every console page: the CSP, no sniffing, no referrer outside, no caching.
fn secure_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}
