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
use chrono::{DateTime, Timelike, Utc};
use edict_application::event_log::{Checkpoint, EventLog, EventLogError, LogFilter, RecordedEvent};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Sqlite, SqlitePool};

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

/// The columns every PostgreSQL read returns (see [`POSTGRES_READ_ALL`] for the xid's text column).
const POSTGRES_COLUMNS: &str = "
SELECT events.global_position, events.transaction_id::text AS transaction_id_text,
       events.aggregate_type, events.aggregate_id, events.sequence, events.event_type,
       events.event_version, events.payload, events.metadata, events.recorded_at
  FROM events";

/// One aggregate's stream, as loading it does: by sequence, without the horizon (every committed event
/// of one aggregate is final; its sequence orders it).
const POSTGRES_READ_AGGREGATE: &str = "
 WHERE events.aggregate_type = $1 AND events.aggregate_id = $2
 ORDER BY events.sequence";

const POSTGRES_EVENT_AT: &str = "
 WHERE events.global_position = $1";

/// The columns every SQLite read returns.
const SQLITE_COLUMNS: &str = "
SELECT rowid AS global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
       payload, metadata, recorded_at
  FROM events";

const SQLITE_READ_AGGREGATE: &str = "
 WHERE aggregate_type = ? AND aggregate_id = ?
 ORDER BY sequence";

const SQLITE_EVENT_AT: &str = "
 WHERE rowid = ?";

#[async_trait]
impl EventLog for Database {
    /// A real round trip to the database (the default reads zero events, which returns before it
    /// touches the database, so a store that is down would look ready).
    async fn ping(&self) -> Result<(), EventLogError> {
        Database::ping(self)
            .await
            .map_err(|error| EventLogError::Unavailable(error.to_string()))
    }

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

    #[tracing::instrument(skip_all, fields(kind = self.kind(), limit, returned), err)]
    async fn read_filtered(
        &self,
        after: Checkpoint,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventLogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let events = match self {
            Database::Postgres(pool) => postgres_read_filtered(pool, after, filter, limit).await?,
            Database::Sqlite(pool) => sqlite_read_filtered(pool, after, filter, limit).await?,
        };
        tracing::Span::current().record("returned", events.len());
        Ok(events)
    }

    #[tracing::instrument(skip_all, fields(kind = self.kind(), aggregate_type, aggregate_id), err)]
    async fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, EventLogError> {
        match self {
            Database::Postgres(pool) => {
                let rows = sqlx::query(&format!("{POSTGRES_COLUMNS}{POSTGRES_READ_AGGREGATE}"))
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?;
                rows.iter().map(postgres_event).collect()
            }
            Database::Sqlite(pool) => {
                let rows = sqlx::query(&format!("{SQLITE_COLUMNS}{SQLITE_READ_AGGREGATE}"))
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?;
                rows.iter().map(sqlite_event).collect()
            }
        }
    }

