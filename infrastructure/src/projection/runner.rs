//! [`ProjectionRunner`]: keeps one projection's served generation up to date with the global log.
//!
//! Two transports feed it. In the distributed deployment the NATS consumer calls
//! [`ProjectionRunner::handle`] for every message (each carries the checkpoint of the event before it, so
//! redeliveries and gaps are detected exactly); in the embedded one [`ProjectionRunner::run_polling`]
//! catches up from the store whenever a commit is announced. Both end in the same batch transaction
//! (see the [module docs](super)): compare-and-set the checkpoint, load misses, apply, write back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent, RelayedEvent};
use edict_application::read_models::ProjectionStatus;
use edict_projections::{
    DocLoader, Docs, Projection, ProjectionError, RulesetPublisher, StoredDoc,
};

use super::RunnerError;
use super::read_models::projection_status;
use super::sql::{self, State, Tx};
use crate::store::Database;

/// Events applied per transaction when catching up from the store.
pub const CATCH_UP_BATCH: usize = 500;
/// Documents a runner writes before it first refreshes the planner's statistics; each refresh multiplies
/// the next threshold by ten (see [`sql::analyze_docs`]).
const FIRST_ANALYZE_AFTER: u64 = 1_000;

/// What [`ProjectionRunner::handle`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The event was the next one: it is applied.
    Applied,
    /// The event was applied before (a redelivery, or another instance was faster): nothing changed.
    Duplicate,
    /// The projection was behind the message's predecessor (a lost or reordered message, or a consumer
    /// that started behind the stream's retention): it caught up from the store, this event included.
    CaughtUp {
        /// Events applied while catching up.
        events: u64,
    },
}

/// Runs one projection over a [`Database`]: the live path, catch-up, rebuild, status.
///
/// Cheap to share behind an `Arc`; any number of runners (in one process or many) may run the same
/// projection at once.
pub struct ProjectionRunner {
    pub(super) db: Database,
    pub(super) projection: Arc<dyn Projection>,
    pub(super) publisher: Option<Arc<dyn RulesetPublisher>>,
    /// Documents this runner has written.
    written: AtomicU64,
    /// How many written documents trigger the next statistics refresh.
    next_analyze: AtomicU64,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("database", &self.db.kind())
            .field("publisher", &self.publisher.is_some())
            .finish()
    }
}

/// The outcome of one batch transaction.
enum Batch {
    /// Committed.
    Applied,
    /// Someone else moved the checkpoint (or stopped the projection): rolled back, reload and retry.
    Moved,
    /// The projection could not apply `events[index]`: rolled back.
    Failed {
        index: usize,
        error: ProjectionError,
    },
}

/// Loads documents of the generation being updated inside the batch's transaction.
struct TxLoader<'t> {
    tx: &'t mut Tx,
    projection: &'static str,
    generation: i64,
    /// The database error a load hit (transient, unlike a projection's own failure).
    failure: Option<String>,
}

#[async_trait]
impl DocLoader for TxLoader<'_> {
    async fn load(&mut self, kind: &str, key: &str) -> Result<Option<StoredDoc>, ProjectionError> {
        match self
            .tx
            .load_doc(self.projection, self.generation, kind, key)
            .await
        {
            Ok(doc) => Ok(doc),
            Err(sqlx::Error::Decode(error)) => Err(ProjectionError::Store(format!(
                "stored document {kind}/{key} does not decode: {error}"
            ))),
            Err(error) => {
                let reason = format!("cannot load {kind}/{key}: {error}");
                self.failure = Some(reason.clone());
                Err(ProjectionError::Store(reason))
            }
        }
    }
}

