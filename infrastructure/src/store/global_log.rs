//! The global log: [`EventLog`] over the `events` table, every event of every aggregate in commit order.
//!
//! # PostgreSQL
//!
//! `global_position` is an identity column: its value is taken when a row is INSERTed, but the row only
//! becomes visible when its transaction commits. A reader that follows `global_position > checkpoint` can
//! see position 6 while 5 is still in flight, move its checkpoint past 5 and never see it (Marten,
//! Eventuous and SQLStreamStore all shipped this bug). So the log is read
//!
//! - in `(transaction_id, global_position)` order, where `transaction_id` is the appending transaction's
//!   `xid8` (filled by `DEFAULT pg_current_xact_id()`), and
//! - only below `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running when the
//!   read's snapshot was taken. Every transaction below it has ended; every transaction that appends later
//!   gets a larger id. An event below the horizon can therefore never be followed by an earlier-ordered
//!   one, and a reader resuming strictly after its checkpoint `(transaction_id, global_position)` sees
//!   every committed event exactly once.
//!
//! The horizon is cluster-wide. Any transaction that has written something (it has an xid) and stays
//! open, long-running or *idle in transaction*, in any database of the cluster, holds it back: reads
//! stall (they return nothing at or after that transaction) until it ends, but they never skip an event.
//! Read-only transactions do not count. Watch for it with `pg_stat_activity.backend_xid`, set
//! `idle_in_transaction_session_timeout`, and never hold a writing transaction open to keep a lock
//! (take leadership advisory locks at session level, not inside a writing transaction).
//! `xid8` values are only comparable within one cluster: a logical dump and restore into another
//! cluster needs readers' checkpoints reset (positions stay meaningful, transaction ids do not).
//!
//! # SQLite
//!
//! SQLite has a single writer, so rowid order is commit order: the log is read by rowid, and the
//! transaction id is always 0.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use edict_application::event_log::{Checkpoint, EventLog, EventLogError, RecordedEvent};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Row, SqlitePool};

use super::Database;

/// Reads the PostgreSQL log. `xid8` has no binary codec in sqlx and no cast to `bigint`; it round-trips
/// through `text` (`$1::text::xid8` in, `transaction_id::text` out) and is parsed as `u64`, its range.
///
/// The text column must not be called `transaction_id`: ORDER BY prefers an output column over an input
/// column of the same name, and would then sort xids as strings ('10000' < '9999'), so a page could end
/// past events it never returned. ORDER BY is qualified with the table for the same reason.
const POSTGRES_READ_ALL: &str = "
SELECT events.global_position, events.transaction_id::text AS transaction_id_text,
       events.aggregate_type, events.aggregate_id, events.sequence, events.event_type,
       events.event_version, events.payload, events.metadata, events.recorded_at
  FROM events
 WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2)
   AND events.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY events.transaction_id, events.global_position
 LIMIT $3";

const POSTGRES_POSITION_OF: &str = "
SELECT global_position FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";

/// Reads the SQLite log. payload and metadata are JSON stored as TEXT (sqlite-es), parsed here.
const SQLITE_READ_ALL: &str = "
SELECT rowid AS global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
       payload, metadata, recorded_at
  FROM events
 WHERE rowid > ?
 ORDER BY rowid
 LIMIT ?";

const SQLITE_POSITION_OF: &str = "
SELECT rowid FROM events WHERE aggregate_type = ? AND aggregate_id = ? AND sequence = ?";

