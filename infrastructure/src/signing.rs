//! The organization's key ring: the keys that sign rule sets, their key sets, and rotation (ADR 0021).
//!
//! The public part is one row of the `settings` table, `ruleset_keys`: every key set issued (signed,
//! see [`edict_api::ruleset::KeySet`]) and the rotation under way. It is written with a compare and
//! set on the row's whole value, so two processes advancing the same rotation write one key set.
//! Gateways read it to pass key sets on to agents; they hold no private key.
//!
//! The private keys come from `EDICT_RULESET_SIGNING_KEY` (the active one at first), from
//! `EDICT_RULESET_SIGNING_KEY_NEXT` (the next one, taken by a rotation when set), or from the store:
//! the first key generated when none is configured (`ruleset_signing_key`, as before rotation existed)
//! and each next key a rotation generated (`ruleset_key_secret:<key id>`), with the same warning: a
//! key kept in the database protects against KV and network attackers, not against whoever reads the
//! database.
//!
//! A rotation ([`KeyRing::rotate`]) issues at once a key set that announces the next key, signed by
//! the active one. After the overlap, [`KeyRing::advance`] (run every second by [`keep`] in each process
//! that holds keys) issues the key set that makes the next key active (signed by the old one; the
//! holders re-sign every rule set with the new key), and after a second overlap the one that retires the
//! old key (signed by the new one).
//!
//! The ring also signs what projections hand it: the decisions of the change inbox (ADR 0022, into
//! `decision_signatures`) and the removals of the directory (ADR 0024, into `removal_signatures`, one per
//!
//! Layout:
//! - this module: the public ring (the `ruleset_keys` row, written by compare and set), the private keys
//!   a process holds ([`KeyRing::holding`]) and the [`OrgKeys`] port;
//! - `rotation`: starting a rotation, [`KeyRing::advance`] and the keeper [`keep`];
//! - `decisions`: the change inbox's decisions signed for the gateways ([`KeyRing::sign_decisions`]);
//! - `removals`: the signed removals of the agents of a user who left a team ([`KeyRing::sign_removals_of`]).

mod decisions;
mod removals;
mod rotation;

use crate::audit::{KeyOrigin, parse_seed, ruleset_signing_key};
use crate::projection::ActiveKey;
use crate::settings::Secret;
use crate::store::Database;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use edict_api::ruleset::{KeyEntry, KeySet, KeyState, OrgKey, key_id_of};
use edict_application::error::AppError;
use edict_application::signing::{OrgKeyInfo, OrgKeyStatus, OrgKeys, Rotation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

pub use rotation::keep;

/// The settings row of the public ring.
const RING_ROW: &str = "ruleset_keys";
/// The prefix of the settings rows holding generated next keys.
const SECRET_ROW: &str = "ruleset_key_secret:";

/// What the `ruleset_keys` row holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PublicRing {
    /// Every key set issued, oldest first.
    keysets: Vec<KeySet>,
    /// The rotation under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation: Option<StoredRotation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredRotation {
    next_key_id: String,
    activate_at: DateTime<Utc>,
    retire_at: DateTime<Utc>,
}

impl PublicRing {
    fn latest(&self) -> Option<&KeySet> {
        self.keysets.last()
    }

