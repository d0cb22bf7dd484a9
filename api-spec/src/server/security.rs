//! The bearer-token security scheme: an access token (JWT) for users, an agent token for agents; and
//! [`Caller`], the application and principal an operation runs with.

use super::common::CommandAccepted;
use super::problem::{ApiResult, ErrorResponse};
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_application::{Edict, Outcome, RequestContext};
use poem::web::Data;
use poem::{FromRequest, IntoResponse, Request, RequestBody};
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme};
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

/// Who calls an endpoint: the application and the bearer's principal (documented as [`BearerAuth`]),
/// with the request for a command's context. Replaces an operation's `Data<&Arc<Edict>>` and
/// `BearerAuth` arguments.
pub struct Caller<'a> {
    /// The application.
    pub edict: &'a Edict,
    /// The authenticated principal.
    pub principal: Principal,
    request: &'a Request,
}

impl Caller<'_> {
    /// The request context of a command.
    ///
    /// # Errors
    /// 400 when `If-Match` is not a version number.
    pub fn context(&self) -> Result<RequestContext, ErrorResponse> {
        super::common::context(self.request)
    }

    /// Runs a command as the caller with the request's context (read after the command's arguments
    /// parsed, so a malformed `If-Match` comes after their errors) and answers its outcome.
    pub async fn run(
        &self,
        command: impl AsyncFnOnce(&Edict, &Principal, &RequestContext) -> Result<Outcome, AppError>,
    ) -> ApiResult<Json<CommandAccepted>> {
        let ctx = self.context()?;
        Ok(Json(
            command(self.edict, &self.principal, &ctx).await?.into(),
        ))
    }
}

impl<'a> ApiExtractor<'a> for Caller<'a> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        BearerAuth::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        BearerAuth::security_schemes()
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        options: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let Data(edict) = Data::<&'a Arc<Edict>>::from_request_without_body(request).await?;
        let BearerAuth(principal) = BearerAuth::from_request(request, body, options).await?;
        Ok(Caller {
            edict,
            principal,
            request,
        })
    }
}
