//! The organization's rule set signing keys (`/api/v1/signing-keys`): what agents trust, and a
//! rotation (ADR 0021).

use super::problem::ApiResult;
use super::security::BearerAuth;
use edict_application::Edict;
use edict_application::signing::{OrgKeyInfo, OrgKeyStatus};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use std::sync::Arc;
use std::time::Duration;

#[derive(Tags)]
enum KeyTags {
    /// The keys that sign rule sets.
    SigningKeys,
}

/// A key's part in the organization's key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum KeyStateDto {
    /// Signs rule sets.
    Active,
    /// Announced ahead of use: agents trust it, nothing is signed with it yet.
    Next,
    /// The previous active key: agents trust it until it is retired.
    Retiring,
}

/// One of the organization's keys.
#[derive(Debug, Clone, Object)]
pub struct SigningKeyDto {
    /// Its id (the fingerprint `edict-agent login` prints and `--org-key` takes).
    pub key_id: String,
    /// The ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Its state.
    pub state: KeyStateDto,
}

/// A rotation under way.
#[derive(Debug, Clone, Object)]
pub struct RotationDto {
    /// The key that becomes active.
    pub next_key_id: String,
    /// When it becomes active: every rule set is signed again with it then.
    pub activate_at: String,
    /// When the previous key is retired (agents stop trusting it for anything new).
    pub retire_at: String,
}

/// The organization's keys.
#[derive(Debug, Clone, Object)]
pub struct SigningKeysDto {
    /// The latest key set's sequence (each key set is signed by the key active when it was issued,
    /// and reaches agents through the gateways).
    pub sequence: u64,
    /// The keys agents trust now.
    pub keys: Vec<SigningKeyDto>,
    /// The rotation under way, if any.
    #[oai(skip_serializing_if_is_none)]
    pub rotation: Option<RotationDto>,
}

fn key_dto(key: OrgKeyInfo) -> SigningKeyDto {
    SigningKeyDto {
        state: match key.state.as_str() {
            "next" => KeyStateDto::Next,
            "retiring" => KeyStateDto::Retiring,
            _ => KeyStateDto::Active,
        },
        key_id: key.key_id,
        public_key: key.public_key,
    }
}

impl From<OrgKeyStatus> for SigningKeysDto {
    fn from(status: OrgKeyStatus) -> Self {
        SigningKeysDto {
            sequence: status.sequence,
            keys: status.keys.into_iter().map(key_dto).collect(),
            rotation: status.rotation.map(|rotation| RotationDto {
                next_key_id: rotation.next_key_id,
                activate_at: rotation.activate_at.to_rfc3339(),
                retire_at: rotation.retire_at.to_rfc3339(),
            }),
        }
    }
}

/// A rotation to start.
#[derive(Debug, Clone, Object)]
pub struct RotateDto {
    /// Seconds between the steps (2 to 7,776,000; default 86,400): the next key is announced at
    /// once, becomes active after this long, and the previous key is retired after as long again.
    #[oai(default = "default_overlap")]
    #[oai(nullable)]
    pub overlap_secs: u64,
}

fn default_overlap() -> u64 {
    86_400
}

/// The signing keys.
#[derive(Debug, Clone, Copy)]
pub struct KeysApi;

#[OpenApi(tag = "KeyTags::SigningKeys")]
impl KeysApi {
    /// The organization's rule set signing keys and the rotation under way. Auditor or org_admin.
    #[oai(path = "/api/v1/signing-keys", method = "get")]
    async fn signing_keys(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<SigningKeysDto>> {
        Ok(Json(edict.signing_keys(&auth.0).await?.into()))
    }

    /// Starts a rotation of the rule set signing key (org_admin; `edict keys rotate`). A next key is
    /// announced to agents at once, signed by the active key; after `overlap_secs` it becomes active
    /// and every rule set is signed again with it; after as long again the previous key is retired.
    /// The next key is `EDICT_RULESET_SIGNING_KEY_NEXT` when the server holds one, else a new key kept
    /// in the store. 422 `rotation_in_progress` while a rotation runs.
    #[oai(path = "/api/v1/signing-keys/rotate", method = "post")]
    async fn rotate(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        body: Json<RotateDto>,
    ) -> ApiResult<Json<SigningKeysDto>> {
        let status = edict
            .rotate_signing_key(&auth.0, Duration::from_secs(body.overlap_secs))
            .await?;
        Ok(Json(status.into()))
    }
}