#[async_trait]
impl EventLog for Database {
    #[tracing::instrument(
        skip_all,
        fields(kind = self.kind(), after.transaction_id, after.position, limit, returned),
        err
    )]
    async fn read_all(
        &self,
        after: Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventLogError> {
        let span = tracing::Span::current();
        span.record("after.transaction_id", after.transaction_id);
        span.record("after.position", after.position);
        span.record("limit", limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // More than i64::MAX rows cannot exist; saturating keeps the SQL parameter valid.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let events = match self {
            Database::Postgres(pool) => postgres_read_all(pool, after, limit).await?,
            Database::Sqlite(pool) => sqlite_read_all(pool, after, limit).await?,
        };
        span.record("returned", events.len());
        Ok(events)
    }

    #[tracing::instrument(skip_all, fields(kind = self.kind(), aggregate_type, aggregate_id, sequence), err)]
    async fn position_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<i64>, EventLogError> {
        match self {
            Database::Postgres(pool) => sqlx::query_scalar(POSTGRES_POSITION_OF)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .fetch_optional(pool)
                .await
                .map_err(unavailable),
            Database::Sqlite(pool) => sqlx::query_scalar(SQLITE_POSITION_OF)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .fetch_optional(pool)
                .await
                .map_err(unavailable),
        }
    }
}

async fn postgres_read_all(
    pool: &PgPool,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<RecordedEvent>, EventLogError> {
    let rows = sqlx::query(POSTGRES_READ_ALL)
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    rows.iter().map(postgres_event).collect()
}

fn postgres_event(row: &PgRow) -> Result<RecordedEvent, EventLogError> {
    let position: i64 = row.try_get("global_position").map_err(unavailable)?;
    let corrupt = |reason: String| EventLogError::Corrupt { position, reason };
    let transaction_id: String = row
        .try_get("transaction_id_text")
        .map_err(|error| corrupt(error.to_string()))?;
    let transaction_id = transaction_id
        .parse::<u64>()
        .map_err(|error| corrupt(format!("transaction id {transaction_id:?}: {error}")))?;
    Ok(RecordedEvent {
        global_position: position,
        transaction_id,
        aggregate_type: column(row, "aggregate_type", position)?,
        aggregate_id: column(row, "aggregate_id", position)?,
        sequence: column(row, "sequence", position)?,
        event_type: column(row, "event_type", position)?,
        event_version: column(row, "event_version", position)?,
        payload: column(row, "payload", position)?,
        metadata: column(row, "metadata", position)?,
        recorded_at: column(row, "recorded_at", position)?,
    })
}

async fn sqlite_read_all(
    pool: &SqlitePool,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<RecordedEvent>, EventLogError> {
    // The transaction id of an SQLite checkpoint is always 0: the rowid alone orders the log.
    let rows = sqlx::query(SQLITE_READ_ALL)
        .bind(after.position)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    rows.iter().map(sqlite_event).collect()
}

fn sqlite_event(row: &SqliteRow) -> Result<RecordedEvent, EventLogError> {
    let position: i64 = row.try_get("global_position").map_err(unavailable)?;
    let json = |name: &str| -> Result<serde_json::Value, EventLogError> {
        let text: String = column(row, name, position)?;
        serde_json::from_str(&text).map_err(|error| EventLogError::Corrupt {
            position,
            reason: format!("{name} is not JSON: {error}"),
        })
    };
    let recorded_at: String = column(row, "recorded_at", position)?;
    let recorded_at = DateTime::parse_from_rfc3339(&recorded_at)
        .map_err(|error| EventLogError::Corrupt {
            position,
            reason: format!("recorded_at {recorded_at:?}: {error}"),
        })?
        .with_timezone(&Utc);
    Ok(RecordedEvent {
        global_position: position,
        transaction_id: 0,
        aggregate_type: column(row, "aggregate_type", position)?,
        aggregate_id: column(row, "aggregate_id", position)?,
        sequence: column(row, "sequence", position)?,
        event_type: column(row, "event_type", position)?,
        event_version: column(row, "event_version", position)?,
        payload: json("payload")?,
        metadata: json("metadata")?,
        recorded_at,
    })
}

/// One column of a row whose position is known; a value that does not decode makes the row corrupt.
fn column<'r, R, T>(row: &'r R, name: &str, position: i64) -> Result<T, EventLogError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'n> &'n str: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get(name).map_err(|error| EventLogError::Corrupt {
        position,
        reason: format!("{name}: {error}"),
    })
}

fn unavailable(error: sqlx::Error) -> EventLogError {
    EventLogError::Unavailable(error.to_string())
}
