//! Bulk event seeding for rebuild and audit benchmarks (`edict-bench rebuild`, `edict-bench verify`) and
//! the tests that need a long history fast (`projection_rebuild_rate`, `audit_chain`).
//!
//! [`seed_events`] inserts rows straight into the `events` table in the shape postgres-es / sqlite-es
//! write (the same seven columns; position, transaction id and time from their defaults), many per
//! statement, so a million events take seconds instead of a million commits. Only for scratch databases:
//! it bypasses the aggregates, so it does not check that the events make sense.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{QueryBuilder, Sqlite};

use edict_infrastructure::store::{Database, StoreError};

/// Rows per statement on PostgreSQL (columns bound as arrays).
const POSTGRES_ROWS: usize = 10_000;
/// Rows per statement on SQLite (7 parameters each, below its 32,766).
const SQLITE_ROWS: usize = 2_000;
/// Statements per transaction on SQLite.
const SQLITE_STATEMENTS_PER_TRANSACTION: usize = 25;

const INSERT_POSTGRES: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT t, i, s, e, v, p::json, m::json
  FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
       AS u(t, i, s, e, v, p, m)";

/// One event to seed. Its sequence is assigned by [`seed_events`]: 1, 2, … per aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedEvent {
    /// The aggregate type (for example `Team`).
    pub aggregate_type: String,
    /// The aggregate id; must not have events in the store yet.
    pub aggregate_id: String,
    /// The event type (for example `TeamRuleAttached`).
    pub event_type: String,
    /// The payload's version (`1.0`).
    pub event_version: String,
    /// The serialized domain event, as cqrs-es would store it.
    pub payload: Value,
    /// The event's metadata.
    pub metadata: Value,
}

/// A row ready to insert.
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// Appends `count` events made by `event(i)` for `i` in `0..count`, in that order, numbering each
/// aggregate's events from 1. Returns how many were inserted.
///
/// # Errors
/// [`StoreError::Query`] when an insert fails (the events of earlier statements stay).
#[tracing::instrument(skip(db, event), fields(kind = db.kind()), err)]
pub async fn seed_events<F>(db: &Database, count: u64, mut event: F) -> Result<u64, StoreError>
where
    F: FnMut(u64) -> SeedEvent + Send,
{
    let mut sequences: HashMap<(String, String), i64> = HashMap::new();
    let mut next_row = |i: u64| {
        let seed = event(i);
        let sequence = sequences
            .entry((seed.aggregate_type.clone(), seed.aggregate_id.clone()))
            .or_insert(0);
        *sequence += 1;
        Row {
            sequence: *sequence,
            payload: seed.payload.to_string(),
            metadata: seed.metadata.to_string(),
            aggregate_type: seed.aggregate_type,
            aggregate_id: seed.aggregate_id,
            event_type: seed.event_type,
            event_version: seed.event_version,
        }
    };
    let mut inserted = 0;
    match db {
        Database::Postgres(pool) => {
            while inserted < count {
                let rows: Vec<Row> = (inserted..count.min(inserted + POSTGRES_ROWS as u64))
                    .map(&mut next_row)
                    .collect();
                let n = rows.len() as u64;
                let mut columns = Columns::default();
                for row in rows {
                    columns.push(row);
                }
                sqlx::query(INSERT_POSTGRES)
                    .bind(columns.aggregate_type)
                    .bind(columns.aggregate_id)
                    .bind(columns.sequence)
                    .bind(columns.event_type)
                    .bind(columns.event_version)
                    .bind(columns.payload)
                    .bind(columns.metadata)
                    .execute(pool)
                    .await
                    .map_err(StoreError::Query)?;
                inserted += n;
            }
        }
        Database::Sqlite(pool) => {
            while inserted < count {
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(StoreError::Query)?;
                for _ in 0..SQLITE_STATEMENTS_PER_TRANSACTION {
                    if inserted >= count {
                        break;
                    }
                    let rows: Vec<Row> = (inserted..count.min(inserted + SQLITE_ROWS as u64))
                        .map(&mut next_row)
                        .collect();
                    let n = rows.len() as u64;
                    let mut query = QueryBuilder::<Sqlite>::new(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata) ",
                    );
                    query.push_values(rows, |mut values, row| {
                        values
                            .push_bind(row.aggregate_type)
                            .push_bind(row.aggregate_id)
                            .push_bind(row.sequence)
                            .push_bind(row.event_type)
                            .push_bind(row.event_version)
                            .push_bind(row.payload)
                            .push_bind(row.metadata);
                    });
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::Query)?;
                    inserted += n;
                }
                tx.commit().await.map_err(StoreError::Query)?;
            }
        }
    }
    Ok(inserted)
}

/// Rows as columns, for binding as PostgreSQL arrays.
#[derive(Default)]
struct Columns {
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<String>,
    metadata: Vec<String>,
}

impl Columns {
    fn push(&mut self, row: Row) {
        self.aggregate_type.push(row.aggregate_type);
        self.aggregate_id.push(row.aggregate_id);
        self.sequence.push(row.sequence);
        self.event_type.push(row.event_type);
        self.event_version.push(row.event_version);
        self.payload.push(row.payload);
        self.metadata.push(row.metadata);
    }
}
