//! Tamper evidence for auditors: the signed checkpoints of the hash chain (`/api/v1/audit`) and the log
//! exported with its chain hashes (`/api/v1/events/export`).

use super::problem::ApiResult;
use super::security::BearerAuth;
use edict_application::Edict;
use edict_application::audit::chain::canonical_time;
use edict_application::audit::checkpoint::SignedCheckpoint;
use edict_application::audit::{ExportRange, ExportReader};
use poem::Body;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum AuditTags {
    /// Proving the history was not tampered with, and taking it away.
    Audit,
}

/// A signed checkpoint of the hash chain.
///
/// The chain: `hash_n = SHA-256(hash_{n-1} || canonical bytes of event n)` over the log in commit order,
/// `hash_0` = 32 zero bytes. The signature is ed25519 over the UTF-8 text
/// `"edict audit checkpoint v1\nnumber=<number>\nchain_index=<chain_index>\nglobal_position=<global_position>\nhash=<hash>\nsigned_at=<signed_at>\n"`.
#[derive(Debug, Clone, Object)]
pub struct CheckpointDto {
    /// 1 for the first checkpoint, then 2, … without holes.
    pub number: i64,
    /// The chain index of the event it covers (1 for the first event of the log).
    pub chain_index: i64,
    /// That event's global position.
    pub global_position: i64,
    /// The chain hash after that event (64 hex characters).
    pub hash: String,
    /// When it was signed, exactly as signed (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
    pub signed_at: String,
    /// The ed25519 public key that verifies the signature (64 hex characters). Compare it with the key
    /// you trust.
    pub public_key: String,
    /// The ed25519 signature (128 hex characters).
    pub signature: String,
}

impl From<SignedCheckpoint> for CheckpointDto {
    fn from(c: SignedCheckpoint) -> Self {
        CheckpointDto {
            number: c.number,
            chain_index: c.chain_index,
            global_position: c.global_position,
            hash: c.hash.to_hex(),
            signed_at: canonical_time(c.signed_at),
            public_key: hex::encode(c.public_key),
            signature: hex::encode(c.signature),
        }
    }
}

/// A page of checkpoints.
#[derive(Debug, Clone, Object)]
pub struct CheckpointPageDto {
    /// The checkpoints, by number.
    pub items: Vec<CheckpointDto>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next: Option<String>,
}

/// The exported log.
#[derive(ApiResponse)]
enum ExportResponse {
    /// Newline-delimited JSON, one event per line in commit order: the event (`global_position`,
    /// `transaction_id`, `aggregate_type`, `aggregate_id`, `sequence`, `event_type`, `event_version`,
    /// `payload`, `metadata`, `recorded_at`) and, once the hash chain has reached it, `chain_index`,
    /// `previous_hash` and `hash`. Verify it offline with `edict audit verify --file`.
    #[oai(status = 200, content_type = "application/x-ndjson")]
    Ok(Binary<Body>),
}

/// Tamper evidence.
pub struct AuditApi;

#[OpenApi(tag = "AuditTags::Audit")]
impl AuditApi {
    /// The signed checkpoints of the hash chain over the event log, oldest first. Auditor or org_admin.
    ///
    /// Anyone holding the public key can check a checkpoint, and with it every event up to it (export
    /// the log and run `edict audit verify --file`).
    #[oai(path = "/api/v1/audit/checkpoints", method = "get")]
    async fn checkpoints(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        /// The `next` of the previous page.
        after: Query<Option<String>>,
        /// Checkpoints per page (1 to 500, default 100).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<CheckpointPageDto>> {
        let page = edict
            .audit_checkpoints(&auth.0, after.0.as_deref(), limit.0.map(|l| l as usize))
            .await?;
        Ok(Json(CheckpointPageDto {
            items: page.items.into_iter().map(CheckpointDto::from).collect(),
            next: page.next,
        }))
    }

    /// The event log in commit order as newline-delimited JSON, streamed, with each event's chain
    /// hashes. Auditor or org_admin.
    #[oai(path = "/api/v1/events/export", method = "get")]
    async fn export(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<super::rate_limit::RateLimits>>,
        auth: BearerAuth,
        /// Only events recorded at or after this time (RFC 3339).
        since: Query<Option<chrono::DateTime<chrono::Utc>>>,
        /// Only events recorded at or before this time (RFC 3339).
        until: Query<Option<chrono::DateTime<chrono::Utc>>>,
    ) -> super::rate_limit::LimitedResult<ExportResponse> {
        limits.costly_read(&auth.0)?;
        let reader = edict.export_events(
            &auth.0,
            ExportRange {
                since: since.0,
                until: until.0,
            },
        )?;
        Ok(ExportResponse::Ok(Binary(Body::from_bytes_stream(ndjson(
            reader,
        )))))
    }
}

/// The reader's pages as NDJSON chunks; a failure ends the stream with an error (the client sees a
/// truncated body, never a line that lies). The console's download streams the same.
pub(crate) fn ndjson(
    reader: ExportReader,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        loop {
            match reader.next_page().await {
                Ok(None) => return None,
                Ok(Some(events)) if events.is_empty() => {}
                Ok(Some(events)) => {
                    let mut chunk = Vec::with_capacity(events.len() * 512);
                    for event in &events {
                        if let Err(error) = serde_json::to_writer(&mut chunk, event) {
                            tracing::error!(%error, "cannot encode an exported event");
                            return Some((Err(std::io::Error::other(error)), None));
                        }
                        chunk.push(b'\n');
                    }
                    return Some((Ok(chunk), Some(reader)));
                }
                Err(error) => {
                    tracing::error!(%error, "export stopped");
                    return Some((Err(std::io::Error::other(error)), None));
                }
            }
        }
    })
}
