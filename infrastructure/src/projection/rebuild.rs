//! [`ProjectionRunner::rebuild`]: replays the whole log into a fresh generation while the served one
//! keeps being served and kept live, then swaps it in.
//!
//! 1. Claim a generation number no other rebuild uses (`last_generation + 1`) and clear leftovers of a
//!    crashed rebuild under it.
//! 2. Replay: read the log in pages of [`REBUILD_PAGE`] (a reader task fetches the next page while this
//!    one is applied), apply every event to one in-memory [`Docs`] over [`EmptyLoader`] (no SQL per event),
//!    and write the dirty documents in chunks of [`FLUSH_CHUNK`], each its own short transaction (the
//!    generation is invisible until swapped; on PostgreSQL a long writing transaction would hold back
//!    the global log's read horizon for every reader).
//! 3. Catch up to the head the same way (the in-memory cache holds the whole generation, so it still
//!    needs no loader).
//! 4. Swap, in one transaction holding the state row (so live runners wait): apply the events the
//!    served generation has and this one has not yet, write them, and set generation, checkpoint,
//!    events applied and a cleared error with a compare-and-set on the generation the rebuild started
//!    from. Live runners then find the checkpoint moved, reload and go on with the new generation.
//! 5. Delete the documents of older generations (the replaced one, and any a crashed or beaten rebuild
//!    left), in chunks (best effort), and republish rule sets. Newer generations are left alone: they
//!    may be a rebuild in progress, which will fail its swap and delete its own.

use std::time::{Duration, Instant};

use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent};
use edict_projections::{DocKey, Docs, EmptyLoader, StoredDoc};
use tokio::sync::mpsc;

use super::RunnerError;
use super::runner::ProjectionRunner;
use super::sql::{self, Tx};
use crate::store::Database;

/// Events read per page while rebuilding.
pub const REBUILD_PAGE: usize = 5_000;
/// Documents written per transaction while rebuilding.
pub const FLUSH_CHUNK: usize = 2_000;
/// Pages replayed between two writes of the dirty documents (bounds how much is written at once).
const FLUSH_EVERY_PAGES: u64 = 20;
/// Pages the reader task may fetch ahead.
const PREFETCH_PAGES: usize = 2;

/// What a rebuild is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildPhase {
    /// Reading the log and applying it in memory.
    Replaying,
    /// Writing the new generation's documents.
    Writing,
    /// Catching up the last events and swapping the new generation in.
    Swapping,
}

/// A rebuild's progress, reported after every page and phase change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// What it is doing.
    pub phase: RebuildPhase,
    /// Events applied so far.
    pub events: u64,
    /// How many events the log holds, estimated (its highest position when the rebuild started, or the
    /// events applied if more).
    pub total_estimate: u64,
    /// Events applied per second so far.
    pub events_per_sec: f64,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// The generation now served.
    pub generation: i64,
    /// Events applied to it.
    pub events: u64,
    /// Documents it holds.
    pub docs: u64,
    /// Wall-clock time of the rebuild.
    pub elapsed: Duration,
    /// Events applied per second.
    pub events_per_sec: f64,
    /// Its content hash ([`edict_projections::content_hash`]) at the checkpoint it was swapped in at.
    pub content_hash: String,
}

/// Aborts the reader task when the rebuild ends early.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The state of one rebuild in progress.
struct Replay<'r> {
    runner: &'r ProjectionRunner,
    generation: i64,
    checkpoint: Checkpoint,
    events: u64,
    started: Instant,
    total_estimate: u64,
    progress: &'r (dyn Fn(RebuildProgress) + Send + Sync),
}

