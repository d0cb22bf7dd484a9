//! The shape of a query's answer: which page was asked for, the page or item answered, and how fresh
//! the read model that answered it is.

use crate::read_models::ProjectionStatus;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The largest page.
pub const MAX_PAGE: usize = 200;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;

/// Which page of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The cursor returned with the previous page.
    pub after: Option<String>,
    /// How many items (1 to 200, default 50).
    pub limit: Option<usize>,
    /// Wait until the read model has applied this global position (a command's `position`).
    pub min_position: Option<i64>,
}

/// How fresh an answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// The projection that answered.
    pub projection: String,
    /// The global position of the last event it applied.
    pub position: i64,
    /// Events committed after it that it has not applied yet.
    pub lag: i64,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

impl From<ProjectionStatus> for Freshness {
    fn from(status: ProjectionStatus) -> Self {
        Freshness {
            projection: status.name,
            position: status.checkpoint.position,
            lag: status.lag,
            updated_at: status.updated_at,
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The items.
    pub items: Vec<Value>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
    /// How fresh the list is.
    pub freshness: Freshness,
}

/// One item.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The item.
    pub item: Value,
    /// How fresh it is.
    pub freshness: Freshness,
}
