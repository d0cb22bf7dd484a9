//! The decisions of the change inbox signed for the gateways (ADR 0022, into `decision_signatures`):
//! signed as the projection hands them over, and swept for those it missed or an older key signed.

use super::KeyRing;
use crate::projection::ActiveKey;
use chrono::Utc;
use edict_api::ruleset::key_id_of;
use std::collections::HashMap;

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
