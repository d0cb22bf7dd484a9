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
//! agent of a user who left a team).

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
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// The settings row of the public ring.
const RING_ROW: &str = "ruleset_keys";
/// The prefix of the settings rows holding generated next keys.
const SECRET_ROW: &str = "ruleset_key_secret:";
/// How often [`keep`] advances a rotation.
const KEEP_INTERVAL: Duration = Duration::from_secs(1);

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

    /// The next key a rotation takes: the configured next key unless it is one of the ring's
    /// already, else a new one, kept in the store.
    async fn next_key(&self, ring: &PublicRing) -> Result<SigningKey, AppError> {
        let holder = self
            .holder
            .as_ref()
            .ok_or_else(|| unavailable("this process holds no signing key"))?;
        let known = |key_id: &str| {
            ring.keysets
                .iter()
                .any(|keyset| keyset.keys.iter().any(|key| key.key_id == key_id))
        };
        if let Some(next) = holder
            .configured_next
            .as_deref()
            .filter(|next| !known(next))
            .and_then(|next| holder.configured.get(next))
        {
            return Ok(next.clone());
        }
        let mut seed = [0_u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id_of(&key.verifying_key());
        on_pool!(&self.db, |pool| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)"
        )
        .bind(format!("{SECRET_ROW}{key_id}"))
        .bind(hex::encode(seed))
        .execute(pool)
        .await
        .map(drop))
        .map_err(unavailable)?;
        tracing::warn!(
            key_id,
            "the next signing key was generated and is kept in the database; set \
             EDICT_RULESET_SIGNING_KEY_NEXT before rotating to keep it out of the database"
        );
        Ok(key)
    }

    /// Issues the key sets a rotation owes at `now`: the next key made active once its overlap is
    /// over, the old key retired after the second one. Answers whether the active key changed in this
    /// process (then every rule set must be signed again).
    ///
    /// # Errors
    /// When the store cannot be read or written, or this process lacks a key it must sign with.
    pub async fn advance(&self, now: DateTime<Utc>) -> Result<bool, String> {
        let ring = self.read().await?.unwrap_or_default();
        let mut next_ring = None;
        if let (Some(rotation), Some(latest)) = (&ring.rotation, ring.latest())
            && self.holder.is_some()
        {
            let active = latest.active().map(|key| key.key_id.clone());
            if active.as_deref() != Some(rotation.next_key_id.as_str())
                && now >= rotation.activate_at
            {
                // The next key becomes active, announced by the key active until now.
                let old = latest.active().ok_or("no active key")?;
                let signer = self.secret(&old.key_id).await?.ok_or_else(|| {
                    format!("cannot sign with the active key {}: not held", old.key_id)
                })?;
                let next = latest
                    .keys
                    .iter()
                    .find(|key| key.key_id == rotation.next_key_id)
                    .ok_or("the next key is not in the latest key set")?;
                let keys = vec![
                    KeyEntry {
                        state: KeyState::Active,
                        ..next.clone()
                    },
                    KeyEntry {
                        state: KeyState::Retiring,
                        ..old.clone()
                    },
                ];
                next_ring = Some(ring.issue(keys, &signer, now));
            } else if active.as_deref() == Some(rotation.next_key_id.as_str())
                && now >= rotation.retire_at
            {
                // The old key retired, announced by the new one.
                let new = latest.active().ok_or("no active key")?;
                let signer = self.secret(&new.key_id).await?.ok_or_else(|| {
                    format!("cannot sign with the active key {}: not held", new.key_id)
                })?;
                let mut retired = ring.issue(vec![new.clone()], &signer, now);
                retired.rotation = None;
                next_ring = Some(retired);
            }
        }
        let ring = match next_ring {
            Some(next) => {
                if self.compare_and_set(&ring, &next).await? {
                    let latest = next.latest().map_or(0, |keyset| keyset.sequence);
                    tracing::warn!(
                        sequence = latest,
                        active = next
                            .latest()
                            .and_then(KeySet::active)
                            .map(|key| key.key_id.as_str()),
                        "issued a new organization key set"
                    );
                    next
                } else {
                    // Another process advanced it: take what it wrote.
                    self.read().await?.unwrap_or_default()
                }
            }
            None => ring,
        };
        self.refresh_active(&ring).await
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
        let documents: Vec<String> = on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT document FROM decision_signatures WHERE team = $1 ORDER BY change_request"
        )
        .bind(team)
        .fetch_all(pool)
        .await)
        .map_err(unavailable)?;
        Ok(documents
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect())
    }

    async fn agent_removals(&self, agent: &str) -> Result<Vec<serde_json::Value>, AppError> {
        let documents: Vec<String> = on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT document FROM removal_signatures WHERE agent = $1 ORDER BY team"
        )
        .bind(agent)
        .fetch_all(pool)
        .await)
        .map_err(unavailable)?;
        Ok(documents
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect())
    }

    async fn rotate(&self, overlap: Duration) -> Result<OrgKeyStatus, AppError> {
        let ring = self.read().await.map_err(unavailable)?.unwrap_or_default();
        if ring.rotation.is_some() {
            return Err(AppError::Rule {
                rule: "rotation_in_progress".to_owned(),
                message: "a key rotation is under way; it ends when the previous key is retired"
                    .to_owned(),
            });
        }
        let latest = ring
            .latest()
            .ok_or_else(|| unavailable("the organization has no key yet"))?;
        let active = latest
            .active()
            .ok_or_else(|| unavailable("the key ring has no active key"))?;
        let signer = self
            .secret(&active.key_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("this process does not hold the active signing key"))?;
        let next = self.next_key(&ring).await?;
        let now = Utc::now();
        let overlap = chrono::Duration::from_std(overlap).map_err(unavailable)?;
        let mut rotated = ring.issue(
            vec![active.clone(), entry(&next, KeyState::Next)],
            &signer,
            now,
        );
        rotated.rotation = Some(StoredRotation {
            next_key_id: key_id_of(&next.verifying_key()),
            activate_at: now + overlap,
            retire_at: now + overlap + overlap,
        });
        if !self
            .compare_and_set(&ring, &rotated)
            .await
            .map_err(unavailable)?
        {
            return Err(AppError::Rule {
                rule: "rotation_in_progress".to_owned(),
                message: "the key ring changed meanwhile; read it again".to_owned(),
            });
        }
        Ok(rotated.status())
    }
}

