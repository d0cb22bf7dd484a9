//! The HTTP API (poem-openapi): one module per resource, errors as problem+json, bearer authentication,
//! request ids, idempotent retries. [`app`] assembles the endpoint `edict serve` runs; [`spec_yaml`] is the
//! spec committed as `api-spec/openapi.yaml`.

// Endpoints answer `Result<_, ErrorResponse>`, whose problem body is a few hundred bytes; the error path is
// cold and poem-openapi needs the response type by value to document it.
#![allow(clippy::result_large_err)]
// poem-openapi takes every query parameter of an operation as an argument of its handler.
#![allow(clippy::too_many_arguments)]

mod admin;
mod agents;
pub(crate) mod audit;
mod auth;
pub mod authorization;
mod change_requests;
pub(crate) mod common;
mod contract;
mod enrollment;
pub(crate) mod events;
mod health;
mod keys;
pub mod metrics;
pub use enrollment::{GatewayUrls, PublicUrl};
pub mod middleware;
pub mod problem;
mod queries;
pub mod rate_limit;
mod rules;
pub mod security;
mod teams;
pub mod trace_context;
mod users;

use edict_application::Edict;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;
use std::sync::Arc;

type Apis = (
    health::HealthApi,
    auth::AuthApi,
    rules::RulesApi,
    teams::TeamsApi,
    change_requests::ChangeRequestsApi,
    users::UsersApi,
    agents::AgentsApi,
    events::EventsApi,
    audit::AuditApi,
    enrollment::EnrollmentApi,
    admin::AdminApi,
    keys::KeysApi,
);

const DESCRIPTION: &str = "Edict distributes the managed section of `CLAUDE.md` files (organization, team and \
project layers) to every developer machine and enforces it there. Every change is a domain event.\n\n\
Authenticate with `POST /api/v1/auth/login`, then send `Authorization: Bearer <access_token>`. Errors are \
`application/problem+json` (RFC 9457): 400 malformed, 401, 403, 404, 409 version conflict (with \
`current_version`; send `If-Match: <version>` to change only what you saw), 422 a domain rule broken (`rule` \
names it), 429 too many requests (sign-in, token and enrollment endpoints, costly reads: wait the \
`Retry-After` seconds). A POST with an `Idempotency-Key` header can be retried safely: the first successful \
response is replayed, except one that carried a secret (a token), which is never kept: its retry answers 409 \
`idempotency-response-withheld`.";

/// The largest request body accepted by default (`EDICT_MAX_BODY_BYTES`; a rule's content is at most
/// 64 KiB, a change's diff 256 KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The OpenAPI service: every operation of the API.
pub fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            health::HealthApi,
            auth::AuthApi,
            rules::RulesApi,
            teams::TeamsApi,
            change_requests::ChangeRequestsApi,
            users::UsersApi,
            agents::AgentsApi,
            events::EventsApi,
            audit::AuditApi,
            enrollment::EnrollmentApi,
            admin::AdminApi,
            keys::KeysApi,
        ),
        "Edict",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}

/// The spec as YAML (the committed form).
pub fn spec_yaml() -> String {
    api_service().spec_yaml()
}

/// The spec as JSON (served at `/openapi.json`).
pub fn spec_json() -> String {
    api_service().spec()
}

/// The whole HTTP application: the API, Swagger UI at `/docs`, the spec at `/openapi.json`; with the
/// default rate limits.
pub fn app(edict: Arc<Edict>, gateways: GatewayUrls) -> impl Endpoint {
    app_with_limits(edict, gateways, Arc::new(rate_limit::RateLimits::default()))
}

/// [`app`] with the rate limits `limits` (`edict serve` keeps them to trim them periodically).
pub fn app_with_limits(
    edict: Arc<Edict>,
    gateways: GatewayUrls,
    limits: Arc<rate_limit::RateLimits>,
) -> impl Endpoint {
    let api = api_service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let routes = crate::console::mount(Route::new())
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/metrics", metrics::page)
        .nest("/", api);
    crate::console::at_root(routes)
        .around(middleware::idempotency)
        .around(middleware::limit_body)
        // Who may call each route, checked before the body is read (403 before 400/422).
        .around(authorization::gate)
        .around(middleware::trace_request)
        .around(contract::allow_header)
        .data(edict)
        .data(gateways)
        .data(limits)
}

/// The port of a process that runs no API role (a relay, projector or audit process): the probes
/// (`/health/live`, `/health/ready`) and `/metrics` only, so orchestrators and scrapers see every role.
pub fn probes_app(edict: Arc<Edict>) -> impl Endpoint {
    Route::new()
        .at("/metrics", metrics::page)
        .nest(
            "/",
            OpenApiService::new(health::HealthApi, "Edict probes", env!("CARGO_PKG_VERSION")),
        )
        .around(middleware::trace_request)
        .data(edict)
}
