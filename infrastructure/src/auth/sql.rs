//! The tables behind authentication: `credentials`, `sessions`, `agent_tokens` and `settings`.
//!
//! The SQL is written once in the dialect PostgreSQL and SQLite share (`$n` parameters, `TEXT` and
//! `BIGINT` columns, `ON CONFLICT`, `RETURNING`) and run on whichever pool the store holds.

use crate::store::Database;
use rand::RngCore;

/// Why an authentication table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuthStoreError {
    /// Another user already has this email.
    #[error("email is already taken")]
    EmailTaken,
    /// The database failed.
    #[error("auth store unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

/// An open or closed login session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// The session id (named by access tokens).
    pub id: String,
    /// The user it belongs to.
    pub user_id: String,
    /// When its refresh token stops working (seconds since the epoch).
    pub expires_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// What an agent token stands for.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentTokenRecord {
    /// Its public handle (listed to its owner).
    pub id: Option<String>,
    /// The enrolled agent.
    pub agent_id: String,
    /// The user the agent was enrolled for.
    pub user_id: String,
    /// When it was issued.
    pub created_at: i64,
    /// When it stops working (`None` for a row written by a server older than ADR 0025: its
    /// creation plus the configured lifetime).
    pub expires_at: Option<i64>,
    /// Whether it was issued by a renewal.
    pub renewed_from: Option<String>,
    /// When it was renewed, if it was.
    pub replaced_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// The columns of [`AgentTokenRecord`].
const AGENT_TOKEN_COLUMNS: &str =
    "id, agent_id, user_id, created_at, expires_at, renewed_from, replaced_at, revoked_at";

/// A new agent token row.
#[derive(Debug, Clone, Copy)]
pub struct NewAgentToken<'a> {
    /// Its public handle.
    pub id: &'a str,
    /// The digest of its secret.
    pub digest: &'a str,
    /// The agent.
    pub agent_id: &'a str,
    /// Its user.
    pub user_id: &'a str,
    /// When it is issued.
    pub now: i64,
    /// When it stops working.
    pub expires_at: i64,
}

