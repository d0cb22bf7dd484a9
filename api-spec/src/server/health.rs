//! Liveness and readiness probes.

use edict_application::Edict;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum HealthTags {
    /// Probes for orchestrators.
    Health,
}

/// A probe's answer.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The store answers.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// The store does not answer.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

/// The probes.
pub struct HealthApi;

#[OpenApi(tag = "HealthTags::Health")]
impl HealthApi {
    /// Liveness: the process serves requests.
    #[oai(path = "/health/live", method = "get")]
    async fn live(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness: the event store answers.
    #[oai(path = "/health/ready", method = "get")]
    async fn ready(&self, edict: Data<&Arc<Edict>>) -> ReadyResponse {
        match edict.ready().await {
            Ok(()) => ReadyResponse::Ready(Json(Health {
                status: "ok".into(),
            })),
            Err(error) => {
                tracing::warn!(%error, "not ready");
                ReadyResponse::NotReady(Json(Health {
                    status: "unavailable".into(),
                }))
            }
        }
    }
}
