//! How machines get agent tokens: the device code flow (`/api/v1/device/…`) and enrollment tokens for
//! unattended installs (`/api/v1/enrollment-tokens`, `/api/v1/agents/enroll`).
//!
//! The device code flow follows RFC 8628 in substance: the agent asks for a code, a signed-in user
//! reads what asks (the consent step) and approves explicitly with `{"consent": true}`; the agent polls
//! and collects its token once. Poll answers that are not a token are 400 problems whose type names
//! the state: `authorization-pending`, `slow-down`, `access-denied`, `expired-token`, `invalid-grant`.

use super::common::{self, invalid};
use super::contract::text::Text;
use super::problem::{ApiResult, ErrorResponse, Problem};
use super::rate_limit::{LimitedResult, RateLimits};
use super::security::BearerAuth;
use chrono::{DateTime, TimeZone, Utc};
use edict_application::Edict;
use edict_application::auth::{DevicePoll, DeviceStatus, EnrollmentTokenInfo};
use edict_application::enrollment::{DEVICE_POLL_INTERVAL_SECS, DeviceOutcome};
use edict_application::error::AppError;
use edict_domain::UserId;
use edict_domain::agent::{MachineId, MachineName};
use poem::Request;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum EnrollmentTags {
    /// Getting an agent token onto a machine.
    Enrollment,
}

/// Where agents connect once enrolled: the gateways' WebSocket URLs, in the order to try them.
#[derive(Debug, Clone, Default)]
pub struct GatewayUrls(pub Vec<String>);

impl GatewayUrls {
    /// The URLs as an agent on the far side of `request` reaches them: a gateway listening on every
    /// interface (`0.0.0.0`, `[::]`) is named by the host the request came to.
    fn for_request(&self, request: &Request) -> Vec<String> {
        let host = request
            .headers()
            .get(poem::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned());
        self.0
            .iter()
            .map(|url| match &host {
                Some(host) if url.contains("://0.0.0.0:") || url.contains("://[::]:") => {
                    url.replacen("0.0.0.0", host, 1).replacen("[::]", host, 1)
                }
                _ => url.clone(),
            })
            .collect()
    }
}

/// The API's URL as people reach it (`EDICT_PUBLIC_URL`, no trailing slash): the device approval page
/// is named from it. Never from a request's Host header, which whoever sends the request chooses.
#[derive(Debug, Clone, Default)]
pub struct PublicUrl(pub String);

/// A machine asking for an agent token.
#[derive(Debug, Clone, Object)]
pub struct MachineDto {
    /// A stable id of the machine (1 to 200 characters).
    pub machine_id: Text,
    /// A name people recognize.
    #[oai(default)]
    #[oai(nullable)]
    pub machine_name: Text,
}

/// A device authorization, for the agent.
#[derive(Debug, Clone, Object)]
pub struct DeviceCodeDto {
    /// The secret the agent polls with (`POST /api/v1/device/token`); never shown to anyone.
    pub device_code: String,
    /// The code the person types when approving (`XXXX-XXXX`).
    pub user_code: String,
    /// Where a signed-in user approves it.
    pub verification_uri: String,
    /// Seconds until the codes stop working.
    pub expires_in: i64,
    /// Seconds between two polls.
    pub interval: i64,
}

/// A poll.
#[derive(Debug, Clone, Object)]
pub struct DeviceTokenRequestDto {
    /// The device code from `POST /api/v1/device/code`.
    pub device_code: Text,
}

/// An agent's credentials, shown once.
#[derive(Debug, Clone, Object)]
pub struct AgentCredentialsDto {
    /// The enrolled agent's id.
    pub agent_id: String,
    /// Its agent token.
    pub token: String,
    /// When the token was issued.
    pub issued_at: DateTime<Utc>,
    /// When the token stops working: the agent renews it before (`POST /api/v1/agent/token`).
    pub expires_at: DateTime<Utc>,
    /// The gateways to connect to (WebSocket URLs), in order.
    pub gateway_urls: Vec<String>,
    /// The organization's public keys that sign rule sets: the agent pins them and refuses any rule
    /// set they did not sign (`edict-agent login` prints their ids; `--org-key` checks one out of band).
    pub org_keys: Vec<OrgKeyDto>,
    /// The sequence of the organization key set `org_keys` come from (ADR 0021): gateways send the
    /// agent every later key set, each signed by a key it trusts already.
    pub key_sequence: u64,
}

