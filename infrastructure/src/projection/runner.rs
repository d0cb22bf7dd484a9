//! [`ProjectionRunner`]: keeps one projection's served generation up to date with the global log.
//!
//! Two transports feed it. In the distributed deployment the NATS consumer calls
//! [`ProjectionRunner::handle`] for every message (each carries the checkpoint of the event before it, so
//! redeliveries and gaps are detected exactly); in the embedded one [`ProjectionRunner::run_polling`]
//! catches up from the store whenever a commit is announced. Both end in the same batch transaction
//! (see the [module docs](super)): compare-and-set the checkpoint, load misses, apply, write back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use edict_application::delivery::Origin;
use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent, RelayedEvent};
use edict_application::metrics::names;
use edict_application::read_models::ProjectionStatus;
use edict_projections::{
    DocKey, DocLoader, Docs, Projection, ProjectionError, RulesetPublisher, StoredDoc,
};

use super::RunnerError;
use super::publisher::{PublicationLoop, owed_by};
use super::read_models::projection_status;
use super::sql::{self, State, Tx};
use crate::store::Database;

/// Events applied per transaction when catching up from the store.
pub const CATCH_UP_BATCH: usize = 500;
/// Documents a runner writes before it first refreshes the planner's statistics; each refresh multiplies
/// the next threshold by ten (see [`sql::analyze_docs`]).
const FIRST_ANALYZE_AFTER: u64 = 1_000;
/// The most documents a runner keeps between batches ([`DocCache`]); past it the cache starts over.
const CACHED_DOCS: usize = 20_000;

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
/// projection at once. A runner with a publisher owns the loop that retries the rule sets whose
/// publication failed (see [`publisher`](super::publisher)); it ends with the runner.
pub struct ProjectionRunner {
    pub(super) db: Database,
    pub(super) projection: Arc<dyn Projection>,
    pub(super) publisher: Option<Arc<dyn RulesetPublisher>>,
    /// Signs the decisions of the change requests a commit wrote (ADR 0022).
    pub(super) decisions: Option<Arc<dyn super::DecisionSigner>>,
    /// Documents this runner has written.
    written: AtomicU64,
    /// How many written documents trigger the next statistics refresh.
    next_analyze: AtomicU64,
    /// The documents of the last batch this runner committed, for the next one.
    cache: Mutex<Option<DocCache>>,
    /// Publishes the rule set revisions still owed to the gateways (started with the first rule set).
    pub(super) publication: PublicationLoop,
}

/// What this runner committed last: the state it left (with no error) and the documents (and known
/// absences) of its generation as they stand there.
///
/// Only a transaction that moves the checkpoint writes the served generation's documents (a rebuild
/// writes a new generation and swaps it in, which changes the generation). So when a batch moves the
/// checkpoint from exactly this state, nobody wrote in between and every entry is still what the store
/// holds: the batch loads only what the cache lacks. A batch that starts anywhere else drops the cache.
/// On the live path this saves the single-row loads of the documents every event touches again (a rule
/// set, its team, its rules).
///
/// The state also spares the live path a read of the state row per message: a batch starts from it,
/// and when someone else moved the projection meanwhile (another runner, a rebuild, a stop) the
/// compare-and-set fails and the batch reads the row again.
struct DocCache {
    state: State,
    docs: HashMap<DocKey, Option<StoredDoc>>,
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

/// Loads documents of the generation being updated: from the runner's cache, else from the store (and
/// then remembers them in the cache).
struct CachedLoader<'t> {
    db: &'t Database,
    projection: &'static str,
    generation: i64,
    cache: &'t mut HashMap<DocKey, Option<StoredDoc>>,
    /// The database error a load hit (transient, unlike a projection's own failure).
    failure: Option<String>,
}

