//! How a machine gets its agent token, besides a user enrolling it directly (`POST /api/v1/agents`):
//!
//! - **Device code flow** (`edict-agent login`): the agent asks for a device authorization and shows
//!   its user code; a signed-in user looks the request up (the consent step: which machine asks) and
//!   approves it explicitly, which enrolls the machine for that user; the agent, polling with its secret
//!   device code, collects its agent token once. Nothing approves itself from a link.
//! - **Enrollment tokens** (unattended installs): an org_admin creates a token for a user, good for a
//!   number of machines until it expires; the installer trades it for an agent token.

use crate::agents::Enrollment;
use crate::auth::{DeviceGrant, DevicePoll, DeviceRequest, DeviceStatus, EnrollmentTokenInfo};
use crate::error::AppError;
use crate::metadata::{Metadata, Source};
use crate::principal::Principal;
use crate::service::{Edict, Outcome, RequestContext};
use edict_domain::UserId;
use edict_domain::agent::{MachineId, MachineName};

/// How long a device authorization waits for a user (10 minutes).
pub const DEVICE_TTL_SECS: i64 = 600;
/// How often the agent polls (seconds).
pub const DEVICE_POLL_INTERVAL_SECS: i64 = 2;
/// The longest an enrollment token may live (90 days).
pub const MAX_ENROLLMENT_TTL_SECS: i64 = 90 * 86_400;
/// The most machines one enrollment token may enroll.
pub const MAX_ENROLLMENT_USES: u32 = 100_000;

/// What an agent's poll answers.
#[derive(Debug, Clone)]
pub enum DeviceOutcome {
    /// Enrolled: the agent token, once.
    Enrolled {
        /// The agent's id.
        agent_id: String,
        /// Its token.
        token: crate::auth::IssuedAgentToken,
    },
    /// Not yet, or not at all.
    Waiting(DevicePoll),
}

/// Auditors change nothing, so they own no agents (an agent reports changes and appeals decisions):
/// no enrollment token is made for one, and none enrolls a machine for one.
///
/// # Errors
/// 403 when `owner` holds the auditor role (and is not an org_admin).
pub(crate) fn refuse_auditor_owner(owner: &edict_domain::user::User) -> Result<(), AppError> {
    use edict_domain::user::GlobalRole;
    if owner.has_role(GlobalRole::Auditor) && !owner.has_role(GlobalRole::OrgAdmin) {
        return Err(AppError::Forbidden(
            "auditors change nothing: an auditor owns no agents".into(),
        ));
    }
    Ok(())
}

