//! Agents: `/api/v1/agents`, the machines that enforce rules.

use super::common::{self, Accepted, Tagged, invalid};
use super::contract::documents::AgentPage;
use super::contract::text::Text;
use super::problem::ApiResult;
use super::queries as q;
use super::rate_limit::{LimitedResult, RateLimits};
use super::security::{BearerAuth, Caller};
use chrono::{DateTime, Utc};
use edict_application::Edict;
use edict_domain::agent::{Agent, MachineId, MachineName};
use edict_domain::value::Reason;
use edict_domain::{AgentId, UserId};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::Header;
use poem_openapi::param::Path;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use super::enrollment::at;
use std::sync::Arc;

#[derive(Tags)]
enum AgentTags {
    /// Enrolled machines.
    Agents,
}

/// A machine to enroll.
#[derive(Debug, Clone, Object)]
pub struct EnrollDto {
    /// A stable id of the machine (1 to 200 characters).
    pub machine_id: Text,
    /// A name people recognize.
    #[oai(default)]
    #[oai(nullable)]
    pub machine_name: Text,
    /// The user the machine belongs to (default: you; someone else: org_admin only).
    #[oai(nullable)]
    pub user_id: Option<Text>,
}

/// An enrolled agent and its token.
#[derive(Debug, Clone, Object)]
pub struct EnrolledDto {
    /// The agent's id.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// The global log position of the enrollment.
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<i64>,
    /// The agent token: shown once, give it to `edict-agent`.
    pub token: String,
    /// When the token was issued.
    pub issued_at: DateTime<Utc>,
    /// When the token stops working: the agent renews it before (`POST /api/v1/agent/token`).
    pub expires_at: DateTime<Utc>,
}

/// A renewed agent token.
#[derive(Debug, Clone, Object)]
pub struct RenewedTokenDto {
    /// The agent it stands for.
    pub agent_id: String,
    /// The new agent token: shown once (never kept by `Idempotency-Key` replays).
    pub token: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Until when the token that asked keeps working (the renewal grace).
    pub previous_expires_at: DateTime<Utc>,
}

/// An agent token as listed to its owner: never its secret.
#[derive(Debug, Clone, Object)]
pub struct AgentTokenDto {
    /// Its handle.
    pub id: String,
    /// The agent it stands for.
    pub agent_id: String,
    /// The agent's machine name (empty when the agent cannot be read).
    pub machine_name: String,
    /// The agent's user.
    pub user_id: String,
    /// When it was issued (at enrollment, or by a renewal).
    pub issued_at: DateTime<Utc>,
    /// Whether a renewal issued it (else the enrollment).
    pub from_renewal: bool,
    /// When it stops (or stopped) working.
    pub expires_at: DateTime<Utc>,
    /// When the agent renewed it (it works until `expires_at`, the end of the renewal grace).
    #[oai(nullable)]
    pub renewed_at: Option<DateTime<Utc>>,
    /// When it was revoked (the agent was revoked, its user's password changed, or its user was
    /// deactivated).
    #[oai(nullable)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `renewed` (in its grace), `expired` or `revoked`.
    pub state: String,
}

/// Agent tokens, newest first.
#[derive(Debug, Clone, Object)]
pub struct AgentTokenListDto {
    /// The tokens (at most 500).
    pub items: Vec<AgentTokenDto>,
}

/// A revocation.
#[derive(Debug, Clone, Object)]
pub struct RevokeDto {
    /// Why (optional).
    #[oai(nullable)]
    pub reason: Option<Text>,
}

/// An enrolled agent.
#[derive(Debug, Clone, Object)]
pub struct AgentDto {
    /// Its id.
    pub id: String,
    /// The number of events so far.
    pub version: u64,
    /// The user it belongs to.
    pub user_id: String,
    /// The machine's id.
    pub machine_id: String,
    /// The machine's name.
    pub machine_name: String,
    /// When it was enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// How many rule sets it refused because it could not trust them (unsigned, signed by an unknown
    /// key, a signature that does not match, signed for another team, or edited in its snapshot).
    pub integrity_failures: u64,
    /// The last one.
    #[oai(nullable)]
    pub last_integrity_failure: Option<IntegrityFailureDto>,
}

