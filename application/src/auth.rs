//! The authentication port: credentials, sessions and tokens, as the use cases need them.
//!
//! The adapter (`edict_infrastructure::auth`) hashes passwords with argon2, signs access tokens and keeps
//! sessions in the database; the use cases only ask questions of it.

use async_trait::async_trait;
use edict_domain::{AgentId, UserId};
use serde::Serialize;

/// Agent tokens carry this prefix; any other bearer token is an access token.
pub const AGENT_TOKEN_PREFIX: &str = "eda_";
/// Enrollment tokens (for unattended installs) carry this prefix.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "ede_";

/// An enrollment token as listed; its secret is shown once, when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenInfo {
    /// Its id.
    pub id: String,
    /// The user the machines it enrolls belong to.
    pub user: UserId,
    /// The org_admin who created it.
    pub created_by: UserId,
    /// What it is for.
    pub note: String,
    /// How many machines it may enroll in all.
    pub uses_total: u32,
    /// How many more.
    pub uses_left: u32,
    /// When it was created (seconds since the epoch).
    pub created_at: i64,
    /// When it stops working (seconds since the epoch).
    pub expires_at: i64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A new device authorization: the agent keeps `device_code` secret and polls with it; the person shows
/// `user_code` to a signed-in user, who approves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGrant {
    /// The secret the agent polls with.
    pub device_code: String,
    /// The short code a person types (`XXXX-XXXX`).
    pub user_code: String,
    /// When both stop working (seconds since the epoch).
    pub expires_at: i64,
}

/// Where a device authorization stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Waiting for a signed-in user.
    Pending,
    /// Approved: the agent is enrolled; its token waits for the agent's next poll.
    Approved,
    /// Denied by the user.
    Denied,
    /// Approved, and the agent collected its token.
    Completed,
    /// Nobody decided in time.
    Expired,
}

/// A device authorization as the approving user sees it (the consent step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// The short code.
    pub user_code: String,
    /// The machine's id, as the agent stated it.
    pub machine_id: String,
    /// The machine's name, as the agent stated it.
    pub machine_name: String,
    /// Where it stands.
    pub status: DeviceStatus,
    /// When the agent asked (seconds since the epoch).
    pub created_at: i64,
    /// When it stops working (seconds since the epoch).
    pub expires_at: i64,
}

/// What an agent's poll with its device code learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// Nobody decided yet.
    Pending,
    /// The agent polls faster than it was told to.
    SlowDown,
    /// The user denied it.
    Denied,
    /// It expired (or its token was already collected).
    Expired,
    /// No such device code.
    Unknown,
    /// Approved: the agent and its user (the token is issued now, once).
    Approved {
        /// The enrolled agent.
        agent: AgentId,
        /// Its user (the approver).
        user: UserId,
    },
}

/// Which queue a sign-in's password hash waits in: the client of a sign-in that failed lately is
/// `Suspect`, and its hashes run one at a time, behind each other rather than in front of everyone's;
/// a client that signed in to the same account before is `Known`, and its hashes have a lane no
/// stranger's sign-in can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashPriority {
    /// A client with no recent failure.
    #[default]
    Normal,
    /// A client with no recent failure that signed in to this account from this address lately.
    Known,
    /// A client whose sign-in failed within the rate-limit window.
    Suspect,
}

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

/// An agent token as issued: its secret (shown once, stored only as a digest) and its lifetime.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedAgentToken {
    /// The secret (`eda_…`).
    pub token: String,
    /// When it was issued (seconds since the epoch).
    pub issued_at: i64,
    /// When it stops working (seconds since the epoch).
    pub expires_at: i64,
}

impl std::fmt::Debug for IssuedAgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAgentToken")
            .field("token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A renewal: the new token, and until when the one that asked keeps working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTokenRenewal {
    /// The new token.
    pub issued: IssuedAgentToken,
    /// The end of the renewed token's grace (seconds since the epoch).
    pub previous_expires_at: i64,
}

/// What a presented agent token is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTokenCheck {
    /// It stands for `agent` of `user` until `expires_at` (seconds since the epoch; for a renewed
    /// token, the end of its renewal grace).
    Valid {
        /// The agent.
        agent: AgentId,
        /// Its user.
        user: UserId,
        /// When it stops working.
        expires_at: i64,
    },
    /// It was valid, and its lifetime (or its renewal grace) is over.
    Expired,
    /// Unknown or revoked.
    Refused,
}

impl AgentTokenCheck {
    /// The agent and user of a valid token.
    pub fn valid(self) -> Option<(AgentId, UserId)> {
        match self {
            AgentTokenCheck::Valid { agent, user, .. } => Some((agent, user)),
            _ => None,
        }
    }
}

/// Where an agent token stands, as its owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentTokenState {
    /// It works.
    Active,
    /// It was renewed: it works until its grace ends (`expires_at`).
    Renewed,
    /// Its lifetime is over.
    Expired,
    /// It was revoked (the agent was revoked, its owner's password changed, or its owner was
    /// deactivated).
    Revoked,
}

