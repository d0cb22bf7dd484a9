//! [`LocalAuthenticator`]: the [`Authenticator`] port over the auth tables, argon2 and HS256 JWTs.

use super::{AgentTokenRecord, DeviceRow, EnrollmentTokenRow, NewAgentToken};
use super::{
    AuthStore, AuthStoreError, HashPriority, TokenKeys, hash_password, hash_password_in,
    new_opaque_token, token_digest, verify_password, verify_password_in,
};
use async_trait::async_trait;
use edict_application::auth::{
    AccessGrant, AgentTokenCheck, AgentTokenInfo, AgentTokenRenewal, AgentTokenState, AuthError,
    Authenticator, DeviceGrant, DevicePoll, DeviceRequest, DeviceStatus, ENROLLMENT_TOKEN_PREFIX,
    EnrollmentTokenInfo, IssuedAgentToken, Tokens,
};
use edict_domain::{AgentId, UserId};
use rand::Rng;
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

/// How long agent tokens live (ADR 0025).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTokenLifetime {
    /// The lifetime of a new token, seconds (`EDICT_AGENT_TOKEN_TTL_SECS`, default 90 days).
    pub ttl_secs: i64,
    /// How long a renewed token keeps working after its renewal, seconds
    /// (`EDICT_AGENT_TOKEN_RENEWAL_GRACE_SECS`, default 10 minutes).
    pub grace_secs: i64,
}

impl Default for AgentTokenLifetime {
    fn default() -> Self {
        Self {
            ttl_secs: 90 * 24 * 3600,
            grace_secs: 600,
        }
    }
}

impl AgentTokenLifetime {
    /// When `record` stops working: its stored expiry, or (a row written by an older server) its
    /// creation plus the lifetime.
    fn expires_at(&self, record: &AgentTokenRecord) -> i64 {
        record
            .expires_at
            .unwrap_or_else(|| record.created_at.saturating_add(self.ttl_secs))
    }

    /// Where `record` stands at `now`.
    fn state(&self, record: &AgentTokenRecord, now: i64) -> AgentTokenState {
        if record.revoked_at.is_some() {
            AgentTokenState::Revoked
        } else if self.expires_at(record) <= now {
            AgentTokenState::Expired
        } else if record.replaced_at.is_some() {
            AgentTokenState::Renewed
        } else {
            AgentTokenState::Active
        }
    }
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

/// The letters of user codes: no vowels (no words), no look-alikes (0/O, 1/I).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A fresh user code, `XXXX-XXXX` (20^8 ≈ 2.6 × 10^10 codes).
fn new_user_code() -> String {
    let mut rng = rand::thread_rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(
            USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())],
        ));
    }
    code
}

/// A user code as typed (any case, with or without its dash, spaces) in its stored form.
fn normalize_user_code(typed: &str) -> String {
    let letters: String = typed
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() == 8 {
        format!("{}-{}", &letters[..4], &letters[4..])
    } else {
        letters
    }
}

fn device_status(row: &DeviceRow, now: i64) -> DeviceStatus {
    match row.status.as_str() {
        "completed" => DeviceStatus::Completed,
        "denied" => DeviceStatus::Denied,
        _ if row.expires_at <= now => DeviceStatus::Expired,
        "approved" => DeviceStatus::Approved,
        _ => DeviceStatus::Pending,
    }
}

