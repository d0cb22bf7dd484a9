//! Rotation of the organization key (ADR 0021): starting one (a key set announcing the next key),
//! advancing it once each overlap is over, and the keeper that advances it and signs again what the
//! active key must sign.

use super::{KeyRing, PublicRing, SECRET_ROW, StoredRotation, entry, unavailable};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use edict_api::ruleset::{KeyEntry, KeySet, KeyState, key_id_of};
use edict_application::error::AppError;
use edict_application::signing::OrgKeyStatus;
use rand::RngCore;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often [`keep`] advances a rotation.
const KEEP_INTERVAL: Duration = Duration::from_secs(1);

impl KeyRing {
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

    /// Starts a rotation to the next key: issues at once the key set that announces it (signed by the
    /// active key), to become active after `overlap` and the old key retired after another one.
    pub(super) async fn start_rotation(&self, overlap: Duration) -> Result<OrgKeyStatus, AppError> {
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