/// An agent token as listed to its owner: never its secret or its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTokenInfo {
    /// Its public handle.
    pub id: String,
    /// The agent it stands for.
    pub agent: AgentId,
    /// The agent's user.
    pub user: UserId,
    /// When it was issued (seconds since the epoch).
    pub issued_at: i64,
    /// When it stops (or stopped) working.
    pub expires_at: i64,
    /// Whether it was issued by a renewal (else at enrollment).
    pub from_renewal: bool,
    /// When it was renewed, if it was.
    pub renewed_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Where it stands now.
    pub state: AgentTokenState,
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

    /// The user whose credentials match, if any; the hash waits in the lane of `priority`.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn check_password(
        &self,
        email: &str,
        password: &str,
        priority: HashPriority,
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

    /// Issues a new token for an enrolled agent, valid for the configured lifetime; shown once,
    /// stored only as a digest.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn issue_agent_token(
        &self,
        agent: AgentId,
        user: UserId,
    ) -> Result<IssuedAgentToken, AuthError>;

    /// What an agent token stands for now: valid (unrevoked, unexpired), expired, or refused.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn verify_agent_token(&self, token: &str) -> Result<AgentTokenCheck, AuthError>;

    /// Renews a valid agent token: a new token for the same agent, valid for the configured
    /// lifetime; the presented one keeps working only for the renewal grace. A token renewed twice
    /// (its first answer was lost) revokes the token of the first renewal, so one renewal is live at
    /// a time. `None` when the presented token is not valid.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn renew_agent_token(&self, token: &str) -> Result<Option<AgentTokenRenewal>, AuthError>;

    /// Revokes every token of `agent`.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn revoke_agent_tokens(&self, agent: AgentId) -> Result<(), AuthError>;

    /// Revokes every agent token of `user`'s agents (a password change, a deactivation).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn revoke_user_agent_tokens(&self, user: UserId) -> Result<(), AuthError>;

    /// The agent tokens of `user`'s agents, newest first (at most `limit`).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn agent_tokens_of(
        &self,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<AgentTokenInfo>, AuthError>;

    /// Creates an enrollment token for `user`, good for `uses` machines until `expires_at`; answers it
    /// with its secret (shown once, stored only as a digest).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn create_enrollment_token(
        &self,
        user: UserId,
        created_by: UserId,
        note: &str,
        uses: u32,
        expires_at: i64,
    ) -> Result<(EnrollmentTokenInfo, String), AuthError>;

    /// Every enrollment token, newest first.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenInfo>, AuthError>;

    /// Revokes an enrollment token; false when there is no such token.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn revoke_enrollment_token(&self, id: &str) -> Result<bool, AuthError>;

    /// Uses one enrollment of `token` (atomically): the token's id and the user the machine belongs
    /// to, or None when the token is unknown, revoked, expired or used up.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn use_enrollment_token(
        &self,
        token: &str,
    ) -> Result<Option<(String, UserId)>, AuthError>;

    /// Starts a device authorization for a machine, valid for `ttl_secs`.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn start_device_authorization(
        &self,
        machine_id: &str,
        machine_name: &str,
        ttl_secs: i64,
    ) -> Result<DeviceGrant, AuthError>;

    /// The device authorization behind a user code (any case, dash optional).
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn device_request(&self, user_code: &str) -> Result<Option<DeviceRequest>, AuthError>;

    /// Decides a pending, unexpired device authorization: true when this call decided it. An approval
    /// is completed by [`Authenticator::complete_device_approval`] once the agent is enrolled.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn decide_device_request(
        &self,
        user_code: &str,
        by: UserId,
        approve: bool,
    ) -> Result<bool, AuthError>;

    /// Records the agent an approval enrolled, so the agent's next poll collects its token.
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn complete_device_approval(
        &self,
        user_code: &str,
        agent: AgentId,
        user: UserId,
    ) -> Result<(), AuthError>;

    /// An agent's poll: where its authorization stands. An approved one answers
    /// [`DevicePoll::Approved`] once; later polls answer [`DevicePoll::Expired`].
    ///
    /// # Errors
    /// [`AuthError::Backend`].
    async fn poll_device_authorization(
        &self,
        device_code: &str,
        min_interval_secs: i64,
    ) -> Result<DevicePoll, AuthError>;
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

    /// Records that the request of a claimed key succeeded with a response that carried a secret
    /// (a token): the response itself is not kept, so a retry is told so instead of getting it.
    ///
    /// # Errors
    /// A message when the store fails.
    async fn complete_withheld(
        &self,
        principal: &str,
        key: &str,
        status: u16,
    ) -> Result<(), String>;

    /// Releases a claimed key whose request failed.
    ///
    /// # Errors
    /// A message when the store fails.
    async fn release(&self, principal: &str, key: &str) -> Result<(), String>;

    /// Deletes every expired key (and its remembered response); answers how many.
    ///
    /// # Errors
    /// A message when the store fails.
    async fn purge_expired(&self) -> Result<u64, String>;
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
    /// Answered before with a secret (a token), which was not kept: it cannot be replayed.
    Withheld {
        /// The first response's status.
        status: u16,
    },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}