/// A public key that signs rule sets.
#[derive(Debug, Clone, Object)]
pub struct OrgKeyDto {
    /// Its id: the first 16 hex digits of the SHA-256 of the public key (the fingerprint).
    pub key_id: String,
    /// The ed25519 public key, 64 hex digits.
    pub public_key: String,
}

/// The organization's keys a login answer carries, and their key set's sequence. Read before the
/// enrollment is performed, so a store that cannot answer never costs the machine its token.
async fn org_keys(edict: &Edict) -> ApiResult<(Vec<OrgKeyDto>, u64)> {
    let status = edict.org_key_status().await?;
    let keys = status
        .keys
        .into_iter()
        .map(|key| OrgKeyDto {
            key_id: key.key_id,
            public_key: key.public_key,
        })
        .collect();
    Ok((keys, status.sequence))
}

/// Where a device authorization stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DeviceStatusDto {
    /// Waiting for a decision.
    Pending,
    /// Approved; the agent collects its token at its next poll.
    Approved,
    /// Denied.
    Denied,
    /// Approved, and collected.
    Completed,
    /// Nobody decided in time.
    Expired,
}

impl From<DeviceStatus> for DeviceStatusDto {
    fn from(status: DeviceStatus) -> Self {
        match status {
            DeviceStatus::Pending => DeviceStatusDto::Pending,
            DeviceStatus::Approved => DeviceStatusDto::Approved,
            DeviceStatus::Denied => DeviceStatusDto::Denied,
            DeviceStatus::Completed => DeviceStatusDto::Completed,
            DeviceStatus::Expired => DeviceStatusDto::Expired,
        }
    }
}

/// What asks for access: check it is your machine before approving.
#[derive(Debug, Clone, Object)]
pub struct DeviceRequestDto {
    /// The code.
    pub user_code: String,
    /// The machine's id, as the agent stated it.
    pub machine_id: String,
    /// The machine's name, as the agent stated it.
    pub machine_name: String,
    /// Where it stands.
    pub status: DeviceStatusDto,
    /// When the agent asked.
    pub requested_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// An approval: `consent` must be `true`, stated explicitly.
#[derive(Debug, Clone, Object)]
pub struct ConsentDto {
    /// `true`: I recognize this machine as mine and let it enforce my organization's rules with my
    /// identity.
    pub consent: bool,
}

/// An approved device authorization.
#[derive(Debug, Clone, Object)]
pub struct DeviceApprovedDto {
    /// The enrolled agent (its token goes to the machine, not to you).
    pub agent_id: String,
    /// The global log position of the enrollment.
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<i64>,
}

/// A new enrollment token.
#[derive(Debug, Clone, Object)]
pub struct NewEnrollmentTokenDto {
    /// Whose machines it enrolls (default: you).
    #[oai(nullable)]
    pub user_id: Option<Text>,
    /// How many machines (default 1).
    #[oai(default = "one")]
    #[oai(nullable)]
    pub uses: u32,
    /// Seconds it stays valid (default one day; 60 to 90 days).
    #[oai(default = "one_day")]
    #[oai(nullable)]
    pub expires_in_secs: i64,
    /// What it is for (at most 200 characters).
    #[oai(default)]
    #[oai(nullable)]
    pub note: Text,
}

fn one() -> u32 {
    1
}

fn one_day() -> i64 {
    86_400
}

/// An enrollment token (its secret only in the answer to its creation).
#[derive(Debug, Clone, Object)]
pub struct EnrollmentTokenDto {
    /// Its id.
    pub id: String,
    /// The secret (`ede_…`): shown once; give it to `edict-agent login --enrollment-token`.
    #[oai(skip_serializing_if_is_none)]
    pub token: Option<String>,
    /// Whose machines it enrolls.
    pub user_id: String,
    /// Who created it.
    pub created_by: String,
    /// What it is for.
    pub note: String,
    /// Machines in all.
    pub uses_total: u32,
    /// Machines left.
    pub uses_left: u32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Whether it was revoked.
    pub revoked: bool,
}

pub(super) fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

impl EnrollmentTokenDto {
    fn new(info: EnrollmentTokenInfo, token: Option<String>) -> Self {
        EnrollmentTokenDto {
            id: info.id,
            token,
            user_id: info.user.to_string(),
            created_by: info.created_by.to_string(),
            note: info.note,
            uses_total: info.uses_total,
            uses_left: info.uses_left,
            created_at: at(info.created_at),
            expires_at: at(info.expires_at),
            revoked: info.revoked,
        }
    }
}

/// Trading an enrollment token for an agent token.
#[derive(Debug, Clone, Object)]
pub struct TokenEnrollDto {
    /// The enrollment token (`ede_…`).
    pub enrollment_token: Text,
    /// A stable id of the machine (1 to 200 characters).
    pub machine_id: Text,
    /// A name people recognize.
    #[oai(default)]
    #[oai(nullable)]
    pub machine_name: Text,
}

fn machine(id: &str, name: &str) -> Result<(MachineId, MachineName), ErrorResponse> {
    Ok((
        MachineId::parse(id).map_err(invalid)?,
        MachineName::parse(name).map_err(invalid)?,
    ))
}

fn poll_problem(poll: &DevicePoll) -> ErrorResponse {
    let (slug, detail) = match poll {
        DevicePoll::Pending => (
            "authorization-pending",
            "nobody approved this device yet: keep polling",
        ),
        DevicePoll::SlowDown => ("slow-down", "polling too fast: wait longer between polls"),
        DevicePoll::Denied => ("access-denied", "the user denied this device"),
        DevicePoll::Expired | DevicePoll::Approved { .. } => (
            "expired-token",
            "this device code expired or was used: start again",
        ),
        DevicePoll::Unknown => ("invalid-grant", "no such device code"),
    };
    ErrorResponse::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, slug, detail)))
}