impl ProjectionRunner {
    /// A runner of `projection` over `db` (migrated). `publisher` receives every rule set document
    /// ([`edict_projections::RULESET_KIND`]) a commit writes.
    pub fn new(
        db: Database,
        projection: Arc<dyn Projection>,
        publisher: Option<Arc<dyn RulesetPublisher>>,
    ) -> Self {
        ProjectionRunner {
            db,
            projection,
            publisher,
            written: AtomicU64::new(0),
            next_analyze: AtomicU64::new(FIRST_ANALYZE_AFTER),
        }
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Creates the projection's state row (generation 1, at the start of the log) unless it exists.
    ///
    /// # Errors
    /// [`RunnerError::Store`] when the database fails.
    pub async fn ensure(&self) -> Result<(), RunnerError> {
        Ok(sql::ensure_state(&self.db, self.name()).await?)
    }

    /// The state row, created when missing.
    pub(super) async fn state(&self) -> Result<State, RunnerError> {
        if let Some(state) = sql::load_state(&self.db, self.name()).await? {
            return Ok(state);
        }
        self.ensure().await?;
        sql::load_state(&self.db, self.name())
            .await?
            .ok_or_else(|| RunnerError::Store("projection state row vanished".into()))
    }

    /// The state row of a projection that is not stopped.
    async fn running_state(&self) -> Result<State, RunnerError> {
        let state = self.state().await?;
        match &state.error {
            Some(reason) => Err(RunnerError::Stopped {
                position: state.error_position.unwrap_or(state.checkpoint.position),
                reason: reason.clone(),
            }),
            None => Ok(state),
        }
    }

    /// Handles one relayed event (the live path): applies it when it is the next one, ignores it when it
    /// was applied, catches up from the store when something before it is missing. Safe under
    /// redelivery and with several runners on one projection.
    ///
    /// # Errors
    /// [`RunnerError::Stopped`] when the projection cannot apply an event (now or before: it stays
    /// stopped until rebuilt); [`RunnerError::Store`] when the database fails or the event is not
    /// readable from the store yet (retry later).
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(projection = self.name(), position = relayed.event.global_position),
        err(level = "debug")
    )]
    pub async fn handle(&self, relayed: &RelayedEvent) -> Result<Handled, RunnerError> {
        let target = relayed.event.checkpoint();
        loop {
            let state = self.running_state().await?;
            if target <= state.checkpoint {
                return Ok(Handled::Duplicate);
            }
            if relayed.previous != state.checkpoint {
                let events = self.catch_up_to(Some(target)).await?;
                return Ok(Handled::CaughtUp { events });
            }
            if self
                .apply_or_stop(&state, std::slice::from_ref(&relayed.event))
                .await?
                .is_some()
            {
                return Ok(Handled::Applied);
            }
        }
    }

    /// Applies every event committed after the checkpoint, in batches of [`CATCH_UP_BATCH`] per
    /// transaction, until the log has no more. Returns how many events this call applied.
    ///
    /// # Errors
    /// [`RunnerError::Stopped`] when the projection cannot apply an event (now or before);
    /// [`RunnerError::Store`] when the database fails.
    #[tracing::instrument(skip_all, fields(projection = self.name(), applied), err(level = "debug"))]
    pub async fn catch_up(&self) -> Result<u64, RunnerError> {
        let applied = self.catch_up_to(None).await?;
        tracing::Span::current().record("applied", applied);
        Ok(applied)
    }

    /// Catches up until `target` is applied (or, without one, until the log has no more events).
    async fn catch_up_to(&self, target: Option<Checkpoint>) -> Result<u64, RunnerError> {
        let mut total = 0;
        loop {
            let state = self.running_state().await?;
            if target.is_some_and(|target| target <= state.checkpoint) {
                return Ok(total);
            }
            let events = self.db.read_all(state.checkpoint, CATCH_UP_BATCH).await?;
            if events.is_empty() {
                return match target {
                    None => Ok(total),
                    Some(target) => Err(RunnerError::Store(format!(
                        "event at position {} is not readable from the log yet",
                        target.position
                    ))),
                };
            }
            if let Some(applied) = self.apply_or_stop(&state, &events).await? {
                total += applied;
            }
        }
    }

    /// Applies `events` (which directly follow `state`'s checkpoint) in one transaction. When the
    /// projection fails on one of them, the ones before it are committed and the projection is stopped
    /// just before it. `None` when someone else moved the projection meanwhile (reload and retry).
    async fn apply_or_stop(
        &self,
        state: &State,
        events: &[RecordedEvent],
    ) -> Result<Option<u64>, RunnerError> {
        let mut state = state.clone();
        let mut batch = events;
        let mut failure: Option<(&RecordedEvent, ProjectionError)> = None;
        loop {
            match self.apply_batch(&state, batch).await? {
                Batch::Moved => return Ok(None),
                Batch::Failed { index, error } => {
                    failure = Some((&batch[index], error));
                    batch = &batch[..index];
                }
                Batch::Applied => {
                    let applied = batch.len() as u64;
                    let Some((event, error)) = failure else {
                        return Ok(Some(applied));
                    };
                    if let Some(last) = batch.last() {
                        state.checkpoint = last.checkpoint();
                        state.events_applied += batch.len() as i64;
                    }
                    return self.stop(&state, event, &error).await;
                }
            }
        }
    }

    /// One batch transaction: compare-and-set the checkpoint, apply, write the documents back.
    async fn apply_batch(
        &self,
        state: &State,
        events: &[RecordedEvent],
    ) -> Result<Batch, RunnerError> {
        let Some(last) = events.last() else {
            return Ok(Batch::Applied);
        };
        let name = self.name();
        let mut tx = Tx::begin(&self.db).await?;
        // First, so that this transaction holds the state row while it works: a concurrent runner
        // queues behind it and then finds the checkpoint moved.
        if !tx
            .move_checkpoint(name, state, last.checkpoint(), events.len() as i64)
            .await?
        {
            tx.rollback().await?;
            return Ok(Batch::Moved);
        }
        let mut loader = TxLoader {
            tx: &mut tx,
            projection: name,
            generation: state.generation,
            failure: None,
        };
        let mut docs = Docs::new(&mut loader);
        let mut failed = None;
        for (index, event) in events.iter().enumerate() {
            if let Err(error) = self.projection.apply(event, &mut docs).await {
                failed = Some((index, error));
                break;
            }
        }
        // A document that does not serialize fails the batch at its last event: the runner retries
        // the events before it, so the projection stops at the first event whose documents do not
        // serialize.
        let dirty = match docs.take_dirty() {
            Ok(dirty) => dirty,
            Err(error) => {
                if failed.is_none() {
                    failed = Some((events.len() - 1, error));
                }
                Vec::new()
            }
        };
        drop(docs);
        if let Some(reason) = loader.failure.take() {
            tx.rollback().await?;
            return Err(RunnerError::Store(reason));
        }
        if let Some((index, error)) = failed {
            tx.rollback().await?;
            return Ok(Batch::Failed { index, error });
        }
        tx.write_docs(name, state.generation, &dirty).await?;
        tx.commit().await?;
        self.publish(&dirty).await;
        self.wrote(dirty.len() as u64).await;
        Ok(Batch::Applied)
    }

    /// Counts written documents and refreshes the planner's statistics at 1,000, 10,000, 100,000, …
    /// (a cold catch-up fills `read_docs` long before autovacuum looks at it).
    pub(super) async fn wrote(&self, docs: u64) {
        let written = self.written.fetch_add(docs, Ordering::Relaxed) + docs;
        let threshold = self.next_analyze.load(Ordering::Relaxed);
        if written < threshold
            || self
                .next_analyze
                .compare_exchange(
                    threshold,
                    threshold.saturating_mul(10),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        if let Err(error) = sql::analyze_docs(&self.db).await {
            tracing::debug!(%error, "cannot refresh the statistics of read_docs");
        }
    }

    /// Records that the projection cannot apply `event` (if nobody moved it meanwhile).
    async fn stop(
        &self,
        state: &State,
        event: &RecordedEvent,
        error: &ProjectionError,
    ) -> Result<Option<u64>, RunnerError> {
        let reason = error.to_string();
        let mut tx = Tx::begin(&self.db).await?;
        let stopped = tx
            .stop(self.name(), state, event.global_position, &reason)
            .await?;
        tx.commit().await?;
        if !stopped {
            return Ok(None);
        }
        tracing::error!(
            projection = self.name(),
            position = event.global_position,
            event_type = %event.event_type,
            %reason,
            "projection stopped: it cannot apply an event (rebuild it once fixed)"
        );
        Err(RunnerError::Stopped {
            position: event.global_position,
            reason,
        })
    }

    /// Where the projection is: served generation, checkpoint, events applied, lag, error.
    ///
    /// # Errors
    /// [`RunnerError::Store`] when the database fails.
    pub async fn status(&self) -> Result<ProjectionStatus, RunnerError> {
        self.state().await?;
        projection_status(&self.db, self.name())
            .await?
            .ok_or_else(|| RunnerError::Store("projection state row vanished".into()))
    }

    /// The content hash ([`edict_projections::content_hash`]) of a generation's documents (the served
    /// one when `None`): equal hashes mean equal read models, whichever database or generation they are
    /// in.
    ///
    /// # Errors
    /// [`RunnerError::Store`] when the database fails.
    pub async fn content_hash(&self, generation: Option<i64>) -> Result<String, RunnerError> {
        let generation = match generation {
            Some(generation) => generation,
            None => self.state().await?.generation,
        };
        let docs = sql::generation_docs(&self.db, self.name(), generation).await?;
        Ok(edict_projections::content_hash(
            docs.iter().map(|(key, doc)| (key, doc)),
        ))
    }
}
