//! The signed removals (ADR 0024, into `removal_signatures`): one per agent of a user who left a team,
//! withdrawn when the user rejoins, signed again after a rotation.

use super::KeyRing;
use crate::projection::ActiveKey;
use crate::store::Database;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use edict_api::ruleset::key_id_of;

#[cfg(test)]
mod tests;

/// Replaces a signed removal only by a later removal of the same agent and team, or by the same one
/// signed with another key.
const UPSERT_REMOVAL: &str = "
INSERT INTO removal_signatures (agent, team, user_id, position, key_id, document)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (agent, team) DO UPDATE
   SET user_id = excluded.user_id, position = excluded.position, key_id = excluded.key_id,
       document = excluded.document
 WHERE removal_signatures.position < excluded.position
    OR (removal_signatures.position = excluded.position AND removal_signatures.key_id <> excluded.key_id)";

/// The agents ever enrolled for a user, from the log itself (the agent fleet's read model may lag
/// behind the directory): the payload holds the user id; the match is checked again on the parsed
/// payload.
const AGENTS_OF_POSTGRES: &str = "SELECT aggregate_id, payload::text FROM events \
     WHERE aggregate_type = 'Agent' AND event_type = 'AgentEnrolled' AND payload::text LIKE $1";
const AGENTS_OF_SQLITE: &str = "SELECT aggregate_id, payload FROM events \
     WHERE aggregate_type = 'Agent' AND event_type = 'AgentEnrolled' AND payload LIKE $1";

/// `(user, team)` of a `MemberAdded` / `MemberRemoved` payload (as cqrs-es stores it: the variant
/// name around the fields).
fn membership_of(event_type: &str, payload: &serde_json::Value) -> Option<(String, String)> {
    let fields = payload.get(event_type).unwrap_or(payload);
    Some((
        fields["user"].as_str()?.to_owned(),
        fields["team_id"].as_str()?.to_owned(),
    ))
}

/// The `removed` message for `agent`, signed by `key`.
fn signed_removal(
    key: &SigningKey,
    agent: &str,
    team: &str,
    position: u64,
    issued_at: DateTime<Utc>,
) -> edict_api::protocol::GatewayMessage {
    let signature = edict_api::ruleset::RemovalStatement {
        agent,
        team,
        position,
    }
    .sign(key, issued_at);
    edict_api::protocol::GatewayMessage::Removed {
        team: team.to_owned(),
        agent: Some(agent.to_owned()),
        position: Some(position),
        signature: Some(signature),
    }
}

impl KeyRing {
    /// The agents ever enrolled for `user`.
    async fn agents_of(&self, user: &str) -> Result<Vec<String>, String> {
        let pattern = format!("%{user}%");
        let rows: Vec<(String, String)> = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_as(AGENTS_OF_POSTGRES)
                    .bind(&pattern)
                    .fetch_all(pool)
                    .await
            }
            Database::Sqlite(pool) => {
                sqlx::query_as(AGENTS_OF_SQLITE)
                    .bind(&pattern)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err(|error| error.to_string())?;
        Ok(rows
            .into_iter()
            .filter(|(_, payload)| {
                serde_json::from_str::<serde_json::Value>(payload).is_ok_and(|payload| {
                    let fields = payload.get("AgentEnrolled").unwrap_or(&payload);
                    fields["user"].as_str() == Some(user)
                })
            })
            .map(|(agent, _)| agent)
            .collect())
    }

    /// Signs a removal for every agent of the user of each `MemberRemoved` among `events` (in log
    /// order), and deletes the earlier removals of a user a `MemberAdded` brings back to the team
    /// (ADR 0024). The issue time is the event's own, so signing the same removal again yields the
    /// same bytes. Answers how many were signed.
    ///
    /// # Errors
    /// When this process holds no active key, or the store fails.
    pub async fn sign_removals_of(
        &self,
        events: &[edict_application::event_log::RecordedEvent],
    ) -> Result<usize, String> {
        let mut signed = 0;
        for event in events {
            let removed = match event.event_type.as_str() {
                "MemberRemoved" => true,
                "MemberAdded" => false,
                _ => continue,
            };
            let Some((user, team)) = membership_of(&event.event_type, &event.payload) else {
                continue;
            };
            let position = event.global_position;
            if !removed {
                on_pool!(&self.db, |pool| sqlx::query(
                    "DELETE FROM removal_signatures WHERE user_id = $1 AND team = $2 AND position < $3"
                )
                .bind(&user)
                .bind(&team)
                .bind(position)
                .execute(pool)
                .await
                .map(drop))
                .map_err(|error| error.to_string())?;
                continue;
            }
            let key = self
                .active()
                .ok_or("this process does not hold the active signing key")?;
            for agent in self.agents_of(&user).await? {
                self.store_removal(&key, &agent, &team, &user, position, event.recorded_at)
                    .await?;
                signed += 1;
            }
        }
        Ok(signed)
    }

    /// Signs again, with the active key, every removal signed by another one (after a rotation),
    /// keeping its position and issue time. Answers how many were signed.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn sweep_removals(&self) -> Result<usize, String> {
        let Some(key) = self.active() else {
            return Ok(0);
        };
        let key_id = key_id_of(&key.verifying_key());
        let rows: Vec<(String, String, String, i64, String)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT agent, team, user_id, position, document FROM removal_signatures \
                 WHERE key_id <> $1",
            )
            .bind(&key_id)
            .fetch_all(pool)
            .await
        })
        .map_err(|error| error.to_string())?;
        let mut signed = 0;
        for (agent, team, user, position, document) in rows {
            let issued_at = serde_json::from_str::<edict_api::protocol::GatewayMessage>(&document)
                .ok()
                .and_then(|message| match message {
                    edict_api::protocol::GatewayMessage::Removed { signature, .. } => {
                        signature.map(|signature| signature.issued_at)
                    }
                    _ => None,
                })
                .unwrap_or_else(Utc::now);
            self.store_removal(&key, &agent, &team, &user, position, issued_at)
                .await?;
            signed += 1;
        }
        Ok(signed)
    }

    /// Signs the removal of `agent` from `team` (its user `user` left at `position`, issued at
    /// `issued_at`) with `key`, and stores it in place of an earlier one ([`UPSERT_REMOVAL`]).
    async fn store_removal(
        &self,
        key: &SigningKey,
        agent: &str,
        team: &str,
        user: &str,
        position: i64,
        issued_at: DateTime<Utc>,
    ) -> Result<(), String> {
        let position_u64 = u64::try_from(position).map_err(|error| error.to_string())?;
        let removal = signed_removal(key, agent, team, position_u64, issued_at);
        let document = serde_json::to_string(&removal).map_err(|error| error.to_string())?;
        let key_id = key_id_of(&key.verifying_key());
        on_pool!(&self.db, |pool| sqlx::query(UPSERT_REMOVAL)
            .bind(agent)
            .bind(team)
            .bind(user)
            .bind(position)
            .bind(&key_id)
            .bind(&document)
            .execute(pool)
            .await
            .map(drop))
        .map_err(|error| error.to_string())
    }
}
