//! What list and read endpoints share: paging and freshness parameters, and the freshness of a list
//! (the typed pages and documents are in `documents`).

use edict_application::queries::{Freshness, PageRequest};
use poem_openapi::Object;

/// How fresh an answer is: read models are updated from the event log asynchronously.
#[derive(Debug, Clone, Object)]
pub struct FreshnessDto {
    /// The read model that answered.
    pub projection: String,
    /// The global position of the last event it applied (compare with a command's `position`, or send
    /// it as `min_position` to wait for it).
    pub position: i64,
    /// Events committed after it that it has not applied yet.
    pub lag: i64,
    /// When it last moved.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Freshness> for FreshnessDto {
    fn from(f: Freshness) -> Self {
        FreshnessDto {
            projection: f.projection,
            position: f.position,
            lag: f.lag,
            updated_at: f.updated_at,
        }
    }
}

/// The paging parameters as the use cases take them.
pub fn page(after: Option<String>, limit: Option<u32>, min_position: Option<i64>) -> PageRequest {
    PageRequest {
        after,
        limit: limit.map(|l| l as usize),
        min_position,
    }
}