fn enrollment_info(row: EnrollmentTokenRow) -> Result<EnrollmentTokenInfo, AuthError> {
    Ok(EnrollmentTokenInfo {
        user: parse_user(&row.user_id)?,
        created_by: parse_user(&row.created_by)?,
        id: row.id,
        note: row.note,
        uses_total: u32::try_from(row.uses_total).unwrap_or_default(),
        uses_left: u32::try_from(row.uses_left).unwrap_or_default(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked: row.revoked_at.is_some(),
    })
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

    /// A new agent token row's secret and lifetime.
    fn new_agent_token(&self) -> (IssuedAgentToken, String) {
        let token = new_opaque_token(AGENT_TOKEN_PREFIX);
        let issued_at = now();
        let issued = IssuedAgentToken {
            token,
            issued_at,
            expires_at: issued_at.saturating_add(self.agent_tokens.ttl_secs.max(1)),
        };
        (issued, Uuid::now_v7().to_string())
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
        let (issued, id) = self.new_agent_token();
        self.store
            .put_agent_token(NewAgentToken {
                id: &id,
                digest: &token_digest(&issued.token),
                agent_id: &agent.to_string(),
                user_id: &user.to_string(),
                now: issued.issued_at,
                expires_at: issued.expires_at,
            })
            .await?;
        Ok(issued)
    }

    async fn verify_agent_token(&self, token: &str) -> Result<AgentTokenCheck, AuthError> {
        let Some(record) = self.store.agent_token(&token_digest(token)).await? else {
            return Ok(AgentTokenCheck::Refused);
        };
        match self.agent_tokens.state(&record, now()) {
            AgentTokenState::Revoked => return Ok(AgentTokenCheck::Refused),
            AgentTokenState::Expired => return Ok(AgentTokenCheck::Expired),
            AgentTokenState::Active | AgentTokenState::Renewed => {}
        }
        Ok(AgentTokenCheck::Valid {
            agent: parse_agent(&record.agent_id)?,
            user: parse_user(&record.user_id)?,
            expires_at: self.agent_tokens.expires_at(&record),
        })
    }

    async fn renew_agent_token(&self, token: &str) -> Result<Option<AgentTokenRenewal>, AuthError> {
        let digest = token_digest(token);
        let Some(record) = self.store.agent_token(&digest).await? else {
            return Ok(None);
        };
        if !matches!(
            self.agent_tokens.state(&record, now()),
            AgentTokenState::Active | AgentTokenState::Renewed
        ) {
            return Ok(None);
        }
        let (issued, id) = self.new_agent_token();
        let grace_until = issued
            .issued_at
            .saturating_add(self.agent_tokens.grace_secs.max(0));
        self.store
            .renew_agent_token(
                &digest,
                NewAgentToken {
                    id: &id,
                    digest: &token_digest(&issued.token),
                    agent_id: &record.agent_id,
                    user_id: &record.user_id,
                    now: issued.issued_at,
                    expires_at: issued.expires_at,
                },
                grace_until,
            )
            .await?;
        Ok(Some(AgentTokenRenewal {
            previous_expires_at: self.agent_tokens.expires_at(&record).min(grace_until),
            issued,
        }))
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
        let now = now();
        self.store
            .agent_tokens_of(&user.to_string(), i64::from(limit))
            .await?
            .into_iter()
            .map(|record| {
                Ok(AgentTokenInfo {
                    state: self.agent_tokens.state(&record, now),
                    expires_at: self.agent_tokens.expires_at(&record),
                    id: record.id.unwrap_or_default(),
                    agent: parse_agent(&record.agent_id)?,
                    user: parse_user(&record.user_id)?,
                    issued_at: record.created_at,
                    from_renewal: record.renewed_from.is_some(),
                    renewed_at: record.replaced_at,
                    revoked_at: record.revoked_at,
                })
            })
            .collect()
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
        let device_code = new_opaque_token("edd_");
        let created_at = now();
        // A user code is unique among stored authorizations; draw again on the rare collision.
        for _ in 0..5 {
            let row = DeviceRow {
                user_code: new_user_code(),
                machine_id: machine_id.to_owned(),
                machine_name: machine_name.to_owned(),
                status: "pending".into(),
                created_at,
                expires_at: created_at + ttl_secs,
                last_poll_at: 0,
                agent_id: None,
                user_id: None,
            };
            match self
                .store
                .put_device_authorization(&token_digest(&device_code), &row)
                .await
            {
                Ok(()) => {
                    return Ok(DeviceGrant {
                        device_code,
                        user_code: row.user_code,
                        expires_at: row.expires_at,
                    });
                }
                Err(AuthStoreError::Database(e))
                    if e.as_database_error()
                        .is_some_and(|d| d.is_unique_violation()) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(backend("no free user code after 5 draws"))
    }

    async fn device_request(&self, user_code: &str) -> Result<Option<DeviceRequest>, AuthError> {
        let now = now();
        Ok(self
            .store
            .device_by_user_code(&normalize_user_code(user_code))
            .await?
            .map(|row| DeviceRequest {
                status: device_status(&row, now),
                user_code: row.user_code,
                machine_id: row.machine_id,
                machine_name: row.machine_name,
                created_at: row.created_at,
                expires_at: row.expires_at,
            }))
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
        let now = now();
        let digest = token_digest(device_code);
        let Some(row) = self.store.poll_device(&digest, now).await? else {
            return Ok(DevicePoll::Unknown);
        };
        match row.status.as_str() {
            "denied" => return Ok(DevicePoll::Denied),
            "completed" => return Ok(DevicePoll::Expired),
            "approved" => {
                if !self.store.collect_device_token(&digest).await? {
                    return Ok(DevicePoll::Expired);
                }
                let (Some(agent), Some(user)) = (row.agent_id, row.user_id) else {
                    return Err(backend("an approved device authorization has no agent"));
                };
                let agent = agent
                    .parse()
                    .map_err(|_| backend(format!("stored agent id {agent:?} is not a uuid")))?;
                return Ok(DevicePoll::Approved {
                    agent,
                    user: parse_user(&user)?,
                });
            }
            _ => {}
        }
        if row.expires_at <= now {
            return Ok(DevicePoll::Expired);
        }
        if now - row.last_poll_at < min_interval_secs {
            return Ok(DevicePoll::SlowDown);
        }
        Ok(DevicePoll::Pending)
    }
}

#[cfg(test)]
mod user_code_tests {
    use super::{USER_CODE_ALPHABET, new_user_code, normalize_user_code};

    #[test]
    fn user_codes_use_the_unambiguous_alphabet_in_two_groups() {
        for _ in 0..100 {
            let code = new_user_code();
            assert_eq!(code.len(), 9);
            assert_eq!(&code[4..5], "-");
            assert!(
                code.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| USER_CODE_ALPHABET.contains(&b))
            );
        }
    }

    #[test]
    fn typed_codes_are_normalized_whatever_their_case_and_dashes() {
        assert_eq!(normalize_user_code("bcdf-ghjk"), "BCDF-GHJK");
        assert_eq!(normalize_user_code(" BCDFGHJK "), "BCDF-GHJK");
        assert_eq!(normalize_user_code("bc df gh jk"), "BCDF-GHJK");
        assert_eq!(normalize_user_code("short"), "SHORT");
    }
}

#[cfg(test)]
mod agent_token_tests {
    use super::{AgentTokenLifetime, AgentTokenRecord};
    use edict_application::auth::AgentTokenState;

    fn record(expires_at: Option<i64>) -> AgentTokenRecord {
        AgentTokenRecord {
            id: Some("t".into()),
            agent_id: "a".into(),
            user_id: "u".into(),
            created_at: 1_000,
            expires_at,
            renewed_from: None,
            replaced_at: None,
            revoked_at: None,
        }
    }

    const LIFETIME: AgentTokenLifetime = AgentTokenLifetime {
        ttl_secs: 100,
        grace_secs: 10,
    };

    #[test]
    fn a_token_works_until_its_expiry_and_not_at_it() {
        let token = record(Some(2_000));
        assert_eq!(LIFETIME.state(&token, 1_999), AgentTokenState::Active);
        assert_eq!(LIFETIME.state(&token, 2_000), AgentTokenState::Expired);
    }

    #[test]
    fn a_row_without_expiry_lives_the_lifetime_from_its_creation() {
        let token = record(None);
        assert_eq!(LIFETIME.expires_at(&token), 1_100);
        assert_eq!(LIFETIME.state(&token, 1_099), AgentTokenState::Active);
        assert_eq!(LIFETIME.state(&token, 1_100), AgentTokenState::Expired);
    }

    #[test]
    fn a_renewed_token_is_renewed_until_its_grace_ends_and_revocation_wins_over_all() {
        let mut token = record(Some(1_510));
        token.replaced_at = Some(1_500);
        assert_eq!(LIFETIME.state(&token, 1_505), AgentTokenState::Renewed);
        assert_eq!(LIFETIME.state(&token, 1_510), AgentTokenState::Expired);
        token.revoked_at = Some(1_501);
        assert_eq!(LIFETIME.state(&token, 1_505), AgentTokenState::Revoked);
    }
}