#[async_trait]
impl DocLoader for CachedLoader<'_> {
    async fn load(&mut self, kind: &str, key: &str) -> Result<Option<StoredDoc>, ProjectionError> {
        let id = (kind.to_owned(), key.to_owned());
        if let Some(doc) = self.cache.get(&id) {
            return Ok(doc.clone());
        }
        match sql::load_doc(self.db, self.projection, self.generation, kind, key).await {
            Ok(doc) => {
                self.cache.insert(id, doc.clone());
                Ok(doc)
            }
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
            decisions: None,
            written: AtomicU64::new(0),
            next_analyze: AtomicU64::new(FIRST_ANALYZE_AFTER),
            cache: Mutex::new(None),
            publication: PublicationLoop::default(),
        }
    }

    /// Signs the decisions of every change request document a commit writes with `signer`.
    #[must_use]
    pub fn with_decision_signer(mut self, signer: Arc<dyn super::DecisionSigner>) -> Self {
        self.decisions = Some(signer);
        self
    }

    /// The cached documents when they are valid for a batch that starts at `state` (else empty); the
    /// cache is taken out meanwhile, so a concurrent batch of this runner starts without one.
    fn take_cache(&self, state: &State) -> HashMap<DocKey, Option<StoredDoc>> {
        let cache = self.cache.lock().map(|mut c| c.take()).unwrap_or(None);
        match cache {
            Some(cache)
                if cache.state.generation == state.generation
                    && cache.state.checkpoint == state.checkpoint =>
            {
                cache.docs
            }
            _ => HashMap::new(),
        }
    }

    /// Keeps `docs` (updated with what the batch wrote) for the next batch, which starts where this
    /// one, which started at `from` and applied `events`, left the projection.
    fn keep_cache(
        &self,
        from: &State,
        events: &[RecordedEvent],
        mut docs: HashMap<DocKey, Option<StoredDoc>>,
        written: &[(DocKey, Option<StoredDoc>)],
    ) {
        let Some(last) = events.last() else {
            return;
        };
        if docs.len() + written.len() > CACHED_DOCS {
            docs.clear();
        }
        for (id, doc) in written {
            docs.insert(id.clone(), doc.clone());
        }
        let mut state = from.clone();
        state.checkpoint = last.checkpoint();
        state.events_applied += events.len() as i64;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some(DocCache { state, docs });
        }
    }

    /// Where this runner left the projection, if it knows; else the state row as read.
    async fn known_state(&self) -> Result<State, RunnerError> {
        let known = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.as_ref().map(|c| c.state.clone()));
        match known {
            Some(state) => Ok(state),
            None => self.running_state().await,
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
        // Where this runner left it first (no read); the row itself once a batch found it moved.
        let mut state = self.known_state().await?;
        loop {
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
            state = self.running_state().await?;
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
        let mut state = self.known_state().await?;
        loop {
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
            match self.apply_or_stop(&state, &events).await? {
                Some(applied) => {
                    total += applied;
                    state = self.known_state().await?;
                }
                None => state = self.running_state().await?,
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
        let result = self.apply_unmeasured(state, events).await;
        match &result {
            Ok(Some(applied)) => {
                metrics::counter!(names::PROJECTION_APPLIED, "projection" => self.name())
                    .increment(*applied);
            }
            Ok(None) => {}
            Err(_) => {
                metrics::counter!(names::PROJECTION_ERRORS, "projection" => self.name())
                    .increment(1);
            }
        }
        result
    }

    /// [`Self::apply_or_stop`], unmeasured.
    async fn apply_unmeasured(
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
        let follows = self.projection.follows();
        if !follows.is_empty()
            && !events
                .iter()
                .any(|event| follows.contains(&event.aggregate_type.as_str()))
        {
            // Nothing here for this projection: move the checkpoint alone, one statement.
            let moved = sql::move_checkpoint(
                &self.db,
                name,
                state,
                last.checkpoint(),
                events.len() as i64,
            )
            .await?;
            if !moved {
                return Ok(Batch::Moved);
            }
            // The documents did not change: the cache is valid at the new checkpoint too.
            let cached = self.take_cache(state);
            self.keep_cache(state, events, cached, &[]);
            return Ok(Batch::Applied);
        }
        // Apply first, loading outside any transaction; the commit's compare-and-set then proves that
        // nobody moved the projection since `state`, so nothing loaded changed meanwhile.
        let mut cached = self.take_cache(state);
        let mut loader = CachedLoader {
            db: &self.db,
            projection: name,
            generation: state.generation,
            cache: &mut cached,
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
            return Err(RunnerError::Store(reason));
        }
        if let Some((index, error)) = failed {
            return Ok(Batch::Failed { index, error });
        }
        let moved = sql::commit_batch(
            &self.db,
            name,
            state,
            last.checkpoint(),
            events.len() as i64,
            &dirty,
            &owed_by(&dirty),
        )
        .await?;
        if !moved {
            return Ok(Batch::Moved);
        }
        self.keep_cache(state, events, cached, &dirty);
        self.publish(&dirty, &origin_of(last)).await;
        self.sign_decisions(&dirty).await;
        self.sign_removals(events).await;
        self.wrote(dirty.len() as u64);
        Ok(Batch::Applied)
    }

    /// Counts written documents and refreshes the planner's statistics at 1,000, 10,000, 100,000, …
    /// (a cold catch-up fills `read_docs` long before autovacuum looks at it), in the background: an
    /// `ANALYZE` takes tens of milliseconds, which the live path does not wait for.
    pub(super) fn wrote(&self, docs: u64) {
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
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Err(error) = sql::analyze_docs(&db).await {
                tracing::debug!(%error, "cannot refresh the statistics of read_docs");
            }
        });
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

/// The origin of a batch's publications: its last event's request and trace. The current span is the
/// parent when it is in that trace (the NATS projector runs the batch in that event's `project`
/// span); otherwise (the embedded runner's catch-up pass) the request's span the event recorded is.
fn origin_of(last: &RecordedEvent) -> Origin {
    let recorded = |key: &str| {
        last.metadata
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let requested = recorded("traceparent");
    let current = crate::telemetry::traceparent_of(&tracing::Span::current());
    // `00-<trace id>-<span id>-<flags>`: the trace id is the second field.
    let trace_id = |traceparent: &str| traceparent.split('-').nth(1).map(str::to_owned);
    let traceparent = match (current, requested) {
        (Some(current), Some(requested)) if trace_id(&current) == trace_id(&requested) => {
            Some(current)
        }
        (current, requested) => requested.or(current),
    };
    Origin {
        traceparent,
        request_id: recorded("request_id"),
    }
}