    #[tracing::instrument(skip_all, fields(kind = self.kind()), err)]
    async fn last_position(&self) -> Result<Option<i64>, EventLogError> {
        match self {
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT max(global_position) FROM events")
                    .fetch_one(pool)
                    .await
            }
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT max(rowid) FROM events")
                    .fetch_one(pool)
                    .await
            }
        }
        .map_err(unavailable)
    }

    #[tracing::instrument(skip_all, fields(kind = self.kind(), position), err)]
    async fn event_at(&self, position: i64) -> Result<Option<RecordedEvent>, EventLogError> {
        match self {
            Database::Postgres(pool) => {
                let row = sqlx::query(&format!("{POSTGRES_COLUMNS}{POSTGRES_EVENT_AT}"))
                    .bind(position)
                    .fetch_optional(pool)
                    .await
                    .map_err(unavailable)?;
                row.as_ref().map(postgres_event).transpose()
            }
            Database::Sqlite(pool) => {
                let row = sqlx::query(&format!("{SQLITE_COLUMNS}{SQLITE_EVENT_AT}"))
                    .bind(position)
                    .fetch_optional(pool)
                    .await
                    .map_err(unavailable)?;
                row.as_ref().map(sqlite_event).transpose()
            }
        }
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

/// [`POSTGRES_READ_ALL`] with the filters of a [`LogFilter`], each in the statement only when it is
/// set, so that the planner sees plain conditions and can use the indexes of the
/// `20261205000100_bounded_reads` migration (aggregate type, event type, actor, recorded time). The
/// horizon and the order are those of [`POSTGRES_READ_ALL`], so a filtered page is the matching part of
/// a prefix of the log and a reader resuming after its last event skips nothing.
async fn postgres_read_filtered(
    pool: &PgPool,
    after: Checkpoint,
    filter: &LogFilter,
    limit: i64,
) -> Result<Vec<RecordedEvent>, EventLogError> {
    let mut query = QueryBuilder::<Postgres>::new(POSTGRES_COLUMNS);
    query
        .push(" WHERE (events.transaction_id, events.global_position) > (")
        .push_bind(after.transaction_id.to_string())
        .push("::text::xid8, ")
        .push_bind(after.position)
        .push(") AND events.transaction_id < pg_snapshot_xmin(pg_current_snapshot())");
    match filter.aggregate_types.as_slice() {
        [] => {}
        [one] => {
            query
                .push(" AND events.aggregate_type = ")
                .push_bind(one.clone());
        }
        many => {
            query
                .push(" AND events.aggregate_type = ANY(")
                .push_bind(many.to_vec())
                .push(")");
        }
    }
    if let Some(id) = &filter.aggregate_id {
        query
            .push(" AND events.aggregate_id = ")
            .push_bind(id.clone());
    }
    if let Some(actor) = &filter.actor {
        // The expression of the `events_actor` index.
        query
            .push(" AND (events.metadata ->> 'actor') = ")
            .push_bind(actor.clone());
    }
    match filter.event_types.as_slice() {
        [] => {}
        [one] => {
            query
                .push(" AND events.event_type = ")
                .push_bind(one.clone());
        }
        many => {
            query
                .push(" AND events.event_type = ANY(")
                .push_bind(many.to_vec())
                .push(")");
        }
    }
    if let Some(since) = filter.since {
        query.push(" AND events.recorded_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND events.recorded_at <= ").push_bind(until);
    }
    query
        .push(" ORDER BY events.transaction_id, events.global_position LIMIT ")
        .push_bind(limit);
    let rows = query.build().fetch_all(pool).await.map_err(unavailable)?;
    rows.iter().map(postgres_event).collect()
}

/// [`SQLITE_READ_ALL`] with the filters of a [`LogFilter`], each in the statement only when it is set
/// (see [`postgres_read_filtered`]). `recorded_at` is ISO-8601 text with milliseconds, so text
/// comparison is time comparison.
async fn sqlite_read_filtered(
    pool: &SqlitePool,
    after: Checkpoint,
    filter: &LogFilter,
    limit: i64,
) -> Result<Vec<RecordedEvent>, EventLogError> {
    let mut query = QueryBuilder::<Sqlite>::new(SQLITE_COLUMNS);
    query.push(" WHERE rowid > ").push_bind(after.position);
    // One value is an equality wrapped in `unlikely()`: SQLite's planner, once `ANALYZE` has averaged
    // a few frequent values over the table, would otherwise walk the whole log by rowid rather than
    // the filter's index (which is in rowid order for one value). Several are an IN list, which it
    // reads from the index and sorts (`unlikely()` around an IN list makes it walk the log instead).
    let any_of =
        |query: &mut QueryBuilder<'_, Sqlite>, column: &str, values: &[String]| match values {
            [] => {}
            [one] => {
                query
                    .push(format!(" AND unlikely({column} = "))
                    .push_bind(one.clone())
                    .push(")");
            }
            many => {
                query.push(format!(" AND {column} IN ("));
                let mut list = query.separated(", ");
                for value in many {
                    list.push_bind(value.clone());
                }
                list.push_unseparated(")");
            }
        };
    any_of(&mut query, "aggregate_type", &filter.aggregate_types);
    any_of(&mut query, "event_type", &filter.event_types);
    if let Some(id) = &filter.aggregate_id {
        query
            .push(" AND unlikely(aggregate_id = ")
            .push_bind(id.clone())
            .push(")");
    }
    if let Some(actor) = &filter.actor {
        // The expression of the `events_actor` index.
        query
            .push(" AND unlikely(json_extract(metadata, '$.actor') = ")
            .push_bind(actor.clone())
            .push(")");
    }
    if let Some(since) = filter.since {
        query
            .push(" AND recorded_at >= ")
            .push_bind(sqlite_time(since, Round::Up));
    }
    if let Some(until) = filter.until {
        query
            .push(" AND recorded_at <= ")
            .push_bind(sqlite_time(until, Round::Down));
    }
    query.push(" ORDER BY rowid LIMIT ").push_bind(limit);
    let rows = query.build().fetch_all(pool).await.map_err(unavailable)?;
    rows.iter().map(sqlite_event).collect()
}

/// Which way a time is rounded to the milliseconds SQLite records.
#[derive(Clone, Copy)]
enum Round {
    Up,
    Down,
}

/// `time` as SQLite's `recorded_at` text (`2026-11-21T09:30:00.123Z`), rounded to a millisecond so that
/// `recorded_at >= since` and `recorded_at <= until` compare as the times do.
fn sqlite_time(time: DateTime<Utc>, round: Round) -> String {
    let truncated = time
        .with_nanosecond(time.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(time);
    let rounded = match round {
        Round::Up if truncated < time => truncated + chrono::Duration::milliseconds(1),
        _ => truncated,
    };
    rounded.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_times_round_to_the_milliseconds_sqlite_records() {
        let time = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let exact = time("2026-11-22T10:00:00.123Z");
        assert_eq!(sqlite_time(exact, Round::Up), "2026-11-22T10:00:00.123Z");
        assert_eq!(sqlite_time(exact, Round::Down), "2026-11-22T10:00:00.123Z");
        // An event recorded at .123 is before .1234 (not at or after it) and before .1239.
        let between = time("2026-11-22T10:00:00.1234+00:00");
        assert_eq!(sqlite_time(between, Round::Up), "2026-11-22T10:00:00.124Z");
        assert_eq!(
            sqlite_time(between, Round::Down),
            "2026-11-22T10:00:00.123Z"
        );
        let carry = time("2026-11-22T10:00:59.9999Z");
        assert_eq!(sqlite_time(carry, Round::Up), "2026-11-22T10:01:00.000Z");
    }
}
