//! What list and read endpoints share: paging and freshness parameters, and the answer shapes.

use edict_application::queries::{Fetched, Freshness, Listed, PageRequest};
use poem_openapi::Object;
use serde_json::Value;

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

/// A page of a list.
#[derive(Debug, Clone, Object)]
pub struct PageDto {
    /// The items, in a stable order.
    pub items: Vec<Value>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next: Option<String>,
    /// How fresh the list is.
    pub freshness: FreshnessDto,
}

impl From<Listed> for PageDto {
    fn from(listed: Listed) -> Self {
        PageDto {
            items: listed.items,
            next: listed.next,
            freshness: listed.freshness.into(),
        }
    }
}

/// One read-model document with its freshness under `freshness`.
pub fn with_freshness(fetched: Fetched) -> Value {
    let mut item = fetched.item;
    if let Value::Object(map) = &mut item
        && let Ok(freshness) = serde_json::to_value(FreshnessJson::from(fetched.freshness))
    {
        map.insert("freshness".into(), freshness);
    }
    item
}

#[derive(serde::Serialize)]
struct FreshnessJson {
    projection: String,
    position: i64,
    lag: i64,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Freshness> for FreshnessJson {
    fn from(f: Freshness) -> Self {
        FreshnessJson {
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
