//! The statements behind projections: `projection_state` and `read_docs`, written once in the dialect
//! PostgreSQL and SQLite share (`$n` parameters, `BIGINT`/`TEXT`, `ON CONFLICT`, `RETURNING`, row values)
//! and run on whichever database the store holds. Only bulk writes and reads of the `events` table differ:
//! PostgreSQL binds whole columns as arrays (`UNNEST`), SQLite takes multi-row `VALUES`.
//!
//! Transactions are a [`Tx`]: on SQLite they start with `BEGIN IMMEDIATE`, so a runner takes the single
//! write lock up front (waiting for it under the busy timeout) instead of failing when a read transaction
//! has to upgrade after another writer committed.
//!
//! Layout: this file holds the shared macros, the [`Tx`] type and the `projection_state` statements;
//! `docs` the `read_docs` statements; `log` the few reads of the `events` table; `publication` the
//! `ruleset_publication` statements (what the read model owes the gateways).

use edict_application::event_log::Checkpoint;
use sqlx::{Postgres, Sqlite, Transaction};

use crate::store::Database;

/// Runs the same expression on whichever transaction `$tx` is.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            Tx::Postgres($conn) => $body,
            Tx::Sqlite($conn) => $body,
        }
    };
}

// The submodules come after the macros, which they use.
mod docs;
mod log;
mod publication;

pub(crate) use docs::{
    DELETE_CHUNK, analyze_docs, commit_batch, delete_generation_chunk, generation_docs, load_doc,
    served_docs_of_kind,
};
pub(crate) use log::{event_checkpoint, lag, last_position};
pub(crate) use publication::{Owed, forget_owed, mark_published, owed, raise_owed, served_doc};

/// One projection's row of `projection_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub generation: i64,
    pub checkpoint: Checkpoint,
    pub events_applied: i64,
    pub error: Option<String>,
    pub error_position: Option<i64>,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

type StateRow = (i64, i64, i64, i64, Option<String>, Option<i64>, i64);

const STATE_COLUMNS: &str =
    "generation, transaction_id, position, events_applied, error, error_position, updated_at";

fn state_select() -> String {
    format!("SELECT {STATE_COLUMNS} FROM projection_state WHERE name = $1")
}

const STATE_INSERT: &str = "
INSERT INTO projection_state (name, generation, transaction_id, position, events_applied, error, updated_at,
                              last_generation)
VALUES ($1, 1, 0, 0, 0, NULL, $2, 1)
ON CONFLICT (name) DO NOTHING";

/// The compare-and-set that moves the checkpoint of the served generation.
const STATE_MOVE: &str = "
UPDATE projection_state
   SET transaction_id = $5, position = $6, events_applied = events_applied + $7, updated_at = $8
 WHERE name = $1 AND generation = $2 AND transaction_id = $3 AND position = $4 AND error IS NULL";

/// Records why the projection stopped, if nobody moved it meanwhile.
const STATE_STOP: &str = "
UPDATE projection_state SET error = $5, error_position = $6, updated_at = $7
 WHERE name = $1 AND generation = $2 AND transaction_id = $3 AND position = $4 AND error IS NULL";

/// Claims a generation number no rebuild has used; returns the active generation and the claimed one.
const STATE_CLAIM: &str = "
UPDATE projection_state
   SET last_generation = CASE WHEN last_generation > generation THEN last_generation ELSE generation END + 1
 WHERE name = $1
RETURNING generation, last_generation";

/// Serves a rebuilt generation, if the generation it started from is still served.
const STATE_SWAP: &str = "
UPDATE projection_state
   SET generation = $3, transaction_id = $4, position = $5, events_applied = $6, error = NULL,
       error_position = NULL, updated_at = $7
 WHERE name = $1 AND generation = $2";

/// Milliseconds since the epoch, the unit of `projection_state.updated_at`.
pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A transaction id as stored in a BIGINT column (`xid8` values stay far below 2^63).
pub(crate) fn stored_xid(transaction_id: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(transaction_id).map_err(|error| sqlx::Error::Encode(Box::new(error)))
}