/// A rule set an agent refused because it could not trust it.
#[derive(Debug, Clone, Object)]
pub struct IntegrityFailureDto {
    /// The team it was sent as.
    pub team: String,
    /// The revision it claimed.
    pub revision: u64,
    /// `unsigned`, `unknown_key`, `bad_signature`, `hash_mismatch`, `misaddressed`,
    /// `no_pinned_key` or `tampered_snapshot`.
    pub reason: String,
    /// For a human.
    pub detail: String,
    /// When the server heard of it.
    pub at: DateTime<Utc>,
}

impl AgentDto {
    fn from_agent(agent: &Agent) -> Option<Self> {
        use edict_domain::Versioned;
        Some(AgentDto {
            id: agent.id()?.to_string(),
            version: agent.version(),
            user_id: agent.user()?.to_string(),
            machine_id: agent.machine_id()?.as_str().to_owned(),
            machine_name: agent.machine_name()?.as_str().to_owned(),
            enrolled_at: agent.enrolled_at()?,
            revoked: agent.revoked(),
            integrity_failures: agent.integrity_failures(),
            last_integrity_failure: agent.last_integrity_failure().map(|f| IntegrityFailureDto {
                team: f.team.clone(),
                revision: f.revision,
                reason: f.reason.clone(),
                detail: f.detail.clone(),
                at: f.at,
            }),
        })
    }
}

fn agent_id(raw: &str) -> Result<AgentId, super::problem::ErrorResponse> {
    common::id(raw, "agent")
}

/// Agents.
pub struct AgentsApi;

#[OpenApi(tag = "AgentTags::Agents")]
impl AgentsApi {
    /// Enrolls a machine and answers its agent token (shown once). Any user for their own machine; an
    /// org_admin for anyone's.
    #[oai(path = "/api/v1/agents", method = "post")]
    async fn enroll(
        &self,
        caller: Caller<'_>,
        body: Json<EnrollDto>,
    ) -> ApiResult<Json<EnrolledDto>> {
        let machine_id = MachineId::parse(&body.machine_id).map_err(invalid)?;
        let machine_name = MachineName::parse(&body.machine_name).map_err(invalid)?;
        let user = body
            .user_id
            .as_deref()
            .map(|raw| common::body_id::<UserId>(raw, "user_id"))
            .transpose()?;
        let ctx = caller.context()?;
        let enrollment = caller
            .edict
            .enroll_agent(&caller.principal, user, machine_id, machine_name, &ctx)
            .await?;
        Ok(Json(EnrolledDto {
            id: enrollment.outcome.id,
            version: enrollment.outcome.version,
            position: enrollment.outcome.position,
            issued_at: at(enrollment.token.issued_at),
            expires_at: at(enrollment.token.expires_at),
            token: enrollment.token.token,
        }))
    }

