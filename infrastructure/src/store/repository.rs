//! [`EventRepository`]: one cqrs-es repository type over either backend.
//!
//! Every aggregate is stored with `PersistedEventStore<EventRepository, A>`, built with
//! `PersistedEventStore::new_event_store(repo)` only. The snapshot and aggregate stores of cqrs-es 0.5.0
//! apply each new event twice before they serialize the snapshot, so their state is wrong; in event-store
//! mode the aggregate is rebuilt from its events, which is correct (and cheap: aggregates are small).
//!
//! The enum only delegates: the SQL, the error mapping (a primary-key violation is
//! `PersistenceError::OptimisticLockError`, hence `AggregateError::AggregateConflict`) and the streaming
//! are postgres-es' and sqlite-es'.
//!
//! Do not replay through `stream_events` / `stream_all_events` in production code: both crates
//! `unwrap()` database errors inside the task that feeds the stream, so a failure silently truncates it,
//! and `stream_all_events` is ordered by per-aggregate sequence, not by commit. Read the global log
//! ([`super::global_log`]) instead.

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;

/// The cqrs-es repository of Edict's event store, PostgreSQL or SQLite.
///
/// Build it with [`Database::event_repository`](super::Database::event_repository).
pub enum EventRepository {
    /// postgres-es over the `events` table.
    Postgres(PostgresEventRepository),
    /// sqlite-es over the `events` table.
    Sqlite(SqliteEventRepository),
}

impl std::fmt::Debug for EventRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventRepository::Postgres(_) => f.write_str("EventRepository::Postgres"),
            EventRepository::Sqlite(_) => f.write_str("EventRepository::Sqlite"),
        }
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            EventRepository::Postgres(repo) => repo.get_events::<A>(aggregate_id).await,
            EventRepository::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            EventRepository::Postgres(repo) => {
                repo.get_last_events::<A>(aggregate_id, last_sequence).await
            }
            EventRepository::Sqlite(repo) => {
                repo.get_last_events::<A>(aggregate_id, last_sequence).await
            }
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            EventRepository::Postgres(repo) => repo.get_snapshot::<A>(aggregate_id).await,
            EventRepository::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            EventRepository::Postgres(repo) => repo.persist::<A>(events, snapshot_update).await,
            EventRepository::Sqlite(repo) => repo.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            EventRepository::Postgres(repo) => repo.stream_events::<A>(aggregate_id).await,
            EventRepository::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            EventRepository::Postgres(repo) => repo.stream_all_events::<A>().await,
            EventRepository::Sqlite(repo) => repo.stream_all_events::<A>().await,
        }
    }
}
