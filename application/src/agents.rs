//! Use cases of agents: a user enrolls a machine (an org_admin may enroll one for anyone) and gets its
//! agent token once; the owner or an org_admin revokes it, which refuses the token at once.

use crate::error::AppError;
use crate::principal::Principal;
use crate::service::{Edict, Outcome, RequestContext};
use edict_domain::agent::{Agent, AgentCommand, MachineId, MachineName};
use edict_domain::value::Reason;
use edict_domain::{AgentId, UserId};

/// An enrolled agent and the token it authenticates with (shown once).
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The command's outcome (the agent's id and version).
    pub outcome: Outcome,
    /// The agent token and its lifetime.
    pub token: crate::auth::IssuedAgentToken,
}

/// The most agent tokens listed at once (a user's agents are capped; each renewal adds one).
pub const MAX_LISTED_TOKENS: u32 = 500;

impl Edict {
    /// Enrolls a machine for `user` (the caller by default).
    ///
    /// # Errors
    /// 403 for agents, auditors, and users enrolling for someone else without being org_admin; 404 when
    /// the user does not exist.
    pub async fn enroll_agent(
        &self,
        principal: &Principal,
        user: Option<UserId>,
        machine_id: MachineId,
        machine_name: MachineName,
        request: &RequestContext,
    ) -> Result<Enrollment, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden("agents cannot enroll agents".into()));
        }
        let user = user.unwrap_or(principal.user());
        let allowed = principal.is_org_admin()
            || (user == principal.user()
                && !principal.has_role(edict_domain::user::GlobalRole::Auditor));
        if !allowed {
            return Err(AppError::Forbidden(
                "users enroll their own machines; only an org_admin enrolls one for someone else"
                    .into(),
            ));
        }
        let metadata = Self::metadata(principal, request);
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

    /// Enrolls a machine for `user`, who must exist, be active and not be an auditor (no token yet).
    pub(crate) async fn enroll(
        &self,
        user: UserId,
        machine_id: MachineId,
        machine_name: MachineName,
        metadata: &crate::metadata::Metadata,
    ) -> Result<Outcome, AppError> {
        let owner = self.users.load(&user.to_string()).await?;
        if !owner.exists() {
            return Err(AppError::NotFound("user".into()));
        }
        if !owner.active() {
            return Err(AppError::Forbidden(
                "the machine's user is deactivated".into(),
            ));
        }
        crate::enrollment::refuse_auditor_owner(&owner)?;
        self.check_agent_cap(user).await?;
        let agent_id = AgentId::new();
        let command = AgentCommand::EnrollAgent {
            agent_id,
            user,
            machine_id,
            machine_name,
            at: self.clock.now(),
        };
        self.run(
            self.agents.as_ref(),
            agent_id.to_string(),
            command,
            None,
            metadata,
        )
        .await
    }

    /// Loads an agent and checks that `principal` owns it or is an org_admin (or, to read, an auditor).
    async fn authorized_agent(
        &self,
        principal: &Principal,
        id: AgentId,
        read: bool,
    ) -> Result<Agent, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden("agents cannot manage agents".into()));
        }
        let agent = Self::existing(self.agents.as_ref(), id, "agent", Agent::exists).await?;
        let owner = agent.user() == Some(principal.user())
            && !principal.has_role(edict_domain::user::GlobalRole::Auditor);
        if principal.is_org_admin()
            || owner
            || (read && principal.can_read_all())
            || (read && agent.user() == Some(principal.user()))
        {
            Ok(agent)
        } else {
            Err(AppError::Forbidden("not your agent".into()))
        }
    }

    /// Revokes an agent: its token is refused from now on.
    ///
    /// # Errors
    /// 403 unless its owner or an org_admin; 404; 422 (`revoked`).
    pub async fn revoke_agent(
        &self,
        principal: &Principal,
        id: AgentId,
        reason: Option<Reason>,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.authorized_agent(principal, id, false).await?;
        let command = AgentCommand::RevokeAgent {
            by: principal.user(),
            reason,
            at: self.clock.now(),
        };
        let outcome = self
            .run_as(principal, request, self.agents.as_ref(), id, command)
            .await?;
        self.auth.revoke_agent_tokens(id).await?;
        Ok(outcome)
    }

    /// Renews the token the agent presents (`bearer`): a new one for the configured lifetime; the
    /// presented one keeps working for the renewal grace only (ADR 0025).
    ///
    /// # Errors
    /// 403 for users; 401 when the token is not valid (revoked, expired, or the agent was revoked).
    pub async fn renew_agent_token(
        &self,
        principal: &Principal,
        bearer: &str,
    ) -> Result<(AgentId, crate::auth::AgentTokenRenewal), AppError> {
        let Principal::Agent { id, .. } = principal else {
            return Err(AppError::Forbidden(
                "only an agent renews its token, with that token".into(),
            ));
        };
        match self.auth.renew_agent_token(bearer).await? {
            Some(renewal) => Ok((*id, renewal)),
            None => Err(AppError::Unauthenticated),
        }
    }

    /// The agent tokens of `user`'s agents (the caller by default), newest first: never their
    /// secrets.
    ///
    /// # Errors
    /// 403 for agents, and for anyone but the user themself or an org_admin.
    pub async fn agent_tokens(
        &self,
        principal: &Principal,
        user: Option<UserId>,
    ) -> Result<Vec<crate::auth::AgentTokenInfo>, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden(
                "agents cannot list agent tokens".into(),
            ));
        }
        let user = user.unwrap_or(principal.user());
        if user != principal.user() && !principal.is_org_admin() {
            return Err(AppError::Forbidden(
                "users list their own agents' tokens; only an org_admin lists anyone's".into(),
            ));
        }
        Ok(self.auth.agent_tokens_of(user, MAX_LISTED_TOKENS).await?)
    }

    /// An agent, rebuilt from its events.
    ///
    /// # Errors
    /// 403 unless its owner, an auditor or an org_admin; 404.
    pub async fn agent(&self, principal: &Principal, id: AgentId) -> Result<Agent, AppError> {
        self.authorized_agent(principal, id, true).await
    }
}
