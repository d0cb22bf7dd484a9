//! The read-model port: documents the projections wrote, as the query use cases read them, and each
//! projection's progress (so a read can say how fresh it is, or wait until it covers a write).

use crate::event_log::{Checkpoint, LogBound};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// A filter of documents, applied by the store in its query (every set field must match): the indexed
/// columns (`team`, `status`) and fields of the documents themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocFilter {
    /// Only documents of this team.
    pub team: Option<String>,
    /// Only documents with this status.
    pub status: Option<String>,
    /// Only documents whose `user` field is this id (the owner of an agent or a change request).
    pub owner: Option<String>,
    /// Only documents whose `members` object has this user id as a key (a team's member).
    pub member: Option<String>,
    /// Only documents whose `layer` field is this (rules).
    pub layer: Option<String>,
    /// Only documents whose `tags` array holds this tag (rules).
    pub tag: Option<String>,
    /// Only documents with this text in `name`, `description`, `content` or a tag, ignoring case
    /// (ASCII case only on SQLite).
    pub text: Option<String>,
}

/// A document in a list, with its sort key (the cursor that resumes after it).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedDoc {
    /// The document's sort key.
    pub sort_key: String,
    /// The document.
    pub doc: Value,
}

/// A page of documents.
#[derive(Debug, Clone, PartialEq)]
pub struct DocPage {
    /// The documents, in sort-key order.
    pub docs: Vec<ListedDoc>,
    /// The sort key to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Where a projection is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// The generation being served.
    pub generation: i64,
    /// The last event applied.
    pub checkpoint: Checkpoint,
    /// Events applied to the served generation.
    pub events_applied: i64,
    /// Events committed to the log after the checkpoint (the lag).
    pub lag: i64,
    /// Why it stopped, if it did.
    pub error: Option<String>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// Why a read model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The projection is unknown.
    #[error("unknown projection {0}")]
    UnknownProjection(String),
    /// The store failed.
    #[error("read model unavailable: {0}")]
    Unavailable(String),
}

/// Reads the served generation of each projection.
#[async_trait]
pub trait ReadModels: Send + Sync {
    /// One document.
    ///
    /// # Errors
    /// [`ReadModelError`].
    async fn get(
        &self,
        projection: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<Value>, ReadModelError>;

    /// Documents of `kind` matching `filter`, after the sort key `after`, at most `limit`.
    ///
    /// # Errors
    /// [`ReadModelError`].
    async fn list(
        &self,
        projection: &str,
        kind: &str,
        filter: &DocFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DocPage, ReadModelError>;

    /// The status of one projection.
    ///
    /// # Errors
    /// [`ReadModelError`].
    async fn status(&self, projection: &str) -> Result<ProjectionStatus, ReadModelError>;

    /// Whether `projection` has applied the event at global position `position` (false when that event
    /// is not committed yet).
    ///
    /// # Errors
    /// [`ReadModelError`].
    async fn covers(&self, projection: &str, position: i64) -> Result<bool, ReadModelError>;
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildSummary {
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
    /// Events per second.
    pub events_per_sec: f64,
    /// The content hash of the new generation.
    pub content_hash: String,
}

/// Operating the projections: which exist, and rebuilding one.
#[async_trait]
pub trait ProjectionControl: Send + Sync {
    /// The names of every projection.
    fn names(&self) -> Vec<String>;

    /// Replays the store into a fresh generation of `name` and swaps it in.
    ///
    /// # Errors
    /// [`ReadModelError::UnknownProjection`], or [`ReadModelError::Unavailable`] when the rebuild fails.
    async fn rebuild(&self, name: &str) -> Result<RebuildSummary, ReadModelError>;

    /// The content hash of the generation `name` serves now (compare it with a rebuild's).
    ///
    /// # Errors
    /// [`ReadModelError`].
    async fn content_hash(&self, name: &str) -> Result<String, ReadModelError>;

    /// The document `(kind, key)` of projection `name` as it was after the log up to `bound`, replayed
    /// in memory through the projection's code (not read from the live read model). The default knows
    /// no projection.
    ///
    /// # Errors
    /// [`ReadModelError::UnknownProjection`], or [`ReadModelError::Unavailable`] when the log cannot be
    /// read or an event does not apply.
    async fn document_as_of(
        &self,
        name: &str,
        _kind: &str,
        _key: &str,
        _bound: LogBound,
    ) -> Result<PastDocument, ReadModelError> {
        Err(ReadModelError::UnknownProjection(name.to_owned()))
    }
}

/// A read-model document as it was at a past point of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct PastDocument {
    /// The document (`None`: it did not exist then).
    pub doc: Option<Value>,
    /// The checkpoint of the last event replayed (`None`: none was).
    pub through: Option<Checkpoint>,
    /// How many events were replayed.
    pub events: u64,
}

/// Which revision of a team's rule set an agent enforces, and since when (recorded from the agents'
/// `applied` acknowledgements, not as events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    /// The agent.
    pub agent_id: String,
    /// The team.
    pub team_id: String,
    /// The revision it enforces.
    pub revision: u64,
    /// That revision's hash.
    pub hash: String,
    /// When it applied it.
    pub applied_at: DateTime<Utc>,
}

/// Reads the convergence records.
#[async_trait]
pub trait ConvergenceReads: Send + Sync {
    /// Every agent enforcing a revision of `team`'s rule set.
    ///
    /// # Errors
    /// [`ReadModelError::Unavailable`].
    async fn by_team(&self, team: &str) -> Result<Vec<Enforcement>, ReadModelError>;

    /// Every rule set `agent` enforces.
    ///
    /// # Errors
    /// [`ReadModelError::Unavailable`].
    async fn by_agent(&self, agent: &str) -> Result<Vec<Enforcement>, ReadModelError>;

    /// Every rule set `agent` enforced at `at`: per team, the last revision it had applied by then
    /// (from the append-only history of its acknowledgements).
    ///
    /// # Errors
    /// [`ReadModelError::Unavailable`].
    async fn by_agent_as_of(
        &self,
        agent: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<Enforcement>, ReadModelError>;

    /// Where each of `agents` is (or was last) connected; agents never connected are left out.
    ///
    /// # Errors
    /// [`ReadModelError::Unavailable`].
    async fn presence(&self, agents: &[String]) -> Result<Vec<Presence>, ReadModelError>;
}

/// Where an agent is (or was last) connected, as its gateway recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// The agent.
    pub agent_id: String,
    /// The gateway of its last connection.
    pub gateway: String,
    /// When that connection began.
    pub connected_at: DateTime<Utc>,
    /// When the gateway last heard from it.
    pub last_seen_at: DateTime<Utc>,
    /// When that connection ended (`None`: open as far as the gateway last wrote; a gateway that died
    /// wrote no end, so a reader also looks at how old `last_seen_at` is).
    pub disconnected_at: Option<DateTime<Utc>>,
}