impl Edict {
    fn require_org_admin(principal: &Principal, what: &str) -> Result<(), AppError> {
        if principal.is_org_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!("only an org_admin {what}")))
        }
    }

    /// Creates an enrollment token for `user` (the caller by default): org_admin only.
    ///
    /// # Errors
    /// 403 (also for a token owned by an auditor); 404 for an unknown user; 422 for `uses` or
    /// `expires_in_secs` out of range.
    pub async fn create_enrollment_token(
        &self,
        principal: &Principal,
        user: Option<UserId>,
        uses: u32,
        expires_in_secs: i64,
        note: &str,
    ) -> Result<(EnrollmentTokenInfo, String), AppError> {
        Self::require_org_admin(principal, "creates enrollment tokens")?;
        if uses == 0 || uses > MAX_ENROLLMENT_USES {
            return Err(AppError::invalid(
                "uses",
                format!("must be 1 to {MAX_ENROLLMENT_USES}"),
            ));
        }
        if !(60..=MAX_ENROLLMENT_TTL_SECS).contains(&expires_in_secs) {
            return Err(AppError::invalid(
                "expires_in_secs",
                format!("must be 60 to {MAX_ENROLLMENT_TTL_SECS} seconds"),
            ));
        }
        if note.chars().count() > 200 {
            return Err(AppError::invalid("note", "must be at most 200 characters"));
        }
        let user = user.unwrap_or(principal.user());
        let owner = self.users.load(&user.to_string()).await?;
        if !owner.exists() {
            return Err(AppError::NotFound("user".into()));
        }
        refuse_auditor_owner(&owner)?;
        let expires_at = self.clock.now().timestamp() + expires_in_secs;
        Ok(self
            .auth
            .create_enrollment_token(user, principal.user(), note, uses, expires_at)
            .await?)
    }

    /// Every enrollment token (without secrets): org_admin only.
    ///
    /// # Errors
    /// 403.
    pub async fn enrollment_tokens(
        &self,
        principal: &Principal,
    ) -> Result<Vec<EnrollmentTokenInfo>, AppError> {
        Self::require_org_admin(principal, "lists enrollment tokens")?;
        Ok(self.auth.enrollment_tokens().await?)
    }

    /// Revokes an enrollment token: org_admin only.
    ///
    /// # Errors
    /// 403; 404.
    pub async fn revoke_enrollment_token(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), AppError> {
        Self::require_org_admin(principal, "revokes enrollment tokens")?;
        if self.auth.revoke_enrollment_token(id).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("enrollment token".into()))
        }
    }

    /// Trades an enrollment token for an agent token (no other credentials).
    ///
    /// # Errors
    /// 401 when the token is unknown, revoked, expired or used up; 403 when its user is deactivated.
    pub async fn enroll_with_token(
        &self,
        token: &str,
        machine_id: MachineId,
        machine_name: MachineName,
        request: &RequestContext,
    ) -> Result<Enrollment, AppError> {
        let Some((token_id, user)) = self.auth.use_enrollment_token(token).await? else {
            return Err(AppError::Unauthenticated);
        };
        let metadata = Metadata {
            actor: format!("enrollment_token:{token_id}"),
            request_id: request.request_id.clone(),
            correlation_id: request
                .correlation_id
                .clone()
                .unwrap_or_else(|| request.request_id.clone()),
            source: Source::Api,
            traceparent: request.traceparent.clone(),
        };
        let outcome = self
            .enroll(user, machine_id, machine_name, &metadata)
            .await?;
        let agent = outcome
            .id
            .parse()
            .map_err(|_| AppError::Internal("enrolled agent id".into()))?;
        let token = self.auth.issue_agent_token(agent, user).await?;
        Ok(Enrollment { outcome, token })
    }

    /// Starts a device authorization for a machine (no credentials: the agent has none yet).
    ///
    /// # Errors
    /// 503 when the store fails.
    pub async fn start_device_authorization(
        &self,
        machine_id: &MachineId,
        machine_name: &MachineName,
    ) -> Result<DeviceGrant, AppError> {
        Ok(self
            .auth
            .start_device_authorization(machine_id.as_str(), machine_name.as_str(), DEVICE_TTL_SECS)
            .await?)
    }

    /// The device authorization behind `user_code`, for the consent step: any signed-in user.
    ///
    /// # Errors
    /// 403 for agents; 404.
    pub async fn device_request(
        &self,
        principal: &Principal,
        user_code: &str,
    ) -> Result<DeviceRequest, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden("agents cannot approve devices".into()));
        }
        self.auth
            .device_request(user_code)
            .await?
            .ok_or_else(|| AppError::NotFound("device authorization".into()))
    }

    /// Approves (enrolling the machine for the caller) or denies a pending device authorization.
    ///
    /// # Errors
    /// 403 for agents and auditors; 404; 422 (`device_request_not_pending`) when it was decided, or
    /// expired.
    pub async fn decide_device_request(
        &self,
        principal: &Principal,
        user_code: &str,
        approve: bool,
        request: &RequestContext,
    ) -> Result<Option<Outcome>, AppError> {
        if principal.has_role(edict_domain::user::GlobalRole::Auditor) && !principal.is_org_admin()
        {
            return Err(AppError::Forbidden(
                "auditors change nothing, machines included: they neither approve nor deny devices"
                    .into(),
            ));
        }
        let pending = self.device_request(principal, user_code).await?;
        if pending.status != DeviceStatus::Pending {
            return Err(AppError::Rule {
                rule: "device_request_not_pending".into(),
                message: format!(
                    "this device authorization is {:?}, not pending",
                    pending.status
                )
                .to_lowercase(),
            });
        }
        if !self
            .auth
            .decide_device_request(user_code, principal.user(), approve)
            .await?
        {
            return Err(AppError::Rule {
                rule: "device_request_not_pending".into(),
                message: "this device authorization was decided meanwhile, or expired".into(),
            });
        }
        if !approve {
            return Ok(None);
        }
        let machine_id = MachineId::parse(&pending.machine_id)
            .map_err(|e| AppError::Internal(format!("stored machine id: {e}")))?;
        let machine_name = MachineName::parse(&pending.machine_name)
            .map_err(|e| AppError::Internal(format!("stored machine name: {e}")))?;
        let metadata = Self::metadata(principal, request);
        let outcome = self
            .enroll(principal.user(), machine_id, machine_name, &metadata)
            .await?;
        let agent = outcome
            .id
            .parse()
            .map_err(|_| AppError::Internal("enrolled agent id".into()))?;
        // The approver never sees the token: the agent collects it with its device code.
        self.auth
            .complete_device_approval(user_code, agent, principal.user())
            .await?;
        Ok(Some(outcome))
    }

    /// An agent's poll with its device code.
    ///
    /// # Errors
    /// 503 when the store fails.
    pub async fn poll_device_authorization(
        &self,
        device_code: &str,
    ) -> Result<DeviceOutcome, AppError> {
        // Timestamps are in seconds: allow a poll a second early.
        let poll = self
            .auth
            .poll_device_authorization(device_code, DEVICE_POLL_INTERVAL_SECS - 1)
            .await?;
        match poll {
            DevicePoll::Approved { agent, user } => {
                let token = self.auth.issue_agent_token(agent, user).await?;
                Ok(DeviceOutcome::Enrolled {
                    agent_id: agent.to_string(),
                    token,
                })
            }
            other => Ok(DeviceOutcome::Waiting(other)),
        }
    }
}
