//! [`LocalAuthenticator`]: the [`Authenticator`] port over the auth tables, argon2 and HS256 JWTs.
//!
//! Layout: this module holds the authenticator, its users, passwords, sessions and enrollment tokens;
//! `agent_tokens` the agent tokens and their lifetime (ADR 0025); `devices` the device authorizations
//! with their user codes. The port's methods for those two delegate to them.

mod agent_tokens;
mod devices;

use super::{
    AuthStore, AuthStoreError, EnrollmentTokenRow, HashPriority, TokenKeys, hash_password,
    hash_password_in, new_opaque_token, token_digest, verify_password, verify_password_in,
};
pub use agent_tokens::AgentTokenLifetime;
use async_trait::async_trait;
use devices::{enrollment_info, normalize_user_code};
use edict_application::auth::{
    AccessGrant, AgentTokenCheck, AgentTokenInfo, AgentTokenRenewal, AuthError, Authenticator,
    DeviceGrant, DevicePoll, DeviceRequest, ENROLLMENT_TOKEN_PREFIX, EnrollmentTokenInfo,
    IssuedAgentToken, Tokens,
};
use edict_domain::{AgentId, UserId};
use uuid::Uuid;

/// Prefix of refresh tokens.
const REFRESH_PREFIX: &str = "edr_";
pub use edict_application::auth::AGENT_TOKEN_PREFIX;

/// Authentication against Edict's own tables.
#[derive(Debug, Clone)]
pub struct LocalAuthenticator {
    store: AuthStore,
    keys: TokenKeys,
    access_ttl_secs: u64,
    refresh_ttl_secs: u64,
    agent_tokens: AgentTokenLifetime,
}

impl From<AuthStoreError> for AuthError {
    fn from(error: AuthStoreError) -> Self {
        match error {
            AuthStoreError::EmailTaken => AuthError::EmailTaken,
            AuthStoreError::Database(e) => AuthError::Backend(e.to_string()),
        }
    }
}

