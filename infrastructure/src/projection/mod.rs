//! The projection runner and the read-model store: projections of the global log kept in the `read_docs`
//! table, PostgreSQL or SQLite, with the same code.
//!
//! # Generations, checkpoints and compare-and-set
//!
//! Every projection has one row in `projection_state`: the generation being served, the checkpoint of the
//! last event applied to it, and an error when it stopped. Its documents live in `read_docs` under
//! `(projection, generation)`. Every change to the served generation is a batch: the runner applies the
//! events to documents it loads outside any transaction (most come from its cache of what it committed
//! last), then commits in one transaction that first moves the checkpoint with a compare-and-set
//! (`UPDATE … WHERE name, generation, checkpoint = the ones this batch was computed from AND error IS
//! NULL`) and then writes the dirty documents. Only such a commit writes the served generation, so when
//! the compare-and-set matches, nothing the batch loaded changed since its checkpoint. When it matches no
//! row someone else moved the projection (another instance applied the batch, a rebuild swapped
//! generations or the projection stopped): the transaction is rolled back and the runner reloads and
//! re-evaluates. An event is thus applied exactly once per generation, whatever the transport does. A
//! batch without an event of the aggregate types the projection follows only moves the checkpoint (one
//! statement).
//!
//! On PostgreSQL the runners write through a pool of their own whose commits do not wait for the WAL
//! flush ([`crate::store::Database::for_read_models`], ADR 0009): a crash may lose the last few
//! commits of a projection, documents and checkpoint together, and it applies those events again.
//!
//! A rebuild claims a fresh generation number (`last_generation + 1`), replays the log into memory,
//! writes the documents in short transactions (the generation is invisible until swapped), catches up to
//! the head and swaps in one transaction that holds the state row, applies the last few events and sets
//! the generation and checkpoint with a compare-and-set on the generation it started from. Readers join
//! `read_docs` with `projection_state` in one statement, so a read sees one whole generation.
//!
//! # Layout
//!
//! - [`runner`]: [`ProjectionRunner`]: the live path ([`ProjectionRunner::handle`]), catch-up, the batch
//!   transaction, status, content hash;
//! - [`rebuild`]: [`ProjectionRunner::rebuild`] and its progress and report;
//! - [`read_models`]: [`SqlReadModels`], the `ReadModels` port over the served generations;
//! - [`publisher`]: publishing rule sets (at least once: the revisions a batch commits are recorded as
//!   owed in `ruleset_publication` and the runner's publication loop retries them until published, ADR
//!   0014);
//! - [`watch`]: [`WatchPublisher`], the in-process rule set channel of the embedded mode, and
//!   [`WatchFeed`], the gateway's feed over it;
//! - `polling`: [`ProjectionRunner::run_polling`], the embedded transport;
//! - `sql`: the statements, written once for both databases.

mod polling;
pub mod publisher;
pub mod read_models;
pub mod rebuild;
pub mod runner;
mod sql;
pub mod watch;
pub(crate) use sql::served_docs_of_kind;

pub use publisher::{ActiveKey, DecisionSigner, SigningPublisher};
pub use read_models::SqlReadModels;
pub use rebuild::{RebuildPhase, RebuildProgress, RebuildReport};
pub use runner::{Handled, ProjectionRunner};
pub use watch::{WatchFeed, WatchPublisher};

/// Why a runner could not make progress.
///
/// A concurrent change of the checkpoint (another instance, a rebuild's swap) is not an error: the runner
/// reloads its state and re-evaluates by itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerError {
    /// The projection cannot apply the event at `position` and stopped before it. It stays stopped (it
    /// never skips an event) until it is rebuilt.
    #[error("projection stopped at position {position}: {reason}")]
    Stopped {
        /// The global position of the event that could not be applied.
        position: i64,
        /// Why.
        reason: String,
    },
    /// The database or the event log failed, or an event is not readable yet; transient: retry later.
    #[error("projection store unavailable: {0}")]
    Store(String),
}

impl From<sqlx::Error> for RunnerError {
    fn from(error: sqlx::Error) -> Self {
        RunnerError::Store(error.to_string())
    }
}

impl From<edict_application::event_log::EventLogError> for RunnerError {
    fn from(error: edict_application::event_log::EventLogError) -> Self {
        RunnerError::Store(error.to_string())
    }
}
