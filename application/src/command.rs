//! The command executor: load an aggregate from its events, check the version the caller expects, let the
//! aggregate decide, commit its events with the request's metadata.
//!
//! It replaces `cqrs_es::CqrsFramework` for two reasons: the framework returns nothing, and a caller needs
//! the new version (for `ETag`s and read-your-writes); and it cannot honour an expected version
//! (`If-Match`). It never dispatches to `Query`s: read models are fed from the global log by the relay, so
//! a crash between commit and dispatch cannot lose an event.

use crate::metadata::Metadata;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore, event_sink::EventSink};
use edict_domain::Versioned;
use std::fmt;

/// How often a command without an expected version is decided again after losing a race to a
/// concurrent command on the same aggregate.
const CONFLICT_RETRIES: usize = 3;

/// What a successful command changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The aggregate's version after the command (the sequence of its last event).
    pub version: u64,
    /// How many events the command appended (0 when it changed nothing).
    pub events: usize,
}

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a domain rule is broken.
    #[error(transparent)]
    Domain(E),
    /// The aggregate is not at the version the caller expected, or a concurrent command won the race.
    #[error("version conflict: the current version is {current}")]
    Conflict {
        /// The version the aggregate is at now.
        current: u64,
    },
    /// The event store failed; nothing was written.
    #[error("event store failure: {0}")]
    Store(String),
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(e) => CommandError::Domain(e),
            // The caller of `From` does not know the current version; `execute` fills it in.
            AggregateError::AggregateConflict => CommandError::Conflict { current: 0 },
            other => CommandError::Store(other.to_string()),
        }
    }
}

/// Executes commands of one aggregate type against an event store.
pub struct CommandService<A: Aggregate, ES: EventStore<A>> {
    store: ES,
    services: A::Services,
}

impl<A: Aggregate, ES: EventStore<A>> fmt::Debug for CommandService<A, ES> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandService")
            .field("aggregate", &A::TYPE)
            .finish()
    }
}

impl<A, ES> CommandService<A, ES>
where
    A: Aggregate + Versioned,
    ES: EventStore<A>,
{
    /// A service over `store`, handing `services` to the aggregate's `handle`.
    pub fn new(store: ES, services: A::Services) -> Self {
        Self { store, services }
    }

    /// The aggregate's current state, rebuilt from its events (the default state when it has none).
    ///
    /// # Errors
    /// [`CommandError::Store`] when the store cannot be read.
    pub async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>> {
        let mut context = self.store.load_aggregate(id).await?;
        Ok(std::mem::take(context.aggregate()))
    }

    /// Decides `command` on the aggregate `id` and commits the resulting events with `metadata`.
    ///
    /// With `expected_version`, the command applies only if the aggregate is at exactly that version
    /// (an `If-Match`). Without it, a command that loses a race to a concurrent one is decided again on
    /// the new state, a few times at most.
    ///
    /// # Errors
    /// [`CommandError::Domain`] when the aggregate refuses, [`CommandError::Conflict`] (with the current
    /// version) on a version mismatch, [`CommandError::Store`] when the store fails.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        expected_version: Option<u64>,
        metadata: &Metadata,
    ) -> Result<Committed, CommandError<A::Error>>
    where
        A::Command: Clone,
        for<'c> &'c A::Command: Into<&'static str>,
    {
        let name: &'static str = (&command).into();
        let started = std::time::Instant::now();
        let result = self.decide(id, command, expected_version, metadata).await;
        let labels = [
            ("aggregate", A::TYPE),
            ("command", name),
            ("outcome", crate::metrics::outcome(&result)),
        ];
        metrics::counter!(crate::metrics::names::COMMANDS, &labels).increment(1);
        metrics::histogram!(crate::metrics::names::COMMAND_DURATION, &labels)
            .record(started.elapsed());
        if let Ok(committed) = &result
            && committed.events > 0
        {
            metrics::counter!(crate::metrics::names::EVENTS_APPENDED, "aggregate" => A::TYPE)
                .increment(committed.events as u64);
        }
        result
    }

    async fn decide(
        &self,
        id: &str,
        command: A::Command,
        expected_version: Option<u64>,
        metadata: &Metadata,
    ) -> Result<Committed, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut context = self.store.load_aggregate(id).await?;
            let aggregate = context.aggregate();
            let current = aggregate.version();
            if let Some(expected) = expected_version
                && expected != current
            {
                return Err(CommandError::Conflict { current });
            }
            let sink = EventSink::<A>::default();
            aggregate
                .handle(command.clone(), &self.services, &sink)
                .await
                .map_err(CommandError::Domain)?;
            let version = aggregate.version();
            let events = sink.collect().await;
            let count = events.len();
            if count == 0 {
                return Ok(Committed { version, events: 0 });
            }
            match self.store.commit(events, context, metadata.to_map()).await {
                Ok(_) => {
                    return Ok(Committed {
                        version,
                        events: count,
                    });
                }
                Err(AggregateError::AggregateConflict) => {
                    if expected_version.is_some() || attempt > CONFLICT_RETRIES {
                        let current = self.load(id).await?.version();
                        return Err(CommandError::Conflict { current });
                    }
                    tracing::debug!(
                        aggregate = A::TYPE,
                        id,
                        attempt,
                        "lost a race, deciding again"
                    );
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
}

/// The command executor as an object, so use cases do not name the store's type.
#[async_trait::async_trait]
pub trait Commands<A: Aggregate>: Send + Sync {
    /// See [`CommandService::load`].
    ///
    /// # Errors
    /// [`CommandError::Store`] when the store cannot be read.
    async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>>;

    /// See [`CommandService::execute`].
    ///
    /// # Errors
    /// As [`CommandService::execute`].
    async fn execute(
        &self,
        id: &str,
        command: A::Command,
        expected_version: Option<u64>,
        metadata: &Metadata,
    ) -> Result<Committed, CommandError<A::Error>>;
}

#[async_trait::async_trait]
impl<A, ES> Commands<A> for CommandService<A, ES>
where
    A: Aggregate + Versioned + 'static,
    A::Command: Clone + Send + Sync,
    for<'c> &'c A::Command: Into<&'static str>,
    A::Error: Send,
    ES: EventStore<A>,
    ES::AC: Send,
{
    async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>> {
        CommandService::load(self, id).await
    }

    async fn execute(
        &self,
        id: &str,
        command: A::Command,
        expected_version: Option<u64>,
        metadata: &Metadata,
    ) -> Result<Committed, CommandError<A::Error>> {
        CommandService::execute(self, id, command, expected_version, metadata).await
    }
}