fn loaded_xid(stored: i64) -> Result<u64, sqlx::Error> {
    u64::try_from(stored).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn state_from_row(row: StateRow) -> Result<State, sqlx::Error> {
    let (generation, transaction_id, position, events_applied, error, error_position, updated_at) =
        row;
    Ok(State {
        generation,
        checkpoint: Checkpoint {
            transaction_id: loaded_xid(transaction_id)?,
            position,
        },
        events_applied,
        error,
        error_position,
        updated_at,
    })
}
/// An open transaction on either database.
pub(crate) enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    /// Begins a transaction (`BEGIN IMMEDIATE` on SQLite).
    pub async fn begin(db: &Database) -> Result<Tx, sqlx::Error> {
        Ok(match db {
            Database::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Database::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        on_tx!(self, |tx| tx.commit().await)
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        on_tx!(self, |tx| tx.rollback().await)
    }

    /// The state row, locked until the end of the transaction (`FOR UPDATE` on PostgreSQL; SQLite's
    /// immediate transaction already holds the database's write lock).
    pub async fn lock_state(&mut self, name: &str) -> Result<Option<State>, sqlx::Error> {
        let row: Option<StateRow> = match self {
            Tx::Postgres(tx) => {
                sqlx::query_as(&format!("{} FOR UPDATE", state_select()))
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            Tx::Sqlite(tx) => {
                sqlx::query_as(&state_select())
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        row.map(state_from_row).transpose()
    }

    /// Moves the checkpoint from `expected` to `to` (adding `applied` events) if nobody else moved it and
    /// the projection is not stopped. Returns whether it did.
    pub async fn move_checkpoint(
        &mut self,
        name: &str,
        expected: &State,
        to: Checkpoint,
        applied: i64,
    ) -> Result<bool, sqlx::Error> {
        let binds = MoveBinds::new(expected, to)?;
        let done = on_tx!(self, |tx| binds
            .bind(sqlx::query(STATE_MOVE), name, applied)
            .execute(&mut **tx)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Serves `new_generation` at `checkpoint` if `old_generation` is still served. Returns whether it did.
    pub async fn swap(
        &mut self,
        name: &str,
        old_generation: i64,
        new_generation: i64,
        checkpoint: Checkpoint,
        events_applied: i64,
    ) -> Result<bool, sqlx::Error> {
        let xid = stored_xid(checkpoint.transaction_id)?;
        let now = now_millis();
        let done = on_tx!(self, |tx| sqlx::query(STATE_SWAP)
            .bind(name)
            .bind(old_generation)
            .bind(new_generation)
            .bind(xid)
            .bind(checkpoint.position)
            .bind(events_applied)
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Records that the projection stopped at `position`, if it is still at `expected`.
    pub async fn stop(
        &mut self,
        name: &str,
        expected: &State,
        position: i64,
        reason: &str,
    ) -> Result<bool, sqlx::Error> {
        let xid = stored_xid(expected.checkpoint.transaction_id)?;
        let now = now_millis();
        let done = on_tx!(self, |tx| sqlx::query(STATE_STOP)
            .bind(name)
            .bind(expected.generation)
            .bind(xid)
            .bind(expected.checkpoint.position)
            .bind(reason)
            .bind(position)
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected());
        Ok(done == 1)
    }
}

/// The state row of `name`, if it exists.
pub(crate) async fn load_state(db: &Database, name: &str) -> Result<Option<State>, sqlx::Error> {
    let row: Option<StateRow> = on_pool!(db, |pool| sqlx::query_as(&state_select())
        .bind(name)
        .fetch_optional(pool)
        .await?);
    row.map(state_from_row).transpose()
}

/// [`Tx::move_checkpoint`] in a statement of its own: for a batch that writes no document.
pub(crate) async fn move_checkpoint(
    db: &Database,
    name: &str,
    expected: &State,
    to: Checkpoint,
    applied: i64,
) -> Result<bool, sqlx::Error> {
    let binds = MoveBinds::new(expected, to)?;
    let done = on_pool!(db, |pool| binds
        .bind(sqlx::query(STATE_MOVE), name, applied)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(done == 1)
}

/// The parameters of [`STATE_MOVE`] besides the name and the count.
struct MoveBinds {
    generation: i64,
    from_xid: i64,
    from_position: i64,
    to_xid: i64,
    to_position: i64,
    now: i64,
}

impl MoveBinds {
    fn new(expected: &State, to: Checkpoint) -> Result<MoveBinds, sqlx::Error> {
        Ok(MoveBinds {
            generation: expected.generation,
            from_xid: stored_xid(expected.checkpoint.transaction_id)?,
            from_position: expected.checkpoint.position,
            to_xid: stored_xid(to.transaction_id)?,
            to_position: to.position,
            now: now_millis(),
        })
    }

    fn bind<'q, DB>(
        &self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
        name: &'q str,
        applied: i64,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        query
            .bind(name)
            .bind(self.generation)
            .bind(self.from_xid)
            .bind(self.from_position)
            .bind(self.to_xid)
            .bind(self.to_position)
            .bind(applied)
            .bind(self.now)
    }
}

/// Creates the state row of `name` (generation 1 at the start of the log) unless it exists.
pub(crate) async fn ensure_state(db: &Database, name: &str) -> Result<(), sqlx::Error> {
    let now = now_millis();
    on_pool!(db, |pool| sqlx::query(STATE_INSERT)
        .bind(name)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))
}

/// Claims a fresh generation number for a rebuild: `(active generation, claimed generation)`.
pub(crate) async fn claim_generation(
    db: &Database,
    name: &str,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    on_pool!(db, |pool| sqlx::query_as(STATE_CLAIM)
        .bind(name)
        .fetch_optional(pool)
        .await)
}
