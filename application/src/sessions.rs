//! Signing in and out, and authenticating each request.
//!
//! A request is authenticated against the user's *current* events: the access token names a session
//! that must still be open, and the user must exist and be active. A deactivation or a revoked role takes
//! effect on the next request, not when the token expires.

use crate::auth::{HashPriority, Tokens};
use crate::error::{AppError, DomainFailure};
use crate::metadata::Metadata;
use crate::principal::Principal;
use crate::service::Edict;
use edict_domain::UserId;
use edict_domain::agent::{Agent, AgentError};
use edict_domain::user::{Email, GlobalRole, PersonName, User, UserCommand, UserError};
use std::collections::BTreeSet;

use crate::auth::AGENT_TOKEN_PREFIX;

impl DomainFailure for UserError {
    fn is_not_found(&self) -> bool {
        matches!(self, UserError::NotFound)
    }
}

impl DomainFailure for AgentError {
    fn is_not_found(&self) -> bool {
        matches!(self, AgentError::NotFound)
    }
}

impl Edict {
    /// Whether any user exists.
    ///
    /// # Errors
    /// 503 when the store fails.
    pub async fn has_users(&self) -> Result<bool, AppError> {
        Ok(self.auth.has_users().await?)
    }

    /// Creates the first org_admin when no user exists yet (or when the only trace of one is credentials
    /// whose user was never recorded: a start that died half-way); answers whether it did.
    ///
    /// # Errors
    /// 422 when the email or password is not acceptable, 503 when the store fails.
    pub async fn bootstrap_admin(&self, email: &str, password: &str) -> Result<bool, AppError> {
        let email = Email::parse(email)?;
        check_password_policy(password)?;
        if self.auth.has_users().await? && !self.reclaim_orphaned_email(&email).await? {
            return Ok(false);
        }
        let user = UserId::new();
        match self.auth.register(user, email.as_str(), password).await {
            Ok(()) => {}
            // Another process bootstrapped at the same moment.
            Err(crate::auth::AuthError::EmailTaken) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let command = UserCommand::CreateUser {
            user_id: user,
            email,
            name: PersonName::parse("Administrator")?,
            roles: BTreeSet::from([GlobalRole::OrgAdmin]),
            by: None,
            at: self.clock.now(),
        };
        let metadata = Metadata::system("bootstrap");
        if let Err(error) = self
            .run(
                self.users.as_ref(),
                user.to_string(),
                command,
                None,
                &metadata,
            )
            .await
        {
            self.forget_registration(user).await;
            return Err(error);
        }
        Ok(true)
    }

    /// Frees `email` when its credentials belong to no recorded user (a creation that died between
    /// registering the credentials and recording the user); answers whether it did.
    pub(crate) async fn reclaim_orphaned_email(&self, email: &Email) -> Result<bool, AppError> {
        let Some(owner) = self.auth.owner_of(email.as_str()).await? else {
            return Ok(false);
        };
        if self.users.load(&owner.to_string()).await?.exists() {
            return Ok(false);
        }
        tracing::warn!(%owner, "reclaiming an email whose user was never recorded");
        self.auth.unregister(owner).await?;
        Ok(true)
    }

    /// Removes credentials whose user could not be recorded, logging (not hiding) a failure.
    pub(crate) async fn forget_registration(&self, user: UserId) {
        if let Err(error) = self.auth.unregister(user).await {
            tracing::error!(%user, %error, "cannot remove the credentials of a user that was not created");
        }
    }

    /// Signs a user in.
    ///
    /// # Errors
    /// 401 for an unknown email, a wrong password or a deactivated user (the same answer for all three).
    pub async fn login(&self, email: &str, password: &str) -> Result<Tokens, AppError> {
        self.login_with_priority(email, password, HashPriority::Normal)
            .await
    }

    /// [`Edict::login`], its password hash waiting in the lane of `priority`.
    ///
    /// # Errors
    /// As [`Edict::login`].
    pub async fn login_with_priority(
        &self,
        email: &str,
        password: &str,
        priority: HashPriority,
    ) -> Result<Tokens, AppError> {
        // An email that cannot exist (or would upset the store, like a NUL) is just a wrong login.
        let Ok(email) = Email::parse(email) else {
            return Err(AppError::Unauthenticated);
        };
        if password.len() > 1024 || password.contains('\0') {
            return Err(AppError::Unauthenticated);
        }
        let Some(user) = self
            .auth
            .check_password(email.as_str(), password, priority)
            .await?
        else {
            return Err(AppError::Unauthenticated);
        };
        self.active_user(user).await?;
        Ok(self.auth.open_session(user).await?)
    }

    /// Renews a session.
    ///
    /// # Errors
    /// 401 for an unknown, used, revoked or expired refresh token, or a deactivated user.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, AppError> {
        let Some((user, tokens)) = self.auth.refresh(refresh_token).await? else {
            return Err(AppError::Unauthenticated);
        };
        self.active_user(user).await?;
        Ok(tokens)
    }

    /// Signs out: closes the caller's session.
    ///
    /// # Errors
    /// 403 for agents (they have no session), 503 when the store fails.
    pub async fn logout(&self, principal: &Principal) -> Result<(), AppError> {
        match principal {
            Principal::User { session, .. } => Ok(self.auth.close_session(session).await?),
            Principal::Agent { .. } => Err(AppError::Forbidden(
                "agents have no session to close".into(),
            )),
        }
    }

    /// Who presents `bearer`: a user with an open session, or an agent whose token is unrevoked and
    /// unexpired.
    ///
    /// # Errors
    /// 401 when the token is not valid now.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AppError> {
        if bearer.starts_with(AGENT_TOKEN_PREFIX) {
            let Some((agent, user)) = self.auth.verify_agent_token(bearer).await?.valid() else {
                return Err(AppError::Unauthenticated);
            };
            let state: Agent = self.agents.load(&agent.to_string()).await?;
            if !state.exists() || state.revoked() {
                return Err(AppError::Unauthenticated);
            }
            self.active_user(user).await?;
            return Ok(Principal::Agent { id: agent, user });
        }
        let Some(grant) = self.auth.verify_access(bearer).await? else {
            return Err(AppError::Unauthenticated);
        };
        let user = self.active_user(grant.user).await?;
        Ok(Principal::User {
            id: grant.user,
            roles: user.roles().clone(),
            session: grant.session,
        })
    }

    /// The user, if they exist and are active; 401 otherwise.
    async fn active_user(&self, id: UserId) -> Result<User, AppError> {
        let user = self.users.load(&id.to_string()).await?;
        if user.exists() && user.active() {
            Ok(user)
        } else {
            Err(AppError::Unauthenticated)
        }
    }
}

/// The password policy: 12 to 1024 characters (length beats composition rules; NIST SP 800-63B).
///
/// # Errors
/// 422 naming `password`.
pub fn check_password_policy(password: &str) -> Result<(), AppError> {
    let length = password.chars().count();
    if !(12..=1024).contains(&length) {
        return Err(AppError::Invalid {
            field: "password".into(),
            message: format!("password must be 12 to 1024 characters long, got {length}"),
        });
    }
    Ok(())
}