/// Reads and writes the authentication tables.
#[derive(Debug, Clone)]
pub struct AuthStore {
    db: Database,
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

impl AuthStore {
    /// A store over `db` (migrated).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database the tables live in.
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// The secret that signs access tokens: generated and stored on first use, so every process of one
    /// deployment shares it and restarts keep sessions valid.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`] when the settings table cannot be read or written.
    pub async fn signing_secret(&self) -> Result<Vec<u8>, AuthStoreError> {
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        let fresh = hex::encode(fresh);
        on_pool!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('jwt_secret', $1) ON CONFLICT (key) DO NOTHING"
        )
        .bind(&fresh)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        let stored: String = on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT value FROM settings WHERE key = 'jwt_secret'"
        )
        .fetch_one(pool)
        .await)?;
        Ok(stored.into_bytes())
    }

    /// Whether any credentials exist (false on a brand-new deployment).
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn has_credentials(&self) -> Result<bool, AuthStoreError> {
        let count: i64 = on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM credentials"
        )
        .fetch_one(pool)
        .await)?;
        Ok(count > 0)
    }

    /// Reserves `email` for `user_id` with a password hash.
    ///
    /// # Errors
    /// [`AuthStoreError::EmailTaken`] when another user has the email.
    pub async fn put_credentials(
        &self,
        user_id: &str,
        email: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), AuthStoreError> {
        let result = on_pool!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO credentials (user_id, email, password_hash, updated_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(user_id)
        .bind(email)
        .bind(password_hash)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(AuthStoreError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the credentials of `user_id` (undoing a reservation whose user was not created).
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn delete_credentials(&self, user_id: &str) -> Result<(), AuthStoreError> {
        on_pool!(&self.db, |pool| sqlx::query(
            "DELETE FROM credentials WHERE user_id = $1"
        )
        .bind(user_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// The user id and password hash registered for `email`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn credentials_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(String, String)>, AuthStoreError> {
        Ok(on_pool!(&self.db, |pool| sqlx::query_as::<
            _,
            (String, String),
        >(
            "SELECT user_id, password_hash FROM credentials WHERE email = $1"
        )
        .bind(email)
        .fetch_optional(pool)
        .await)?)
    }

    /// The user id registered for `email`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn owner_of(&self, email: &str) -> Result<Option<String>, AuthStoreError> {
        Ok(on_pool!(&self.db, |pool| sqlx::query_scalar::<_, String>(
            "SELECT user_id FROM credentials WHERE email = $1"
        )
        .bind(email)
        .fetch_optional(pool)
        .await)?)
    }

    /// The password hash of `user_id`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn password_hash(&self, user_id: &str) -> Result<Option<String>, AuthStoreError> {
        Ok(on_pool!(&self.db, |pool| sqlx::query_scalar::<_, String>(
            "SELECT password_hash FROM credentials WHERE user_id = $1"
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// Replaces the password hash of `user_id`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), AuthStoreError> {
        on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE credentials SET password_hash = $2, updated_at = $3 WHERE user_id = $1"
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Opens a session whose refresh token has the digest `refresh_digest`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn open_session(
        &self,
        session_id: &str,
        user_id: &str,
        refresh_digest: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), AuthStoreError> {
        on_pool!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO sessions (id, user_id, refresh_digest, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(session_id)
        .bind(user_id)
        .bind(refresh_digest)
        .bind(now)
        .bind(expires_at)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The session `id`, open or not.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn session(&self, id: &str) -> Result<Option<Session>, AuthStoreError> {
        Ok(on_pool!(&self.db, |pool| sqlx::query_as::<_, Session>(
            "SELECT id, user_id, expires_at, revoked_at FROM sessions WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?)
    }

    /// Swaps the refresh token of an open, unexpired session: the old token stops working, and its
    /// digest is kept in `refresh_rotations` so that presenting it again is recognised
    /// ([`Self::revoke_rotated`]). Returns the session, or `None` when the old token is unknown,
    /// revoked or expired.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn rotate_refresh(
        &self,
        old_digest: &str,
        new_digest: &str,
        now: i64,
    ) -> Result<Option<Session>, AuthStoreError> {
        // Recorded first: a rotation that dies half-way leaves the token current, never forgotten.
        on_pool!(&self.db, |pool| sqlx::query(
            "INSERT INTO refresh_rotations (digest, session_id, rotated_at) \
             SELECT $1, id, $2 FROM sessions WHERE refresh_digest = $1 \
             ON CONFLICT (digest) DO NOTHING"
        )
        .bind(old_digest)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(on_pool!(&self.db, |pool| sqlx::query_as::<_, Session>(
            "UPDATE sessions SET refresh_digest = $2 \
             WHERE refresh_digest = $1 AND revoked_at IS NULL AND expires_at > $3 \
             RETURNING id, user_id, expires_at, revoked_at"
        )
        .bind(old_digest)
        .bind(new_digest)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    /// Revokes the session a rotated (already exchanged) refresh token belonged to; answers its id,
    /// or `None` when `digest` was never rotated.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn revoke_rotated(
        &self,
        digest: &str,
        now: i64,
    ) -> Result<Option<String>, AuthStoreError> {
        let session: Option<String> = on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT session_id FROM refresh_rotations WHERE digest = $1"
        )
        .bind(digest)
        .fetch_optional(pool)
        .await)?;
        if let Some(id) = &session {
            self.revoke_session(id, now).await?;
        }
        Ok(session)
    }

    /// Revokes one session.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn revoke_session(&self, id: &str, now: i64) -> Result<(), AuthStoreError> {
        on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Revokes every session of `user_id` except `keep` (deactivation, a password change).
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<(), AuthStoreError> {
        on_pool!(&self.db, |pool| {
            sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL AND id <> $3"
        )
        .bind(user_id)
        .bind(now)
        .bind(keep.unwrap_or(""))
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Stores an agent token's digest, issued at enrollment.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn put_agent_token(&self, new: NewAgentToken<'_>) -> Result<(), AuthStoreError> {
        on_pool!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO agent_tokens (token_digest, id, agent_id, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(new.digest)
            .bind(new.id)
            .bind(new.agent_id)
            .bind(new.user_id)
            .bind(new.now)
            .bind(new.expires_at)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Renews the token whose digest is `old_digest` into `new` (same agent and user), in one
    /// transaction: a token an earlier renewal of the old one issued is revoked (its answer was lost:
    /// one renewal is live at a time), the new row is stored, and the old token is marked renewed and
    /// cut to `grace_until` (never lengthened).
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn renew_agent_token(
        &self,
        old_digest: &str,
        new: NewAgentToken<'_>,
        grace_until: i64,
    ) -> Result<(), AuthStoreError> {
        on_pool!(&self.db, |pool| {
            async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE agent_tokens SET revoked_at = $2 WHERE renewed_from = $1 AND revoked_at IS NULL",
            )
            .bind(old_digest)
            .bind(new.now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO agent_tokens \
                 (token_digest, id, agent_id, user_id, created_at, expires_at, renewed_from) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(new.digest)
            .bind(new.id)
            .bind(new.agent_id)
            .bind(new.user_id)
            .bind(new.now)
            .bind(new.expires_at)
            .bind(old_digest)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE agent_tokens SET replaced_at = COALESCE(replaced_at, $2), \
                 expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END \
                 WHERE token_digest = $1",
            )
            .bind(old_digest)
            .bind(new.now)
            .bind(grace_until)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await
        })?;
        Ok(())
    }

    /// What the agent token with `digest` stands for.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn agent_token(
        &self,
        digest: &str,
    ) -> Result<Option<AgentTokenRecord>, AuthStoreError> {
        let sql = format!("SELECT {AGENT_TOKEN_COLUMNS} FROM agent_tokens WHERE token_digest = $1");
        Ok(on_pool!(&self.db, |pool| sqlx::query_as::<
            _,
            AgentTokenRecord,
        >(&sql)
        .bind(digest)
        .fetch_optional(pool)
        .await)?)
    }

    /// The agent tokens of `user_id`'s agents, newest first, at most `limit`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn agent_tokens_of(
        &self,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<AgentTokenRecord>, AuthStoreError> {
        let sql = format!(
            "SELECT {AGENT_TOKEN_COLUMNS} FROM agent_tokens WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        Ok(on_pool!(&self.db, |pool| sqlx::query_as::<
            _,
            AgentTokenRecord,
        >(&sql)
        .bind(user_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    /// Revokes every agent token of `user_id`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn revoke_user_agent_tokens(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<(), AuthStoreError> {
        self.revoke_tokens_of("user_id", user_id, now).await
    }

    /// Revokes every token of `agent_id`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn revoke_agent_tokens(
        &self,
        agent_id: &str,
        now: i64,
    ) -> Result<(), AuthStoreError> {
        self.revoke_tokens_of("agent_id", agent_id, now).await
    }

    /// Revokes every unrevoked agent token whose `column` (`user_id` or `agent_id`) is `id`.
    async fn revoke_tokens_of(
        &self,
        column: &'static str,
        id: &str,
        now: i64,
    ) -> Result<(), AuthStoreError> {
        let sql = format!(
            "UPDATE agent_tokens SET revoked_at = $2 WHERE {column} = $1 AND revoked_at IS NULL"
        );
        on_pool!(&self.db, |pool| sqlx::query(&sql)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }
}
