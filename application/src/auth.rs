//! The authentication port: credentials, sessions and tokens, as the use cases need them.
//!
//! The adapter (`edict_infrastructure::auth`) hashes passwords with argon2, signs access tokens and keeps
//! sessions in the database; the use cases only ask questions of it.

use async_trait::async_trait;
use edict_domain::{AgentId, UserId};
use serde::Serialize;

/// Agent tokens carry this prefix; any other bearer token is an access token.
pub const AGENT_TOKEN_PREFIX: &str = "eda_";

/// The tokens a login or refresh hands out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// A short-lived bearer token for the API.
    pub access_token: String,
    /// A long-lived token that renews the access token (`POST /api/v1/auth/refresh`); single use.
    pub refresh_token: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
}

/// A verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The signed-in user.
    pub user: UserId,
    /// The session the token belongs to.
    pub session: String,
}

/// Why the authentication port failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Another user already has this email.
    #[error("email is already taken")]
    EmailTaken,
    /// The backing store or hashing failed.
    #[error("authentication backend failure: {0}")]
    Backend(String),
}

/// Credentials, sessions and tokens.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// Whether any user has credentials (false on a brand-new deployment).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn has_users(&self) -> Result<bool, AuthError>;

    /// Registers `email` and `password` for `user`.
    ///
    /// # Errors
    /// [`AuthError::EmailTaken`] when the email belongs to another user.
    async fn register(&self, user: UserId, email: &str, password: &str) -> Result<(), AuthError>;

    /// The user whose credentials carry `email`, if any.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn owner_of(&self, email: &str) -> Result<Option<UserId>, AuthError>;

    /// Removes the credentials of `user` (a registration whose user could not be created).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn unregister(&self, user: UserId) -> Result<(), AuthError>;

    /// The user whose credentials match, if any.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn check_password(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<UserId>, AuthError>;

    /// Whether `password` is the current password of `user`.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn check_user_password(&self, user: UserId, password: &str) -> Result<bool, AuthError>;

    /// Replaces the password of `user`.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn set_password(&self, user: UserId, password: &str) -> Result<(), AuthError>;

    /// Opens a session for `user` and returns its tokens.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn open_session(&self, user: UserId) -> Result<Tokens, AuthError>;

    /// Renews a session from its refresh token (which stops working); `None` when it is unknown,
    /// revoked or expired.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn refresh(&self, refresh_token: &str) -> Result<Option<(UserId, Tokens)>, AuthError>;

    /// The grant of a valid access token whose session is still open; `None` otherwise.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn verify_access(&self, access_token: &str) -> Result<Option<AccessGrant>, AuthError>;

    /// Closes one session (logout).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn close_session(&self, session: &str) -> Result<(), AuthError>;

    /// Closes every session of `user` but `keep` (deactivation, a password change).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn close_user_sessions(&self, user: UserId, keep: Option<&str>) -> Result<(), AuthError>;

    /// Issues a new token for an enrolled agent; shown once, stored only as a digest.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn issue_agent_token(&self, agent: AgentId, user: UserId) -> Result<String, AuthError>;

    /// The agent (and its user) an unrevoked agent token stands for.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn verify_agent_token(&self, token: &str)
    -> Result<Option<(AgentId, UserId)>, AuthError>;

    /// Revokes every token of `agent`.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn revoke_agent_tokens(&self, agent: AgentId) -> Result<(), AuthError>;
}

/// The idempotency port: remembered responses for `Idempotency-Key` retries.
#[async_trait]
pub trait IdempotencyKeys: Send + Sync {
    /// Claims `key` for `principal` and a request hashing to `request_hash`.
    ///
    /// # Errors
    /// A message when the store fails.
    async fn claim(
        &self,
        principal: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<IdempotencyClaim, String>;

    /// Remembers the successful response to a claimed key.
    ///
    /// # Errors
    /// A message when the store fails.
    async fn complete(
        &self,
        principal: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), String>;

    /// Releases a claimed key whose request failed.
    ///
    /// # Errors
    /// A message when the store fails.
    async fn release(&self, principal: &str, key: &str) -> Result<(), String>;
}

/// What to do with a request that carries an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First time: run it.
    Fresh,
    /// Answered before: replay it.
    Replay {
        /// The first response's status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}
