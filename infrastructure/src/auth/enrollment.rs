//! The tables behind enrollment: `enrollment_tokens` (for unattended installs) and
//! `device_authorizations` (the device code flow). Secrets are stored only as digests.

use super::AuthStore;
use super::sql::AuthStoreError;

/// A row of `enrollment_tokens`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnrollmentTokenRow {
    /// Its id.
    pub id: String,
    /// The user enrolled machines belong to.
    pub user_id: String,
    /// Who created it.
    pub created_by: String,
    /// What it is for.
    pub note: String,
    /// Enrollments in all.
    pub uses_total: i64,
    /// Enrollments left.
    pub uses_left: i64,
    /// Creation time (seconds since the epoch).
    pub created_at: i64,
    /// Expiry (seconds since the epoch).
    pub expires_at: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
}

/// A row of `device_authorizations`, without its digest.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceRow {
    /// The short code.
    pub user_code: String,
    /// The machine's id.
    pub machine_id: String,
    /// The machine's name.
    pub machine_name: String,
    /// `pending`, `approving`, `approved`, `denied` or `completed`.
    pub status: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// The last poll.
    pub last_poll_at: i64,
    /// The enrolled agent, once approved.
    pub agent_id: Option<String>,
    /// Its user, once approved.
    pub user_id: Option<String>,
}

const TOKEN_COLUMNS: &str = "id, user_id, created_by, note, uses_total, uses_left, created_at, \
                             expires_at, revoked_at";
const DEVICE_COLUMNS: &str = "user_code, machine_id, machine_name, status, created_at, expires_at, \
                              last_poll_at, agent_id, user_id";

impl AuthStore {
    /// Stores a new enrollment token.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn put_enrollment_token(
        &self,
        row: &EnrollmentTokenRow,
        digest: &str,
    ) -> Result<(), AuthStoreError> {
        on_pool!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO enrollment_tokens (id, token_digest, user_id, created_by, note, uses_total, \
             uses_left, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(&row.id)
        .bind(digest)
        .bind(&row.user_id)
        .bind(&row.created_by)
        .bind(&row.note)
        .bind(row.uses_total)
        .bind(row.uses_left)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Every enrollment token, newest first.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRow>, AuthStoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_at DESC, id LIMIT 1000"
        );
        Ok(on_pool!(self.db(), |pool| sqlx::query_as(&sql)
            .fetch_all(pool)
            .await)?)
    }

    /// Revokes an enrollment token; false when there is none with `id`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn revoke_enrollment_token(
        &self,
        id: &str,
        now: i64,
    ) -> Result<bool, AuthStoreError> {
        let found = on_pool!(self.db(), |pool| sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1"
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(found > 0)
    }

    /// Takes one use of the token with `digest`, if it is live: answers its id and user.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn use_enrollment_token(
        &self,
        digest: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, AuthStoreError> {
        Ok(on_pool!(self.db(), |pool| sqlx::query_as(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE token_digest = $1 \
             AND uses_left > 0 AND revoked_at IS NULL AND expires_at > $2 RETURNING id, user_id"
        )
        .bind(digest)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    /// Stores a new device authorization, and forgets those expired for a day.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`]; a user code taken by a live authorization is a unique violation
    /// (the caller draws another).
    pub async fn put_device_authorization(
        &self,
        digest: &str,
        row: &DeviceRow,
    ) -> Result<(), AuthStoreError> {
        on_pool!(self.db(), |pool| sqlx::query(
            "DELETE FROM device_authorizations WHERE expires_at < $1"
        )
        .bind(row.created_at - 86_400)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        on_pool!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO device_authorizations (device_digest, user_code, machine_id, machine_name, \
             status, created_at, expires_at, last_poll_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(digest)
        .bind(&row.user_code)
        .bind(&row.machine_id)
        .bind(&row.machine_name)
        .bind(&row.status)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.last_poll_at)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The device authorization with `user_code`.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn device_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceRow>, AuthStoreError> {
        let sql =
            format!("SELECT {DEVICE_COLUMNS} FROM device_authorizations WHERE user_code = $1");
        Ok(on_pool!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(user_code)
            .fetch_optional(pool)
            .await)?)
    }

    /// Moves a live authorization from status `from` to `to` (recording `decided_by`, and the agent
    /// and user when given); true when this call moved it.
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn move_device_authorization(
        &self,
        user_code: &str,
        from: &str,
        to: &str,
        decided_by: Option<&str>,
        enrolled: Option<(&str, &str)>,
        now: i64,
    ) -> Result<bool, AuthStoreError> {
        let moved = on_pool!(self.db(), |pool| sqlx::query(
            "UPDATE device_authorizations SET status = $3, \
             decided_by = COALESCE($4, decided_by), agent_id = COALESCE($5, agent_id), \
             user_id = COALESCE($6, user_id) \
             WHERE user_code = $1 AND status = $2 AND expires_at > $7"
        )
        .bind(user_code)
        .bind(from)
        .bind(to)
        .bind(decided_by)
        .bind(enrolled.map(|(agent, _)| agent))
        .bind(enrolled.map(|(_, user)| user))
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(moved > 0)
    }

    /// The agent's poll: records its time and answers the row as it was before (None when unknown).
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn poll_device(
        &self,
        digest: &str,
        now: i64,
    ) -> Result<Option<DeviceRow>, AuthStoreError> {
        let sql =
            format!("SELECT {DEVICE_COLUMNS} FROM device_authorizations WHERE device_digest = $1");
        let row: Option<DeviceRow> = on_pool!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(digest)
            .fetch_optional(pool)
            .await)?;
        if row.is_some() {
            on_pool!(self.db(), |pool| sqlx::query(
                "UPDATE device_authorizations SET last_poll_at = $2 WHERE device_digest = $1"
            )
            .bind(digest)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        }
        Ok(row)
    }

    /// Marks an approved authorization collected; true when this call did (so its token is issued
    /// once).
    ///
    /// # Errors
    /// [`AuthStoreError::Database`].
    pub async fn collect_device_token(&self, digest: &str) -> Result<bool, AuthStoreError> {
        let moved = on_pool!(self.db(), |pool| sqlx::query(
            "UPDATE device_authorizations SET status = 'completed' \
             WHERE device_digest = $1 AND status = 'approved'"
        )
        .bind(digest)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(moved > 0)
    }
}