    /// Renews the calling agent's token: answers a new token and its expiry (shown once; a retry
    /// with the same `Idempotency-Key` is told so, never given it again). The token that asked keeps
    /// working for a short grace (`previous_expires_at`), so a lost answer can be asked again, and is
    /// refused after it; asking again revokes the token of the lost answer. Agents only, with the agent
    /// token to renew; `edict-agent` renews on its own past half its token's life. Limited per agent
    /// (429 with `Retry-After`).
    #[oai(path = "/api/v1/agent/token", method = "post")]
    async fn renew_token(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        auth: BearerAuth,
        request: &Request,
    ) -> LimitedResult<Json<RenewedTokenDto>> {
        limits.token_renewal(&auth.0)?;
        let bearer = request
            .header(poem::http::header::AUTHORIZATION)
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            })
            .map(|(_, token)| token.trim().to_owned())
            .unwrap_or_default();
        let (agent, renewal) = edict.renew_agent_token(&auth.0, &bearer).await?;
        Ok(Json(RenewedTokenDto {
            agent_id: agent.to_string(),
            issued_at: at(renewal.issued.issued_at),
            expires_at: at(renewal.issued.expires_at),
            previous_expires_at: at(renewal.previous_expires_at),
            token: renewal.issued.token,
        }))
    }

    /// The agent tokens of a user's machines (`user_id`, default: you), newest first, with where each
    /// stands; never a secret. Yours; an org_admin lists anyone's.
    #[oai(path = "/api/v1/agent-tokens", method = "get")]
    async fn tokens(
        &self,
        caller: Caller<'_>,
        user_id: Query<Option<String>>,
    ) -> ApiResult<Json<AgentTokenListDto>> {
        let user = user_id
            .0
            .as_deref()
            .map(|raw| common::id::<UserId>(raw, "user"))
            .transpose()?;
        let tokens = caller.edict.agent_tokens(&caller.principal, user).await?;
        let mut names: std::collections::HashMap<AgentId, String> =
            std::collections::HashMap::new();
        let mut items = Vec::with_capacity(tokens.len());
        for token in tokens {
            let machine_name = match names.get(&token.agent) {
                Some(name) => name.clone(),
                None => {
                    let name = caller
                        .edict
                        .agent(&caller.principal, token.agent)
                        .await
                        .ok()
                        .and_then(|agent| agent.machine_name().map(|n| n.as_str().to_owned()))
                        .unwrap_or_default();
                    names.insert(token.agent, name.clone());
                    name
                }
            };
            items.push(AgentTokenDto {
                id: token.id,
                agent_id: token.agent.to_string(),
                machine_name,
                user_id: token.user.to_string(),
                issued_at: at(token.issued_at),
                from_renewal: token.from_renewal,
                expires_at: at(token.expires_at),
                renewed_at: token.renewed_at.map(at),
                revoked_at: token.revoked_at.map(at),
                state: serde_json::to_value(token.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            });
        }
        Ok(Json(AgentTokenListDto { items }))
    }

    /// An agent. Its owner, an auditor or an org_admin.
    #[oai(path = "/api/v1/agents/:id", method = "get")]
    async fn get(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<AgentDto>> {
        let agent = caller
            .edict
            .agent(&caller.principal, agent_id(&id)?)
            .await?;
        let agent = AgentDto::from_agent(&agent);
        common::found(agent, "agent", |a| a.version, if_none_match.as_deref())
    }

    /// Revokes an agent: its token is refused at once. Its owner or an org_admin.
    #[oai(path = "/api/v1/agents/:id/revoke", method = "post")]
    async fn revoke(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<RevokeDto>,
    ) -> Accepted {
        let id = agent_id(&id)?;
        let reason = body.reason.as_deref().map(Reason::parse).transpose();
        let reason = reason.map_err(invalid)?;
        caller
            .run(async |e, p, ctx| e.revoke_agent(p, id, reason, ctx).await)
            .await
    }

    /// Enrolled agents; filter `status` (`enrolled`, `revoked`). org_admins and auditors see all, others
    /// their own.
    #[oai(path = "/api/v1/agents", method = "get")]
    async fn list(
        &self,
        caller: Caller<'_>,
        status: Query<Option<String>>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<Json<AgentPage>> {
        let page = q::page(after.0, limit.0, min_position.0);
        let agents = caller.edict.list_agents(&caller.principal, status.0, &page);
        Ok(Json(AgentPage::of(agents.await?)?))
    }

    /// The rule sets this agent enforces: per team, the revision it applied and since when. Its owner,
    /// auditors and org_admins. With `as_of` (an RFC 3339 time or a global position): what it had
    /// applied then.
    #[oai(path = "/api/v1/agents/:id/enforced", method = "get")]
    async fn enforced(
        &self,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller<'_>,
        id: Path<String>,
        as_of: Query<Option<String>>,
    ) -> LimitedResult<Json<Vec<super::teams::EnforcedDto>>> {
        let (edict, principal) = (caller.edict, &caller.principal);
        if let Some(as_of) = as_of.0 {
            limits.costly_read(principal)?;
            return Ok(
                super::events::enforced_as_of(edict, principal, agent_id(&id)?, &as_of).await?,
            );
        }
        let enforced = edict.agent_enforced(principal, agent_id(&id)?).await?;
        let enforced = enforced
            .into_iter()
            .map(|(e, current)| super::teams::EnforcedDto::of(e, current));
        Ok(Json(enforced.collect()))
    }
}