/// Enrollment.
pub struct EnrollmentApi;

#[OpenApi(tag = "EnrollmentTags::Enrollment")]
impl EnrollmentApi {
    /// Starts the device code flow (no credentials): answers the codes; show `user_code` and
    /// `verification_uri` to the person, keep `device_code` and poll `POST /api/v1/device/token`.
    /// Limited per client address (429 with `Retry-After`).
    #[oai(path = "/api/v1/device/code", method = "post")]
    async fn device_code(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        request: &Request,
        body: Json<MachineDto>,
    ) -> LimitedResult<Json<DeviceCodeDto>> {
        limits.device_code(request)?;
        let (machine_id, machine_name) = machine(&body.machine_id, &body.machine_name)?;
        let grant = edict
            .start_device_authorization(&machine_id, &machine_name)
            .await?;
        let base = request
            .data::<PublicUrl>()
            .map(|url| url.0.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(Json(DeviceCodeDto {
            device_code: grant.device_code,
            verification_uri: format!("{base}/device"),
            user_code: grant.user_code,
            expires_in: edict_application::enrollment::DEVICE_TTL_SECS,
            interval: DEVICE_POLL_INTERVAL_SECS,
        }))
    }

    /// The agent's poll: its credentials once a user approved, else a 400 problem naming the state
    /// (`authorization-pending`, `slow-down`, `access-denied`, `expired-token`, `invalid-grant`).
    /// Polls are limited per client address (429 with `Retry-After`).
    #[oai(path = "/api/v1/device/token", method = "post")]
    async fn device_token(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        gateways: Data<&GatewayUrls>,
        request: &Request,
        body: Json<DeviceTokenRequestDto>,
    ) -> LimitedResult<Json<AgentCredentialsDto>> {
        limits.device_poll(request)?;
        let (org_keys, key_sequence) = org_keys(&edict).await?;
        match edict.poll_device_authorization(&body.device_code).await? {
            DeviceOutcome::Enrolled { agent_id, token } => Ok(Json(AgentCredentialsDto {
                agent_id,
                issued_at: at(token.issued_at),
                expires_at: at(token.expires_at),
                token: token.token,
                gateway_urls: gateways.for_request(request),
                org_keys,
                key_sequence,
            })),
            DeviceOutcome::Waiting(poll) => Err(poll_problem(&poll).into()),
        }
    }

    /// What asks for access under `user_code` (the consent step): any signed-in user.
    #[oai(path = "/api/v1/device/requests/:user_code", method = "get")]
    async fn device_request(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        user_code: Path<String>,
    ) -> ApiResult<Json<DeviceRequestDto>> {
        let found = edict.device_request(&auth.0, &user_code).await?;
        Ok(Json(DeviceRequestDto {
            user_code: found.user_code,
            machine_id: found.machine_id,
            machine_name: found.machine_name,
            status: found.status.into(),
            requested_at: at(found.created_at),
            expires_at: at(found.expires_at),
        }))
    }

    /// Approves a pending device authorization with explicit consent (`{"consent": true}`): the
    /// machine is enrolled as yours. Any signed-in user but auditors.
    #[oai(path = "/api/v1/device/requests/:user_code/approve", method = "post")]
    async fn approve_device(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        user_code: Path<String>,
        body: Json<ConsentDto>,
    ) -> ApiResult<Json<DeviceApprovedDto>> {
        if !body.consent {
            return Err(AppError::invalid(
                "consent",
                "must be true: approving enrolls this machine with your identity",
            )
            .into());
        }
        let ctx = common::context(request)?;
        let outcome = edict
            .decide_device_request(&auth.0, &user_code, true, &ctx)
            .await?
            .ok_or_else(|| AppError::Internal("an approval enrolled nothing".into()))?;
        Ok(Json(DeviceApprovedDto {
            agent_id: outcome.id,
            position: outcome.position,
        }))
    }

    /// Denies a pending device authorization: the agent's poll answers `access-denied`.
    #[oai(path = "/api/v1/device/requests/:user_code/deny", method = "post")]
    async fn deny_device(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        user_code: Path<String>,
    ) -> ApiResult<Json<DeviceRequestDto>> {
        let ctx = common::context(request)?;
        edict
            .decide_device_request(&auth.0, &user_code, false, &ctx)
            .await?;
        let found = edict.device_request(&auth.0, &user_code).await?;
        Ok(Json(DeviceRequestDto {
            user_code: found.user_code,
            machine_id: found.machine_id,
            machine_name: found.machine_name,
            status: found.status.into(),
            requested_at: at(found.created_at),
            expires_at: at(found.expires_at),
        }))
    }

    /// Creates an enrollment token for unattended installs (its secret is in this answer only).
    /// org_admin.
    #[oai(path = "/api/v1/enrollment-tokens", method = "post")]
    async fn create_enrollment_token(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        body: Json<NewEnrollmentTokenDto>,
    ) -> ApiResult<Json<EnrollmentTokenDto>> {
        let user = body
            .user_id
            .as_deref()
            .map(|raw| common::body_id::<UserId>(raw, "user_id"))
            .transpose()?;
        let (info, token) = edict
            .create_enrollment_token(&auth.0, user, body.uses, body.expires_in_secs, &body.note)
            .await?;
        Ok(Json(EnrollmentTokenDto::new(info, Some(token))))
    }

    /// Every enrollment token, newest first (no secrets). org_admin.
    #[oai(path = "/api/v1/enrollment-tokens", method = "get")]
    async fn enrollment_tokens(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<Vec<EnrollmentTokenDto>>> {
        Ok(Json(
            edict
                .enrollment_tokens(&auth.0)
                .await?
                .into_iter()
                .map(|info| EnrollmentTokenDto::new(info, None))
                .collect(),
        ))
    }

    /// Revokes an enrollment token: machines it enrolled keep their agent tokens. org_admin.
    #[oai(path = "/api/v1/enrollment-tokens/:id/revoke", method = "post")]
    async fn revoke_enrollment_token(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> ApiResult<Json<EnrollmentTokenDto>> {
        edict.revoke_enrollment_token(&auth.0, &id).await?;
        edict
            .enrollment_tokens(&auth.0)
            .await?
            .into_iter()
            .find(|info| info.id == id.0)
            .map(|info| Json(EnrollmentTokenDto::new(info, None)))
            .ok_or_else(|| AppError::NotFound("enrollment token".into()).into())
    }

    /// Trades an enrollment token for an agent token (no other credentials; one use of the token).
    /// Limited per client address (429 with `Retry-After`).
    #[oai(path = "/api/v1/agents/enroll", method = "post")]
    async fn enroll_with_token(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        gateways: Data<&GatewayUrls>,
        request: &Request,
        body: Json<TokenEnrollDto>,
    ) -> LimitedResult<Json<AgentCredentialsDto>> {
        limits.enroll(request)?;
        let (machine_id, machine_name) = machine(&body.machine_id, &body.machine_name)?;
        let ctx = common::context(request)?;
        let (org_keys, key_sequence) = org_keys(&edict).await?;
        let enrollment = edict
            .enroll_with_token(&body.enrollment_token, machine_id, machine_name, &ctx)
            .await?;
        Ok(Json(AgentCredentialsDto {
            agent_id: enrollment.outcome.id,
            issued_at: at(enrollment.token.issued_at),
            expires_at: at(enrollment.token.expires_at),
            token: enrollment.token.token,
            gateway_urls: gateways.for_request(request),
            org_keys,
            key_sequence,
        }))
    }
}