/// The change inbox's projection and document kind, whose decided change requests are signed.
const CHANGE_INBOX: &str = "change_inbox";

/// Replaces a signed decision only by a later version of its change request, or by the same version
/// signed with another key.
const UPSERT_DECISION: &str = "
INSERT INTO decision_signatures (change_request, team, version, key_id, document)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (change_request) DO UPDATE
   SET team = excluded.team, version = excluded.version, key_id = excluded.key_id,
       document = excluded.document
 WHERE decision_signatures.version < excluded.version
    OR (decision_signatures.version = excluded.version AND decision_signatures.key_id <> excluded.key_id)";

impl KeyRing {
    /// Signs the decision of each decided change request among `docs` (change inbox documents) with
    /// the active key and stores it for the gateways (ADR 0022). Answers how many were signed.
    ///
    /// # Errors
    /// When this process holds no active key, or the store fails.
    pub async fn sign_decisions(&self, docs: &[&serde_json::Value]) -> Result<usize, String> {
        let key = self
            .active()
            .ok_or("this process does not hold the active signing key")?;
        let key_id = key_id_of(&key.verifying_key());
        let mut signed = 0;
        for doc in docs {
            let Some(mut decision) = edict_projections::change_inbox::decision::decision_of(doc)
            else {
                continue;
            };
            let (Some(change_request), Some(team), Some(version)) = (
                doc["id"].as_str(),
                doc["team"].as_str(),
                doc["version"].as_i64(),
            ) else {
                continue;
            };
            let Some(statement) = decision.decision_statement() else {
                continue;
            };
            let signature = statement.sign(&key, Utc::now());
            if let edict_api::protocol::GatewayMessage::Decision {
                signature: slot, ..
            } = &mut decision
            {
                *slot = Some(signature);
            }
            let document = serde_json::to_string(&decision).map_err(|error| error.to_string())?;
            on_pool!(&self.db, |pool| sqlx::query(UPSERT_DECISION)
                .bind(change_request)
                .bind(team)
                .bind(version)
                .bind(&key_id)
                .bind(&document)
                .execute(pool)
                .await
                .map(drop))
            .map_err(|error| error.to_string())?;
            signed += 1;
        }
        Ok(signed)
    }

