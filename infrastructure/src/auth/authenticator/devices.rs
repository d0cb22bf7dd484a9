//! Enrollment tokens and device authorizations (the agent's two ways in): user codes, and the
//! enrollment and device rows read back as the port's values.

#[cfg(test)]
mod tests;

use super::{LocalAuthenticator, backend, now, parse_user};
use crate::auth::{AuthStoreError, DeviceRow, EnrollmentTokenRow, new_opaque_token, token_digest};
use edict_application::auth::{
    AuthError, DeviceGrant, DevicePoll, DeviceRequest, DeviceStatus, EnrollmentTokenInfo,
};
use rand::Rng;

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
pub(super) fn normalize_user_code(typed: &str) -> String {
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

pub(super) fn enrollment_info(row: EnrollmentTokenRow) -> Result<EnrollmentTokenInfo, AuthError> {
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

impl LocalAuthenticator {
    /// A new device authorization for a machine, under a fresh user code.
    pub(super) async fn store_new_device_authorization(
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

    /// The device authorization a user code names, as the approving user sees it.
    pub(super) async fn find_device_request(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceRequest>, AuthError> {
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

    /// The answer to an agent's poll of its device code.
    pub(super) async fn answer_device_poll(
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
