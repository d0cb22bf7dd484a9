//! [`LocalAuthenticator`]: the [`Authenticator`] port over the auth tables, argon2 and HS256 JWTs.

use super::{
    AuthStore, AuthStoreError, TokenKeys, hash_password, new_opaque_token, token_digest,
    verify_password,
};
use async_trait::async_trait;
use edict_application::auth::{AccessGrant, AuthError, Authenticator, Tokens};
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
        }
    }

    fn issue(&self, user: &str, session: &str, refresh_token: String) -> Result<Tokens, AuthError> {
        let issued_at = u64::try_from(now()).unwrap_or_default();
        let access_token = self
            .keys
            .issue(user, session, issued_at, self.access_ttl_secs)
            .map_err(backend)?;
        Ok(Tokens {
            access_token,
            refresh_token,
            expires_in: self.access_ttl_secs,
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
    ) -> Result<Option<UserId>, AuthError> {
        let Some((user, hash)) = self.store.credentials_by_email(email).await? else {
            // Hash anyway so a missing account takes as long as a wrong password.
            let _ = hash_password(password.to_owned()).await;
            return Ok(None);
        };
        if verify_password(password.to_owned(), hash)
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
        self.issue(&user.to_string(), &session, refresh)
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Option<(UserId, Tokens)>, AuthError> {
        let fresh = new_opaque_token(REFRESH_PREFIX);
        let Some(session) = self
            .store
            .rotate_refresh(&token_digest(refresh_token), &token_digest(&fresh), now())
            .await?
        else {
            return Ok(None);
        };
        let tokens = self.issue(&session.user_id, &session.id, fresh)?;
        Ok(Some((parse_user(&session.user_id)?, tokens)))
    }

    async fn verify_access(&self, access_token: &str) -> Result<Option<AccessGrant>, AuthError> {
        let Ok(claims) = self.keys.verify(access_token) else {
            return Ok(None);
        };
        let Some(session) = self.store.session(&claims.sid).await? else {
            return Ok(None);
        };
        if session.revoked_at.is_some() || session.user_id != claims.sub {
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

    async fn issue_agent_token(&self, agent: AgentId, user: UserId) -> Result<String, AuthError> {
        let token = new_opaque_token(AGENT_TOKEN_PREFIX);
        self.store
            .put_agent_token(
                &token_digest(&token),
                &agent.to_string(),
                &user.to_string(),
                now(),
            )
            .await?;
        Ok(token)
    }

    async fn verify_agent_token(
        &self,
        token: &str,
    ) -> Result<Option<(AgentId, UserId)>, AuthError> {
        let Some(record) = self.store.agent_token(&token_digest(token)).await? else {
            return Ok(None);
        };
        if record.revoked_at.is_some() {
            return Ok(None);
        }
        let agent = record.agent_id.parse().map_err(|_| {
            backend(format!(
                "stored agent id {:?} is not a uuid",
                record.agent_id
            ))
        })?;
        Ok(Some((agent, parse_user(&record.user_id)?)))
    }

    async fn revoke_agent_tokens(&self, agent: AgentId) -> Result<(), AuthError> {
        Ok(self
            .store
            .revoke_agent_tokens(&agent.to_string(), now())
            .await?)
    }
}