    /// Signs every decision not signed yet, signed for an older version of its change request, or
    /// signed by another key than the active one (after a rotation): the safety net under the
    /// projection's own signing ([`DecisionSigner`](crate::projection::DecisionSigner)). Answers how
    /// many were signed.
    ///
    /// # Errors
    /// When the store fails or this process holds no active key.
    pub async fn sweep_decisions(&self) -> Result<usize, String> {
        let Some(active) = self.active_key_id() else {
            return Ok(0);
        };
        let docs = crate::projection::served_docs_of_kind(&self.db, CHANGE_INBOX, "change_request")
            .await
            .map_err(|error| error.to_string())?;
        let rows: Vec<(String, i64, String)> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT change_request, version, key_id FROM decision_signatures"
        )
        .fetch_all(pool)
        .await)
        .map_err(|error| error.to_string())?;
        let held: HashMap<String, (i64, String)> = rows
            .into_iter()
            .map(|(change_request, version, key_id)| (change_request, (version, key_id)))
            .collect();
        let owed: Vec<&serde_json::Value> = docs
            .iter()
            .map(|(_, _, doc)| doc)
            .filter(|doc| {
                let version = doc["version"].as_i64().unwrap_or_default();
                match held.get(doc["id"].as_str().unwrap_or_default()) {
                    Some((signed, key_id)) => *signed < version || *key_id != active,
                    None => edict_projections::change_inbox::decision::decision_of(doc).is_some(),
                }
            })
            .collect();
        if owed.is_empty() {
            return Ok(0);
        }
        self.sign_decisions(&owed).await
    }
}

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
            let key_id = key_id_of(&key.verifying_key());
            let position_u64 = u64::try_from(position).map_err(|error| error.to_string())?;
            for agent in self.agents_of(&user).await? {
                let removal = signed_removal(&key, &agent, &team, position_u64, event.recorded_at);
                let document =
                    serde_json::to_string(&removal).map_err(|error| error.to_string())?;
                on_pool!(&self.db, |pool| sqlx::query(UPSERT_REMOVAL)
                    .bind(&agent)
                    .bind(&team)
                    .bind(&user)
                    .bind(position)
                    .bind(&key_id)
                    .bind(&document)
                    .execute(pool)
                    .await
                    .map(drop))
                .map_err(|error| error.to_string())?;
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
            let position_u64 = u64::try_from(position).map_err(|error| error.to_string())?;
            let removal = signed_removal(&key, &agent, &team, position_u64, issued_at);
            let document = serde_json::to_string(&removal).map_err(|error| error.to_string())?;
            on_pool!(&self.db, |pool| sqlx::query(UPSERT_REMOVAL)
                .bind(&agent)
                .bind(&team)
                .bind(&user)
                .bind(position)
                .bind(&key_id)
                .bind(&document)
                .execute(pool)
                .await
                .map(drop))
            .map_err(|error| error.to_string())?;
            signed += 1;
        }
        Ok(signed)
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

/// How many keeper ticks between two sweeps of the decisions.
const SWEEP_EVERY: u32 = 10;

