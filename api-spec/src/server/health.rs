//! Liveness and readiness probes.
//!
//! Readiness tells the truth: the store answers a real query, NATS is connected when the process uses
//! it, and every role of the process runs (none is waiting to be started again after it failed). A
//! process that is not ready answers 503 as `application/problem+json` naming each check that failed.

use edict_application::Edict;
use edict_application::supervision::Readiness;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

/// Seconds a client is told to wait before it asks again when the process is not ready.
const RETRY_AFTER_SECS: u32 = 5;

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

/// One check readiness made.
#[derive(Debug, Clone, Object)]
pub struct ReadinessCheck {
    /// What was checked: `store`, `nats`, or `role:<name>` (`role:api`, `role:relay`, `role:gateway`,
    /// `role:audit`, `role:scheduler`, `role:projector:<projection>`).
    pub name: String,
    /// `ok` or `failed`.
    pub status: String,
    /// Why it failed.
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
}

/// The process is ready: every check passed.
#[derive(Debug, Object)]
pub struct Ready {
    /// `ok`.
    pub status: String,
    /// Every check made.
    pub checks: Vec<ReadinessCheck>,
}

/// The process is not ready (a problem detail, RFC 9457, with every check made).
#[derive(Debug, Object)]
pub struct NotReady {
    /// `urn:edict:problem:not_ready`.
    #[oai(rename = "type")]
    pub kind: String,
    /// `Service Unavailable`.
    pub title: String,
    /// 503.
    pub status: u16,
    /// The checks that failed, with why (e.g. `store: no answer within 2 s`).
    pub detail: String,
    /// Every check made.
    pub checks: Vec<ReadinessCheck>,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The store answers, NATS (when used) is connected and every role of the process runs.
    #[oai(status = 200)]
    Ready(Json<Ready>),
    /// Something this process needs failed: `detail` and `checks` name it.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(
        Json<NotReady>,
        /// Seconds to wait before asking again.
        #[oai(header = "Retry-After")]
        u32,
    ),
}

/// The probes.
pub struct HealthApi;

fn checks(readiness: &Readiness) -> Vec<ReadinessCheck> {
    readiness
        .checks
        .iter()
        .map(|check| ReadinessCheck {
            name: check.name.clone(),
            status: if check.failure.is_some() {
                "failed"
            } else {
                "ok"
            }
            .to_owned(),
            reason: check.failure.clone(),
        })
        .collect()
}

#[OpenApi(tag = "HealthTags::Health")]
impl HealthApi {
    /// Liveness: the process serves requests.
    #[oai(path = "/health/live", method = "get")]
    async fn live(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness: the event store answers, NATS is connected (when configured) and every role of this
    /// process runs; else 503 naming what failed.
    #[oai(path = "/health/ready", method = "get")]
    async fn ready(&self, edict: Data<&Arc<Edict>>) -> ReadyResponse {
        let readiness = edict.readiness().await;
        if readiness.is_ready() {
            return ReadyResponse::Ready(Json(Ready {
                status: "ok".into(),
                checks: checks(&readiness),
            }));
        }
        let detail = readiness
            .failed()
            .map(|check| {
                format!(
                    "{}: {}",
                    check.name,
                    check.failure.as_deref().unwrap_or("failed")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(%detail, "not ready");
        ReadyResponse::NotReady(
            Json(NotReady {
                kind: "urn:edict:problem:not_ready".into(),
                title: "Service Unavailable".into(),
                status: 503,
                detail,
                checks: checks(&readiness),
            }),
            RETRY_AFTER_SECS,
        )
    }
}
