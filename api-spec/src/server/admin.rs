//! Operating Edict: projections' status and rebuilds (`/api/v1/admin`).

use super::problem::ApiResult;
use super::security::BearerAuth;
use edict_application::Edict;
use edict_application::supervision::{RoleState, RoleStatus};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum AdminTags {
    /// Read models: how far behind they are, and rebuilding them.
    Admin,
}

/// Where a projection is.
#[derive(Debug, Clone, Object)]
pub struct ProjectionStatusDto {
    /// Its name.
    pub name: String,
    /// The generation being served.
    pub generation: i64,
    /// The global position of the last event applied.
    pub position: i64,
    /// The transaction id of the last event applied (with `position`, the checkpoint).
    pub transaction_id: u64,
    /// Events applied to the served generation.
    pub events_applied: i64,
    /// Events committed after the checkpoint and not applied yet.
    pub lag: i64,
    /// Why it stopped, if it did (rebuild it after fixing the cause).
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
    /// When it last moved.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The projector of this projection in the process that answers (absent when that process runs
    /// no projector role): running, or restarting after it stopped (with why), or stopped.
    #[oai(skip_serializing_if_is_none)]
    pub projector: Option<RoleStatusDto>,
}

/// A supervised role of the process that answers.
#[derive(Debug, Clone, Object)]
pub struct RoleStatusDto {
    /// `running`, `restarting` (it ended or failed and is started again after a growing pause) or
    /// `stopped` (the process is shutting down).
    pub state: String,
    /// Since when it is in that state.
    pub since: chrono::DateTime<chrono::Utc>,
    /// When a restarting role is started next.
    #[oai(skip_serializing_if_is_none)]
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How many times it was started again.
    pub restarts: u64,
    /// Why it last ended or failed, if it ever did.
    #[oai(skip_serializing_if_is_none)]
    pub last_error: Option<String>,
}

impl From<RoleStatus> for RoleStatusDto {
    fn from(status: RoleStatus) -> Self {
        RoleStatusDto {
            state: status.state.as_str().to_owned(),
            since: status.since,
            retry_at: match status.state {
                RoleState::Restarting { retry_at } => Some(retry_at),
                RoleState::Running | RoleState::Stopped => None,
            },
            restarts: status.restarts,
            last_error: status.last_error,
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Object)]
pub struct RebuildDto {
    /// The projection.
    pub name: String,
    /// The generation now served.
    pub generation: i64,
    /// Events replayed.
    pub events: u64,
    /// Documents written.
    pub docs: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Replay speed.
    pub events_per_sec: f64,
    /// Content hash of the new generation.
    pub content_hash: String,
}

/// A read model's content hash.
#[derive(Debug, Clone, Object)]
pub struct HashDto {
    /// The projection.
    pub name: String,
    /// SHA-256 over its documents in key order.
    pub content_hash: String,
}

/// Operating Edict.
pub struct AdminApi;

#[OpenApi(tag = "AdminTags::Admin")]
impl AdminApi {
    /// Every projection's checkpoint, lag and error, and the state of its projector in this process.
    /// org_admin or auditor.
    #[oai(path = "/api/v1/admin/projections", method = "get")]
    async fn projections(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
    ) -> ApiResult<Json<Vec<ProjectionStatusDto>>> {
        let statuses = edict.projection_statuses(&auth.0).await?;
        Ok(Json(
            statuses
                .into_iter()
                .map(|s| ProjectionStatusDto {
                    projector: edict
                        .roles()
                        .get(&format!("projector:{}", s.name))
                        .map(RoleStatusDto::from),
                    name: s.name,
                    generation: s.generation,
                    position: s.checkpoint.position,
                    transaction_id: s.checkpoint.transaction_id,
                    events_applied: s.events_applied,
                    lag: s.lag,
                    error: s.error,
                    updated_at: s.updated_at,
                })
                .collect(),
        ))
    }

    /// The content hash of the read model a projection serves now (equal to a rebuild's when the live
    /// projection applied every event exactly once). org_admin or auditor.
    #[oai(path = "/api/v1/admin/projections/:name/hash", method = "get")]
    async fn hash(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        name: Path<String>,
    ) -> ApiResult<Json<HashDto>> {
        let content_hash = edict.projection_hash(&auth.0, &name).await?;
        Ok(Json(HashDto {
            name: name.0,
            content_hash,
        }))
    }

    /// Replays the event store into a fresh generation of a projection and swaps it in atomically; the
    /// old one is served until then. org_admin.
    #[oai(path = "/api/v1/admin/projections/:name/rebuild", method = "post")]
    async fn rebuild(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        name: Path<String>,
    ) -> ApiResult<Json<RebuildDto>> {
        let s = edict.rebuild_projection(&auth.0, &name).await?;
        Ok(Json(RebuildDto {
            name: s.name,
            generation: s.generation,
            events: s.events,
            docs: s.docs,
            seconds: s.seconds,
            events_per_sec: s.events_per_sec,
            content_hash: s.content_hash,
        }))
    }
}