    fn status(&self) -> OrgKeyStatus {
        let latest = self.latest();
        OrgKeyStatus {
            sequence: latest.map_or(0, |keyset| keyset.sequence),
            keys: latest
                .map(|keyset| {
                    keyset
                        .keys
                        .iter()
                        .map(|key| OrgKeyInfo {
                            key_id: key.key_id.clone(),
                            public_key: key.public_key.clone(),
                            state: key.state.as_str().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            rotation: self.rotation.as_ref().map(|rotation| Rotation {
                next_key_id: rotation.next_key_id.clone(),
                activate_at: rotation.activate_at,
                retire_at: rotation.retire_at,
            }),
        }
    }

    /// The ring with key set `keys` issued next, signed by `signer`.
    fn issue(&self, keys: Vec<KeyEntry>, signer: &SigningKey, now: DateTime<Utc>) -> PublicRing {
        let sequence = self.latest().map_or(0, |keyset| keyset.sequence) + 1;
        let mut next = self.clone();
        next.keysets
            .push(KeySet::issue(sequence, now, keys, signer));
        next
    }
}

fn entry(key: &SigningKey, state: KeyState) -> KeyEntry {
    let org = OrgKey::of(&key.verifying_key());
    KeyEntry {
        key_id: org.key_id,
        public_key: org.public_key,
        state,
    }
}

fn unavailable(error: impl std::fmt::Display) -> AppError {
    AppError::Unavailable(format!("signing keys: {error}"))
}

/// The private keys a process holds.
#[derive(Default)]
struct Holder {
    /// Configured seeds (`EDICT_RULESET_SIGNING_KEY`, `EDICT_RULESET_SIGNING_KEY_NEXT`), by key id.
    configured: HashMap<String, SigningKey>,
    /// The configured next key's id, which a rotation takes when set.
    configured_next: Option<String>,
}

/// The organization's key ring, as one process sees it.
pub struct KeyRing {
    db: Database,
    /// `None` in a process that holds no private key (a gateway): it reads the public ring only.
    holder: Option<Holder>,
    /// The active key, as last read (what rule sets are signed with).
    active: RwLock<Option<SigningKey>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("holds_keys", &self.holder.is_some())
            .field("active", &self.active_key_id())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// The public ring of `db`, for a process that holds no private key.
    pub fn public(db: Database) -> KeyRing {
        KeyRing {
            db,
            holder: None,
            active: RwLock::new(None),
        }
    }

    /// The ring of `db` with the private keys this process holds: `configured`
    /// (`EDICT_RULESET_SIGNING_KEY`) and `configured_next` (`EDICT_RULESET_SIGNING_KEY_NEXT`), and those
    /// kept in the store. Creates the first key set when the store has none (with the configured key,
    /// else the stored or a generated one). Answers where the first key came from.
    ///
    /// # Errors
    /// When a configured seed does not parse, the store cannot be read, or the configured key is not
    /// one of the organization's keys (signing with it would make every agent refuse every rule set).
    pub async fn holding(
        db: Database,
        configured: Option<&Secret<String>>,
        configured_next: Option<&Secret<String>>,
    ) -> anyhow::Result<(KeyRing, KeyOrigin)> {
        let mut holder = Holder::default();
        let mut configured_id = None;
        for (seed, next) in [(configured, false), (configured_next, true)] {
            let Some(seed) = seed else { continue };
            let seed = crate::audit::ruleset_seed(seed.expose())?;
            let key = SigningKey::from_bytes(&seed);
            let key_id = key_id_of(&key.verifying_key());
            if next {
                holder.configured_next = Some(key_id.clone());
            } else {
                configured_id = Some(key_id.clone());
            }
            holder.configured.insert(key_id, key);
        }
        let ring = KeyRing {
            db,
            holder: Some(holder),
            active: RwLock::new(None),
        };
        let origin = if ring.read().await.map_err(anyhow::Error::msg)?.is_none() {
            let (first, origin) = ruleset_signing_key(&ring.db, configured).await?;
            let genesis = PublicRing::default().issue(
                vec![entry(&first, KeyState::Active)],
                &first,
                Utc::now(),
            );
            ring.create(&genesis).await.map_err(anyhow::Error::msg)?;
            origin
        } else if configured.is_some() {
            KeyOrigin::Configured
        } else {
            KeyOrigin::Stored
        };
        let public = ring
            .read()
            .await
            .map_err(anyhow::Error::msg)?
            .unwrap_or_default();
        if let Some(configured_id) = &configured_id {
            let known = public
                .latest()
                .is_some_and(|keyset| keyset.keys.iter().any(|key| key.key_id == *configured_id));
            if !known {
                anyhow::bail!(
                    "EDICT_RULESET_SIGNING_KEY (key {configured_id}) is not one of the organization's \
                     keys ({}): agents would refuse every rule set it signs. Restore the previous \
                     key, or rotate to this one with EDICT_RULESET_SIGNING_KEY_NEXT and `edict keys \
                     rotate`",
                    public
                        .latest()
                        .map(|keyset| {
                            keyset
                                .keys
                                .iter()
                                .map(|key| key.key_id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                );
            }
        }
        ring.refresh_active(&public)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok((ring, origin))
    }

    /// The id of the key rule sets are signed with now.
    pub fn active_key_id(&self) -> Option<String> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|key| key_id_of(&key.verifying_key()))
    }

    async fn read(&self) -> Result<Option<PublicRing>, String> {
        let text: Option<String> = on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT value FROM settings WHERE key = $1"
        )
        .bind(RING_ROW)
        .fetch_optional(pool)
        .await)
        .map_err(|error| error.to_string())?;
        text.map(|text| {
            serde_json::from_str(&text)
                .map_err(|error| format!("the stored key ring does not parse: {error}"))
        })
        .transpose()
    }

    async fn create(&self, ring: &PublicRing) -> Result<(), String> {
        let text = serde_json::to_string(ring).map_err(|error| error.to_string())?;
        on_pool!(&self.db, |pool| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        )
        .bind(RING_ROW)
        .bind(&text)
        .execute(pool)
        .await
        .map(drop))
        .map_err(|error| error.to_string())
    }

    /// Replaces `old` by `new`; `false` when another process changed the ring since `old` was read.
    async fn compare_and_set(&self, old: &PublicRing, new: &PublicRing) -> Result<bool, String> {
        let old = serde_json::to_string(old).map_err(|error| error.to_string())?;
        let new = serde_json::to_string(new).map_err(|error| error.to_string())?;
        let updated = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE settings SET value = $1 WHERE key = $2 AND value = $3"
        )
        .bind(&new)
        .bind(RING_ROW)
        .bind(&old)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(|error| error.to_string())?;
        Ok(updated == 1)
    }

    /// The private key of `key_id`, from the configuration or the store.
    async fn secret(&self, key_id: &str) -> Result<Option<SigningKey>, String> {
        let Some(holder) = &self.holder else {
            return Ok(None);
        };
        if let Some(key) = holder.configured.get(key_id) {
            return Ok(Some(key.clone()));
        }
        let rows: Vec<String> = on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT value FROM settings WHERE key = $1 OR key = 'ruleset_signing_key'"
        )
        .bind(format!("{SECRET_ROW}{key_id}"))
        .fetch_all(pool)
        .await)
        .map_err(|error| error.to_string())?;
        Ok(rows
            .iter()
            .filter_map(|text| parse_seed(text).ok())
            .map(|seed| SigningKey::from_bytes(&seed))
            .find(|key| key_id_of(&key.verifying_key()) == key_id))
    }

    /// Reads the active key of `ring` into this process (`Ok(true)` when it changed).
    async fn refresh_active(&self, ring: &PublicRing) -> Result<bool, String> {
        if self.holder.is_none() {
            return Ok(false);
        }
        let Some(active) = ring.latest().and_then(KeySet::active) else {
            return Err("the key ring has no active key".to_owned());
        };
        if self.active_key_id().as_deref() == Some(active.key_id.as_str()) {
            return Ok(false);
        }
        let key = self.secret(&active.key_id).await?.ok_or_else(|| {
            format!(
                "this process does not hold the active signing key {}: set \
                 EDICT_RULESET_SIGNING_KEY (or _NEXT) to it",
                active.key_id
            )
        })?;
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = Some(key);
        Ok(true)
    }

    /// The signed documents `sql` selects for the one parameter `key` (text that no longer parses is
    /// left out).
    async fn documents(&self, sql: &str, key: &str) -> Result<Vec<serde_json::Value>, AppError> {
        let documents: Vec<String> = on_pool!(&self.db, |pool| sqlx::query_scalar(sql)
            .bind(key)
            .fetch_all(pool)
            .await)
        .map_err(unavailable)?;
        Ok(documents
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect())
    }
}