fn backend(error: impl std::fmt::Display) -> AuthError {
    AuthError::Backend(error.to_string())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn parse_user(id: &str) -> Result<UserId, AuthError> {
    id.parse()
        .map_err(|_| AuthError::Backend(format!("stored user id {id:?} is not a uuid")))
}

fn parse_agent(id: &str) -> Result<AgentId, AuthError> {
    id.parse()
        .map_err(|_| AuthError::Backend(format!("stored agent id {id:?} is not a uuid")))
}

impl LocalAuthenticator {
    /// An authenticator over `store`, signing with `keys`.
    pub fn new(
        store: AuthStore,
        keys: TokenKeys,
        access_ttl_secs: u64,
        refresh_ttl_secs: u64,
    ) -> Self {
        Self {
            store,
            keys,
            access_ttl_secs,
            refresh_ttl_secs,
            agent_tokens: AgentTokenLifetime::default(),
        }
    }

    /// The same, with agent tokens living `lifetime`.
    #[must_use]
    pub fn with_agent_tokens(mut self, lifetime: AgentTokenLifetime) -> Self {
        self.agent_tokens = lifetime;
        self
    }

    /// Tokens for `session`, whose access token lives [`Self::access_ttl_secs`] but never past the
    /// session's end (`session_expires_at`).
    fn issue(
        &self,
        user: &str,
        session: &str,
        session_expires_at: i64,
        refresh_token: String,
    ) -> Result<Tokens, AuthError> {
        let now = now();
        let issued_at = u64::try_from(now).unwrap_or_default();
        let left = u64::try_from(session_expires_at.saturating_sub(now)).unwrap_or_default();
        let ttl = self.access_ttl_secs.min(left);
        let access_token = self
            .keys
            .issue(user, session, issued_at, ttl)
            .map_err(backend)?;
        Ok(Tokens {
            access_token,
            refresh_token,
            expires_in: ttl,
        })
    }
}

#[async_trait]
impl Authenticator for LocalAuthenticator {
    async fn has_users(&self) -> Result<bool, AuthError> {
        Ok(self.store.has_credentials().await?)
    }

    async fn register(&self, user: UserId, email: &str, password: &str) -> Result<(), AuthError> {
        let hash = hash_password(password.to_owned()).await.map_err(backend)?;
        Ok(self
            .store
            .put_credentials(&user.to_string(), email, &hash, now())
            .await?)
    }

    async fn owner_of(&self, email: &str) -> Result<Option<UserId>, AuthError> {
        match self.store.owner_of(email).await? {
            Some(user) => Ok(Some(parse_user(&user)?)),
            None => Ok(None),
        }
    }

    async fn unregister(&self, user: UserId) -> Result<(), AuthError> {
        Ok(self.store.delete_credentials(&user.to_string()).await?)
    }

    async fn check_password(
        &self,
        email: &str,
        password: &str,
        priority: HashPriority,
    ) -> Result<Option<UserId>, AuthError> {
        let Some((user, hash)) = self.store.credentials_by_email(email).await? else {
            // Hash anyway so a missing account takes as long as a wrong password.
            let _ = hash_password_in(priority, password.to_owned()).await;
            return Ok(None);
        };
        if verify_password_in(priority, password.to_owned(), hash)
            .await
            .map_err(backend)?
        {
            Ok(Some(parse_user(&user)?))
        } else {
            Ok(None)
        }
    }

    async fn check_user_password(&self, user: UserId, password: &str) -> Result<bool, AuthError> {
        match self.store.password_hash(&user.to_string()).await? {
            Some(hash) => verify_password(password.to_owned(), hash)
                .await
                .map_err(backend),
            None => Ok(false),
        }
    }

    async fn set_password(&self, user: UserId, password: &str) -> Result<(), AuthError> {
        let hash = hash_password(password.to_owned()).await.map_err(backend)?;
        Ok(self
            .store
            .set_password(&user.to_string(), &hash, now())
            .await?)
    }

    async fn open_session(&self, user: UserId) -> Result<Tokens, AuthError> {
        let session = Uuid::now_v7().to_string();
        let refresh = new_opaque_token(REFRESH_PREFIX);
        let expires_at = now() + i64::try_from(self.refresh_ttl_secs).unwrap_or(i64::MAX / 2);
        self.store
            .open_session(
                &session,
                &user.to_string(),
                &token_digest(&refresh),
                now(),
                expires_at,
            )
            .await?;
        self.issue(&user.to_string(), &session, expires_at, refresh)
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Option<(UserId, Tokens)>, AuthError> {
        let fresh = new_opaque_token(REFRESH_PREFIX);
        let presented = token_digest(refresh_token);
        let Some(session) = self
            .store
            .rotate_refresh(&presented, &token_digest(&fresh), now())
            .await?
        else {
            // A refresh token that was already exchanged: whoever presents it holds a copy (stolen,
            // or the legitimate client after a thief), so the session ends for both (RFC 9700 §4.14).
            if let Some(session) = self.store.revoke_rotated(&presented, now()).await? {
                tracing::warn!(
                    session,
                    "a rotated refresh token was presented again: the session is revoked"
                );
            }
            return Ok(None);
        };
        let tokens = self.issue(&session.user_id, &session.id, session.expires_at, fresh)?;
        Ok(Some((parse_user(&session.user_id)?, tokens)))
    }

    async fn verify_access(&self, access_token: &str) -> Result<Option<AccessGrant>, AuthError> {
        let Ok(claims) = self.keys.verify(access_token) else {
            return Ok(None);
        };
        let Some(session) = self.store.session(&claims.sid).await? else {
            return Ok(None);
        };
        // The session's end binds its access tokens too (signed out, revoked, or simply over).
        if session.revoked_at.is_some()
            || session.expires_at <= now()
            || session.user_id != claims.sub
        {
            return Ok(None);
        }
        Ok(Some(AccessGrant {
            user: parse_user(&claims.sub)?,
            session: claims.sid,
        }))
    }

    async fn close_session(&self, session: &str) -> Result<(), AuthError> {
        Ok(self.store.revoke_session(session, now()).await?)
    }

    async fn close_user_sessions(&self, user: UserId, keep: Option<&str>) -> Result<(), AuthError> {
        Ok(self
            .store
            .revoke_user_sessions(&user.to_string(), keep, now())
            .await?)
    }

    async fn issue_agent_token(
        &self,
        agent: AgentId,
        user: UserId,
    ) -> Result<IssuedAgentToken, AuthError> {
        self.store_new_agent_token(agent, user).await
    }

    async fn verify_agent_token(&self, token: &str) -> Result<AgentTokenCheck, AuthError> {
        self.check_agent_token(token).await
    }

    async fn renew_agent_token(&self, token: &str) -> Result<Option<AgentTokenRenewal>, AuthError> {
        self.replace_agent_token(token).await
    }

    async fn revoke_agent_tokens(&self, agent: AgentId) -> Result<(), AuthError> {
        Ok(self
            .store
            .revoke_agent_tokens(&agent.to_string(), now())
            .await?)
    }

    async fn revoke_user_agent_tokens(&self, user: UserId) -> Result<(), AuthError> {
        Ok(self
            .store
            .revoke_user_agent_tokens(&user.to_string(), now())
            .await?)
    }

    async fn agent_tokens_of(
        &self,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<AgentTokenInfo>, AuthError> {
        self.list_agent_tokens(user, limit).await
    }

    async fn create_enrollment_token(
        &self,
        user: UserId,
        created_by: UserId,
        note: &str,
        uses: u32,
        expires_at: i64,
    ) -> Result<(EnrollmentTokenInfo, String), AuthError> {
        let token = new_opaque_token(ENROLLMENT_TOKEN_PREFIX);
        let row = EnrollmentTokenRow {
            id: Uuid::new_v4().to_string(),
            user_id: user.to_string(),
            created_by: created_by.to_string(),
            note: note.to_owned(),
            uses_total: i64::from(uses),
            uses_left: i64::from(uses),
            created_at: now(),
            expires_at,
            revoked_at: None,
        };
        self.store
            .put_enrollment_token(&row, &token_digest(&token))
            .await?;
        Ok((enrollment_info(row)?, token))
    }

    async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenInfo>, AuthError> {
        self.store
            .enrollment_tokens()
            .await?
            .into_iter()
            .map(enrollment_info)
            .collect()
    }

    async fn revoke_enrollment_token(&self, id: &str) -> Result<bool, AuthError> {
        Ok(self.store.revoke_enrollment_token(id, now()).await?)
    }

    async fn use_enrollment_token(
        &self,
        token: &str,
    ) -> Result<Option<(String, UserId)>, AuthError> {
        if !token.starts_with(ENROLLMENT_TOKEN_PREFIX) {
            return Ok(None);
        }
        self.store
            .use_enrollment_token(&token_digest(token), now())
            .await?
            .map(|(id, user)| Ok((id, parse_user(&user)?)))
            .transpose()
    }

    async fn start_device_authorization(
        &self,
        machine_id: &str,
        machine_name: &str,
        ttl_secs: i64,
    ) -> Result<DeviceGrant, AuthError> {
        self.store_new_device_authorization(machine_id, machine_name, ttl_secs)
            .await
    }

    async fn device_request(&self, user_code: &str) -> Result<Option<DeviceRequest>, AuthError> {
        self.find_device_request(user_code).await
    }

    async fn decide_device_request(
        &self,
        user_code: &str,
        by: UserId,
        approve: bool,
    ) -> Result<bool, AuthError> {
        let to = if approve { "approving" } else { "denied" };
        Ok(self
            .store
            .move_device_authorization(
                &normalize_user_code(user_code),
                "pending",
                to,
                Some(&by.to_string()),
                None,
                now(),
            )
            .await?)
    }

    async fn complete_device_approval(
        &self,
        user_code: &str,
        agent: AgentId,
        user: UserId,
    ) -> Result<(), AuthError> {
        // No expiry here: the approval was decided in time; the agent may collect it until then.
        self.store
            .move_device_authorization(
                &normalize_user_code(user_code),
                "approving",
                "approved",
                None,
                Some((&agent.to_string(), &user.to_string())),
                i64::MIN,
            )
            .await?;
        Ok(())
    }

    async fn poll_device_authorization(
        &self,
        device_code: &str,
        min_interval_secs: i64,
    ) -> Result<DevicePoll, AuthError> {
        self.answer_device_poll(device_code, min_interval_secs)
            .await
    }
}
