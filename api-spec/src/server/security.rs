//! The bearer-token security scheme: an access token (JWT) for users, an agent token for agents.

use super::problem::ErrorResponse;
use edict_application::Edict;
use edict_application::principal::Principal;
use poem::{IntoResponse, Request};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use std::sync::Arc;

/// A bearer token: the `access_token` from `POST /api/v1/auth/login`, or an agent token.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "authenticate")]
pub struct BearerAuth(pub Principal);

async fn authenticate(request: &Request, bearer: Bearer) -> poem::Result<Principal> {
    // The authorization gate authenticated this request already.
    if let Some(done) = request
        .extensions()
        .get::<super::authorization::Authenticated>()
        && done.token == bearer.token
    {
        return Ok(done.principal.clone());
    }
    let Some(edict) = request.data::<Arc<Edict>>() else {
        return Err(poem::Error::from_string(
            "application state missing",
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        ));
    };
    edict
        .authenticate(&bearer.token)
        .await
        .map_err(|e| poem::Error::from_response(ErrorResponse::from(e).into_response()))
}
