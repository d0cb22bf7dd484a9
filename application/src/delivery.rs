//! The ports the agent gateway drives: where published rule sets come from ([`RulesetFeed`]) and where
//! the agents' `applied` acknowledgements and their connections are written ([`ConvergenceRecords`]).
//!
//! The gateway (`edict_api::gateway`) is their only user; they live here, not beside it, so that the
//! adapters (`edict-infrastructure`: the NATS KV watch, the in-process publisher, the convergence
//! tables) and the gateway both depend inward on this crate and never on each other (ADR 0026). The
//! composition root hands the adapters to the gateway.
//!
//! What is read back from the convergence records (per team, per agent, as of a time) is the query
//! side's port, [`ConvergenceReads`](crate::read_models::ConvergenceReads).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde_json::Value;
use std::sync::Arc;

/// One published rule set.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesetUpdate {
    /// The team id.
    pub team: String,
    /// The rule set document, as the projection stored it (signed where it was published).
    pub ruleset: Arc<Value>,
    /// Where the publication came from (empty for a republication or a read of current values).
    pub origin: Origin,
}

/// What a rule set publication carries of the command that caused it, so that the gateway's push is
/// in the command's trace and its log lines name the request (issue 18). Neither is covered by the
/// rule set's signature: they are for following a change, never for deciding anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The W3C trace context of the projector's span that published it (`None` when traces are off).
    pub traceparent: Option<String>,
    /// The id of the request whose command led to it.
    pub request_id: Option<String>,
}

/// The rule set feed failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The transport failed; the gateway opens the feed again.
    #[error("rule set feed unavailable: {0}")]
    Unavailable(String),
    /// The consumer fell behind and missed updates; the gateway re-reads what it serves.
    #[error("rule set feed lagged by {0} updates")]
    Lagged(u64),
}

/// The published rule sets, as a stream.
#[async_trait]
pub trait RulesetFeed: Send + Sync + 'static {
    /// Opens the stream of rule sets published from now on (an adapter may start with the current
    /// ones).
    ///
    /// # Errors
    /// [`FeedError::Unavailable`] when the transport cannot be opened; items are errors when it fails
    /// later ([`FeedError::Lagged`] when updates were missed).
    async fn open(&self)
    -> Result<BoxStream<'static, Result<RulesetUpdate, FeedError>>, FeedError>;

    /// The current rule set of each of `teams` the feed holds (teams it holds none of are left out):
    /// what a gateway reconciles its cache with after its stream lagged, and periodically.
    ///
    /// # Errors
    /// [`FeedError::Unavailable`] when the transport cannot be read, and from a feed that keeps no
    /// current values (the default): a gateway then drops its cache after a lag instead.
    async fn current(&self, teams: &[String]) -> Result<Vec<RulesetUpdate>, FeedError> {
        let _ = teams;
        Err(FeedError::Unavailable(
            "this feed keeps no current values".to_owned(),
        ))
    }
}

/// One agent's `applied`, as [`ConvergenceRecords::record_many`] writes it.
#[derive(Debug, Clone, Copy)]
pub struct AppliedRow<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The team.
    pub team: &'a str,
    /// The revision it applied.
    pub revision: u64,
    /// Its hash.
    pub hash: &'a str,
    /// When the gateway learned of it.
    pub at: DateTime<Utc>,
}

/// The convergence records could not be written.
#[derive(Debug, thiserror::Error)]
#[error("convergence store unavailable: {0}")]
pub struct ConvergenceUnavailable(pub String);

/// Where a gateway writes which revision of each team's rule set each agent enforces.
#[async_trait]
pub trait ConvergenceRecords: Send + Sync + 'static {
    /// Records that each row's agent enforces its revision (with its hash) of its team's rule set, and
    /// keeps an append-only history of every change. Each (agent, team) pair comes at most once per
    /// call; repeating the revision and hash an agent is recorded at keeps the first time.
    ///
    /// # Errors
    /// [`ConvergenceUnavailable`] when the store fails; nothing is retried (the agent's next `applied`
    /// records it again).
    async fn record_many(&self, applied: &[AppliedRow<'_>]) -> Result<(), ConvergenceUnavailable>;

    /// Records where each row's agent is connected and when its gateway last heard from it. A row of
    /// a connection that ended replaces only the record of that same connection (gateway and
    /// connection time), so an agent that has already reconnected elsewhere stays connected.
    ///
    /// # Errors
    /// [`ConvergenceUnavailable`] when the store fails; nothing is retried (the gateway records the
    /// connection again at its next heartbeat).
    async fn record_presence(&self, seen: &[SeenRow<'_>]) -> Result<(), ConvergenceUnavailable>;
}

/// One agent's connection, as [`ConvergenceRecords::record_presence`] writes it.
#[derive(Debug, Clone, Copy)]
pub struct SeenRow<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The gateway it is (or was) connected to.
    pub gateway: &'a str,
    /// When that connection began.
    pub connected_at: DateTime<Utc>,
    /// When the gateway last heard from the agent on it.
    pub last_seen_at: DateTime<Utc>,
    /// When the connection ended (`None`: it is open).
    pub disconnected_at: Option<DateTime<Utc>>,
}