impl ActiveKey for KeyRing {
    fn active(&self) -> Option<SigningKey> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl OrgKeys for KeyRing {
    async fn keysets(&self) -> Result<Vec<serde_json::Value>, AppError> {
        let ring = self.read().await.map_err(unavailable)?.unwrap_or_default();
        ring.keysets
            .iter()
            .map(|keyset| serde_json::to_value(keyset).map_err(unavailable))
            .collect()
    }

    async fn status(&self) -> Result<OrgKeyStatus, AppError> {
        let ring = self.read().await.map_err(unavailable)?.unwrap_or_default();
        Ok(ring.status())
    }

    async fn team_decisions(&self, team: &str) -> Result<Vec<serde_json::Value>, AppError> {
        self.documents(
            "SELECT document FROM decision_signatures WHERE team = $1 ORDER BY change_request",
            team,
        )
        .await
    }

    async fn agent_removals(&self, agent: &str) -> Result<Vec<serde_json::Value>, AppError> {
        self.documents(
            "SELECT document FROM removal_signatures WHERE agent = $1 ORDER BY team",
            agent,
        )
        .await
    }

    async fn rotate(&self, overlap: Duration) -> Result<OrgKeyStatus, AppError> {
        self.start_rotation(overlap).await
    }
}

#[async_trait]
impl crate::projection::DecisionSigner for KeyRing {
    async fn sign(&self, docs: &[&serde_json::Value]) -> Result<usize, String> {
        self.sign_decisions(docs).await
    }

    async fn sign_removals(
        &self,
        events: &[edict_application::event_log::RecordedEvent],
    ) -> Result<usize, String> {
        self.sign_removals_of(events).await
    }
}