/// Advances `ring`'s rotations every second until `stop` completes; after the active key changed in
/// this process, calls `resign` (which signs every published rule set again) and signs every decision
/// again. Every ten seconds, signs the decisions the projection did not (ADR 0022), and signs again
/// with the active key the removals signed by another one (ADR 0024).
pub async fn keep<F, Fut>(ring: Arc<KeyRing>, resign: F, stop: impl Future<Output = ()>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(KEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let mut sweep = ticks.is_multiple_of(SWEEP_EVERY);
        ticks = ticks.wrapping_add(1);
        match ring.advance(Utc::now()).await {
            Ok(true) => {
                tracing::warn!(
                    active = ring.active_key_id(),
                    "the active signing key changed: signing every rule set and decision again"
                );
                resign().await;
                sweep = true;
            }
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "cannot advance the signing key rotation"),
        }
        if sweep {
            match ring.sweep_decisions().await {
                Ok(0) => {}
                Ok(signed) => tracing::info!(signed, "signed the decisions still owed"),
                Err(error) => tracing::warn!(%error, "cannot sign the decisions"),
            }
            match ring.sweep_removals().await {
                Ok(0) => {}
                Ok(signed) => {
                    tracing::info!(signed, "signed the removals again with the active key")
                }
                Err(error) => tracing::warn!(%error, "cannot sign the removals"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edict_api::protocol::GatewayMessage;
    use edict_api::ruleset::RemovalStatement;
    use edict_application::event_log::RecordedEvent;
    use serde_json::json;

    const USER: &str = "00000000-0000-0000-0000-00000000000b";
    const TEAM: &str = "00000000-0000-0000-0000-000000000002";

    fn membership(event_type: &str, position: i64) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            transaction_id: 0,
            aggregate_type: "Team".into(),
            aggregate_id: TEAM.into(),
            sequence: position,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload: json!({ event_type: {"team_id": TEAM, "user": USER, "by": USER,
                                          "role": "member", "at": "2026-12-05T06:00:00Z"} }),
            metadata: json!({}),
            recorded_at: Utc::now(),
        }
    }

    async fn ring() -> (KeyRing, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/edict.db", dir.path().display());
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        for (agent, user) in [("agent-1", USER), ("agent-2", USER), ("agent-3", TEAM)] {
            let payload = json!({"AgentEnrolled": {"agent_id": agent, "user": user}});
            on_pool!(&db, |pool| sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata) VALUES ('Agent', $1, 1, 'AgentEnrolled', '1.0', $2, '{}')"
            )
            .bind(agent)
            .bind(payload.to_string())
            .execute(pool)
            .await
            .map(drop))
            .unwrap();
        }
        let (ring, _) = KeyRing::holding(db, None, None).await.unwrap();
        (ring, dir)
    }

    async fn removals(ring: &KeyRing, agent: &str) -> Vec<GatewayMessage> {
        ring.agent_removals(agent)
            .await
            .unwrap()
            .into_iter()
            .map(|doc| serde_json::from_value(doc).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_leave_is_signed_for_each_agent_of_the_user_and_a_rejoin_withdraws_it() {
        let (ring, _dir) = ring().await;
        let keys = [OrgKey::of(&ring.active().unwrap().verifying_key())];
        assert_eq!(
            ring.sign_removals_of(&[membership("MemberRemoved", 10)])
                .await
                .unwrap(),
            2
        );
        for agent in ["agent-1", "agent-2"] {
            let sent = removals(&ring, agent).await;
            assert_eq!(sent.len(), 1, "{sent:?}");
            let GatewayMessage::Removed { signature, .. } = &sent[0] else {
                panic!("{sent:?}");
            };
            let statement = sent[0].removal_statement().unwrap();
            assert_eq!(
                statement,
                RemovalStatement {
                    agent,
                    team: TEAM,
                    position: 10
                }
            );
            assert_eq!(
                statement.verify(agent, 0, signature.as_ref(), &keys),
                Ok(())
            );
        }
        // Another user's agent gets nothing.
        assert!(removals(&ring, "agent-3").await.is_empty());
        // An older leave replayed through the runner (a rebuild's batches) never replaces a later one.
        ring.sign_removals_of(&[membership("MemberRemoved", 4)])
            .await
            .unwrap();
        assert_eq!(
            removals(&ring, "agent-1").await[0]
                .removal_statement()
                .unwrap()
                .position,
            10
        );
        // The user rejoins: no removal is left to send.
        ring.sign_removals_of(&[membership("MemberAdded", 12)])
            .await
            .unwrap();
        assert!(removals(&ring, "agent-1").await.is_empty());
        assert!(removals(&ring, "agent-2").await.is_empty());
    }
}
