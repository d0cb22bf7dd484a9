//! The organization's rule set signing keys (ADR 0018, rotation ADR 0021): the public key sets agents
//! are sent, the status an admin reads, and a rotation an org_admin starts.
//!
//! The keys themselves live behind [`OrgKeys`] (the infrastructure's key ring); a process that holds no
//! private key (a gateway-only process) can still read the public key sets.

use crate::Edict;
use crate::error::AppError;
use crate::principal::Principal;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// The shortest overlap a rotation may have: long enough for gateways to pass the next key on
/// before anything is signed with it.
pub const MIN_OVERLAP: Duration = Duration::from_secs(2);
/// The longest overlap (a rotation that never ends is not one).
pub const MAX_OVERLAP: Duration = Duration::from_secs(90 * 24 * 3600);

/// One key of the organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgKeyInfo {
    /// Its id (the fingerprint agents pin).
    pub key_id: String,
    /// The ed25519 public key (64 hex).
    pub public_key: String,
    /// `active`, `next` or `retiring`.
    pub state: String,
}

/// A rotation under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key that becomes active.
    pub next_key_id: String,
    /// When it becomes active (rule sets are re-signed with it then).
    pub activate_at: DateTime<Utc>,
    /// When the previous key is retired.
    pub retire_at: DateTime<Utc>,
}

/// The organization's keys now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgKeyStatus {
    /// The latest key set's sequence.
    pub sequence: u64,
    /// Its keys (what a login pins).
    pub keys: Vec<OrgKeyInfo>,
    /// The rotation under way, if any.
    pub rotation: Option<Rotation>,
}

/// Where the keys are kept.
#[async_trait]
pub trait OrgKeys: Send + Sync {
    /// Every key set issued, oldest first (signed JSON documents, public).
    async fn keysets(&self) -> Result<Vec<serde_json::Value>, AppError>;
    /// The keys now.
    async fn status(&self) -> Result<OrgKeyStatus, AppError>;
    /// The signed decisions of `team`'s change requests (ADR 0022): `decision` messages (JSON) as an
    /// agent is sent them, each naming its agent.
    async fn team_decisions(&self, team: &str) -> Result<Vec<serde_json::Value>, AppError>;
    /// The signed removals of `agent` (ADR 0024): `removed` messages (JSON) as the agent is sent
    /// them, one per team its user left. None by default.
    async fn agent_removals(&self, _agent: &str) -> Result<Vec<serde_json::Value>, AppError> {
        Ok(Vec::new())
    }
    /// Starts a rotation: announces a next key at once, makes it active after `overlap` (re-signing
    /// every rule set) and retires the previous one after another `overlap`.
    ///
    /// # Errors
    /// [`AppError::Rule`] `rotation_in_progress` while one runs; [`AppError::Unavailable`] when this
    /// process holds no signing key.
    async fn rotate(&self, overlap: Duration) -> Result<OrgKeyStatus, AppError>;
}

impl Edict {
    /// Attaches the organization's keys (the composition root does; without them no key is known).
    #[must_use]
    pub fn with_org_keys(mut self, keys: Arc<dyn OrgKeys>) -> Edict {
        self.org_keys = Some(keys);
        self
    }

    fn org_key_store(&self) -> Result<&Arc<dyn OrgKeys>, AppError> {
        self.org_keys.as_ref().ok_or_else(|| {
            AppError::Unavailable("the organization's signing keys are not configured".to_owned())
        })
    }

    /// Every key set issued, oldest first (public: what gateways send agents).
    ///
    /// # Errors
    /// [`AppError::Unavailable`] when the store cannot be read.
    pub async fn org_keysets(&self) -> Result<Vec<serde_json::Value>, AppError> {
        match &self.org_keys {
            Some(keys) => keys.keysets().await,
            None => Ok(Vec::new()),
        }
    }

    /// The signed decisions of `team`'s change requests (a gateway reads them once per team for all of
    /// its connections; none when no keys are attached).
    ///
    /// # Errors
    /// [`AppError::Unavailable`] when the store cannot be read.
    pub async fn team_decisions(
        &self,
        team: edict_domain::TeamId,
    ) -> Result<Vec<serde_json::Value>, AppError> {
        match &self.org_keys {
            Some(keys) => keys.team_decisions(&team.to_string()).await,
            None => Ok(Vec::new()),
        }
    }

    /// The signed removals of `agent`, one per team its user left (none when no keys are attached).
    ///
    /// # Errors
    /// [`AppError::Unavailable`] when the store cannot be read.
    pub async fn agent_removals(
        &self,
        agent: edict_domain::AgentId,
    ) -> Result<Vec<serde_json::Value>, AppError> {
        match &self.org_keys {
            Some(keys) => keys.agent_removals(&agent.to_string()).await,
            None => Ok(Vec::new()),
        }
    }

    /// The organization's keys now, for a login answer (public).
    ///
    /// # Errors
    /// [`AppError::Unavailable`] when the keys cannot be read.
    pub async fn org_key_status(&self) -> Result<OrgKeyStatus, AppError> {
        self.org_key_store()?.status().await
    }

    /// The organization's keys, for an org_admin or an auditor.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for anyone else.
    pub async fn signing_keys(&self, principal: &Principal) -> Result<OrgKeyStatus, AppError> {
        if !principal.can_read_all() {
            return Err(AppError::Forbidden(
                "only an auditor or an org_admin may read the signing keys".to_owned(),
            ));
        }
        self.org_key_status().await
    }

    /// Starts a key rotation (an org_admin only).
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for anyone else, [`AppError::Invalid`] for an overlap out of bounds,
    /// and what [`OrgKeys::rotate`] answers.
    pub async fn rotate_signing_key(
        &self,
        principal: &Principal,
        overlap: Duration,
    ) -> Result<OrgKeyStatus, AppError> {
        principal.require_org_admin("rotate the signing key")?;
        if !(MIN_OVERLAP..=MAX_OVERLAP).contains(&overlap) {
            return Err(AppError::Invalid {
                field: "overlap_secs".to_owned(),
                message: format!(
                    "must be between {} and {} seconds",
                    MIN_OVERLAP.as_secs(),
                    MAX_OVERLAP.as_secs()
                ),
            });
        }
        let status = self.org_key_store()?.rotate(overlap).await?;
        tracing::warn!(
            actor = principal.actor(),
            next = status.rotation.as_ref().map(|r| r.next_key_id.as_str()),
            "signing key rotation started"
        );
        Ok(status)
    }
}