impl Replay<'_> {
    fn report(&self, phase: RebuildPhase) {
        (self.progress)(RebuildProgress {
            phase,
            events: self.events,
            total_estimate: self.total_estimate.max(self.events),
            events_per_sec: per_sec(self.events, self.started.elapsed()),
        });
    }

    async fn apply(
        &mut self,
        page: &[RecordedEvent],
        docs: &mut Docs<'_>,
    ) -> Result<(), RunnerError> {
        for event in page {
            self.runner
                .projection
                .apply(event, docs)
                .await
                .map_err(|error| RunnerError::Stopped {
                    position: event.global_position,
                    reason: error.to_string(),
                })?;
        }
        if let Some(last) = page.last() {
            self.checkpoint = last.checkpoint();
            self.events += page.len() as u64;
        }
        Ok(())
    }

    /// The documents written since the last call (see [`Docs::take_dirty`]); a document that does not
    /// serialize stops the rebuild at the last event applied.
    fn take_dirty(
        &self,
        docs: &mut Docs<'_>,
    ) -> Result<Vec<(DocKey, Option<StoredDoc>)>, RunnerError> {
        docs.take_dirty().map_err(|error| RunnerError::Stopped {
            position: self.checkpoint.position,
            reason: error.to_string(),
        })
    }

    /// Writes `dirty` to the new generation, one short transaction per chunk.
    async fn flush(&self, dirty: Vec<(DocKey, Option<StoredDoc>)>) -> Result<(), RunnerError> {
        for chunk in dirty.chunks(FLUSH_CHUNK) {
            let mut tx = Tx::begin(&self.runner.db).await?;
            tx.write_docs(self.runner.name(), self.generation, chunk)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

fn per_sec(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Reads the log from the start into `pages` until a page comes back empty.
async fn read_pages(db: Database, pages: mpsc::Sender<Result<Vec<RecordedEvent>, RunnerError>>) {
    let mut after = Checkpoint::START;
    loop {
        match db.read_all(after, REBUILD_PAGE).await {
            Ok(page) => {
                let Some(last) = page.last() else {
                    return;
                };
                after = last.checkpoint();
                if pages.send(Ok(page)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = pages.send(Err(error.into())).await;
                return;
            }
        }
    }
}

impl ProjectionRunner {
    /// Replays the log into a fresh generation and swaps it in (see the [module docs](self)). The served
    /// generation keeps being served and updated meanwhile; a stopped projection is cleared once the
    /// new generation has applied every event. `progress` is called after every page.
    ///
    /// # Errors
    /// [`RunnerError::Stopped`] when the projection cannot apply an event (nothing is swapped, the served
    /// generation is untouched); [`RunnerError::Store`] when the database fails or another rebuild
    /// swapped its generation in first.
    #[tracing::instrument(skip_all, fields(projection = self.name(), generation), err)]
    pub async fn rebuild(
        &self,
        progress: &(dyn Fn(RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport, RunnerError> {
        let name = self.name();
        self.ensure().await?;
        let (served, generation) = sql::claim_generation(&self.db, name)
            .await?
            .ok_or_else(|| RunnerError::Store("projection state row vanished".into()))?;
        tracing::Span::current().record("generation", generation);
        self.delete_generation(generation, false).await?;
        let started = Instant::now();
        let total_estimate = u64::try_from(sql::last_position(&self.db).await?).unwrap_or(0);
        let mut replay = Replay {
            runner: self,
            generation,
            checkpoint: Checkpoint::START,
            events: 0,
            started,
            total_estimate,
            progress,
        };
        let mut loader = EmptyLoader;
        let mut docs = Docs::new(&mut loader);
        if let Err(error) = self.replay_and_swap(&mut replay, &mut docs, served).await {
            if let Err(cleanup) = self.delete_generation(generation, false).await {
                tracing::warn!(%cleanup, generation, "cannot delete an abandoned generation");
            }
            return Err(error);
        }
        let elapsed = started.elapsed();
        // The swap took (and so serialized) every dirty document: reading them all serializes nothing
        // and cannot fail.
        let all: Vec<_> = docs
            .all()
            .map_err(|error| {
                RunnerError::Store(format!(
                    "generation {generation} is swapped in but its documents cannot be read back: \
                     {error}"
                ))
            })?
            .collect();
        let report = RebuildReport {
            generation,
            events: replay.events,
            docs: all.len() as u64,
            elapsed,
            events_per_sec: per_sec(replay.events, elapsed),
            content_hash: edict_projections::content_hash(all.into_iter()),
        };
        tracing::info!(
            events = report.events,
            docs = report.docs,
            events_per_sec = report.events_per_sec,
            "projection rebuilt and swapped in"
        );
        if let Err(error) = self.delete_generation(generation, true).await {
            tracing::warn!(%error, "cannot delete the replaced generation (the next rebuild will)");
        }
        if let Err(error) = self.republish_all().await {
            tracing::warn!(%error, "cannot republish rule sets after the rebuild");
        }
        Ok(report)
    }

    async fn replay_and_swap(
        &self,
        replay: &mut Replay<'_>,
        docs: &mut Docs<'_>,
        served: i64,
    ) -> Result<(), RunnerError> {
        // Replay, with the next page read while this one is applied.
        let (sender, mut pages) = mpsc::channel(PREFETCH_PAGES);
        let reader = AbortOnDrop(tokio::spawn(read_pages(self.db.clone(), sender)));
        let mut replayed_pages = 0;
        while let Some(page) = pages.recv().await {
            replay.apply(&page?, docs).await?;
            replayed_pages += 1;
            if replayed_pages % FLUSH_EVERY_PAGES == 0 {
                replay.flush(replay.take_dirty(docs)?).await?;
            }
            replay.report(RebuildPhase::Replaying);
        }
        drop(reader);
        replay.report(RebuildPhase::Writing);
        replay.flush(replay.take_dirty(docs)?).await?;
        // The table just grew by a whole generation: refresh the planner's view before live runners
        // start looking documents up in it.
        if let Err(error) = sql::analyze_docs(&self.db).await {
            tracing::debug!(%error, "cannot refresh the statistics of read_docs");
        }

        // Catch up with what was appended meanwhile.
        loop {
            let page = self.db.read_all(replay.checkpoint, REBUILD_PAGE).await?;
            if page.is_empty() {
                break;
            }
            replay.apply(&page, docs).await?;
            replay.flush(replay.take_dirty(docs)?).await?;
            replay.report(RebuildPhase::Replaying);
        }

        // Swap, holding the state row: live runners wait, then find the generation changed.
        replay.report(RebuildPhase::Swapping);
        let name = self.name();
        let mut tx = Tx::begin(&self.db).await?;
        let state = tx
            .lock_state(name)
            .await?
            .ok_or_else(|| RunnerError::Store("projection state row vanished".into()))?;
        if state.generation != served {
            tx.rollback().await?;
            return Err(RunnerError::Store(format!(
                "another rebuild swapped generation {} in first",
                state.generation
            )));
        }
        // The served generation may be ahead: apply what it has (readable: it was read before).
        while replay.checkpoint < state.checkpoint {
            let page = self.db.read_all(replay.checkpoint, REBUILD_PAGE).await?;
            if page.is_empty() {
                break;
            }
            replay.apply(&page, docs).await?;
        }
        let dirty = replay.take_dirty(docs)?;
        tx.write_docs(name, replay.generation, &dirty).await?;
        let swapped = tx
            .swap(
                name,
                served,
                replay.generation,
                replay.checkpoint,
                i64::try_from(replay.events).unwrap_or(i64::MAX),
            )
            .await?;
        if !swapped {
            tx.rollback().await?;
            return Err(RunnerError::Store("the served generation changed".into()));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the documents of `generation` (or of every older generation, with `older`), in chunks,
    /// each its own statement.
    async fn delete_generation(&self, generation: i64, older: bool) -> Result<(), RunnerError> {
        while sql::delete_generation_chunk(&self.db, self.name(), generation, older).await?
            == sql::DELETE_CHUNK as u64
        {}
        Ok(())
    }
}
