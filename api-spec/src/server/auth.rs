//! Login, token refresh and logout.

use super::common;
use super::problem::{ApiResult, ErrorResponse};
use super::rate_limit::{LimitedResult, RateLimits};
use super::security::BearerAuth;
use edict_application::Edict;
use edict_application::auth::Tokens;
use edict_application::error::AppError;
use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum AuthTags {
    /// Sign in and out.
    Auth,
}

/// Credentials.
#[derive(Debug, Object)]
pub struct LoginRequest {
    /// The user's email.
    pub email: String,
    /// The user's password.
    #[oai(write_only)]
    pub password: String,
}

/// A refresh token to exchange.
#[derive(Debug, Object)]
pub struct RefreshRequest {
    /// The `refresh_token` of the last login or refresh (single use).
    pub refresh_token: String,
}

/// Tokens for the API.
#[derive(Debug, Object)]
pub struct TokensDto {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Exchange at `POST /api/v1/auth/refresh` for new tokens; single use.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    pub token_type: String,
}

impl From<Tokens> for TokensDto {
    fn from(tokens: Tokens) -> Self {
        TokensDto {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_in: tokens.expires_in,
            token_type: "Bearer".into(),
        }
    }
}

/// Sign in and out.
pub struct AuthApi;

#[OpenApi(tag = "AuthTags::Auth")]
impl AuthApi {
    /// Signs in with email and password; answers an access token and a refresh token.
    ///
    /// A wrong email and a wrong password are the same 401; a deactivated user cannot sign in.
    /// Attempts are limited per client address and per account (429 with `Retry-After`), before
    /// the password is checked.
    #[oai(path = "/api/v1/auth/login", method = "post")]
    async fn login(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        request: &Request,
        body: Json<LoginRequest>,
    ) -> LimitedResult<Json<TokensDto>> {
        limits.login(request, &body.email)?;
        let sign_in = limits.sign_in(request, &body.email);
        let tokens = edict
            .login_with_priority(&body.email, &body.password, sign_in.priority)
            .await
            .inspect_err(|error| {
                if matches!(error, AppError::Unauthenticated) {
                    sign_in.failed();
                }
            })?;
        sign_in.succeeded();
        Ok(Json(tokens.into()))
    }

    /// Exchanges a refresh token for new tokens; the old refresh token stops working.
    ///
    /// Presenting a refresh token that was already exchanged signs the whole session out (someone
    /// else holds a copy of it): its access and refresh tokens stop working. A session ends at the
    /// latest `EDICT_SESSION_TTL_SECS` after the sign-in, refreshes or not. Limited per client
    /// address (429 with `Retry-After`).
    #[oai(path = "/api/v1/auth/refresh", method = "post")]
    async fn refresh(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        request: &Request,
        body: Json<RefreshRequest>,
    ) -> LimitedResult<Json<TokensDto>> {
        limits.refresh(request)?;
        let tokens = edict.refresh(&body.refresh_token).await?;
        Ok(Json(tokens.into()))
    }

    /// Signs out: the session's access and refresh tokens stop working at once.
    #[oai(path = "/api/v1/auth/logout", method = "post")]
    async fn logout(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<common::Done>> {
        edict.logout(&auth.0).await.map_err(ErrorResponse::from)?;
        Ok(Json(common::Done { done: true }))
    }
}
