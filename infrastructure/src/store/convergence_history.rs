//! The `agent_convergence_history` table: every acknowledgement that changed what an agent enforces for
//! a team, append-only, so that what a machine enforced at a past time can be answered
//! (`agent_convergence` keeps only the latest). [`append`] runs beside the upsert of
//! [`ConvergenceStore::record`](super::convergence::ConvergenceStore::record); [`agent_as_of`] reads it.
//!
//! Same dialect on PostgreSQL and SQLite (`CAST` rather than `::`).

use super::convergence::Enforced;
use crate::store::Database;
use chrono::{DateTime, Utc};

/// Appends `(agent, team, revision, hash, at)` unless the agent's latest entry for the team already has
/// this revision and hash (a repeated `applied` is not a change). Idempotent, so a retry after a failed
/// write fills the gap.
///
/// # Errors
/// The database's.
pub async fn append(
    db: &Database,
    agent: &str,
    team: &str,
    revision: i64,
    hash: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    on_pool!(db, |pool| sqlx::query(
        "INSERT INTO agent_convergence_history (agent_id, team_id, revision, hash, applied_at_ms) \
         SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT), CAST($4 AS TEXT), \
                CAST($5 AS BIGINT) \
         WHERE NOT EXISTS (SELECT 1 FROM agent_convergence_history h \
             WHERE h.id = (SELECT max(l.id) FROM agent_convergence_history l \
                            WHERE l.agent_id = CAST($1 AS TEXT) AND l.team_id = CAST($2 AS TEXT)) \
               AND h.revision = CAST($3 AS BIGINT) AND h.hash = CAST($4 AS TEXT))"
    )
    .bind(agent)
    .bind(team)
    .bind(revision)
    .bind(hash)
    .bind(at.timestamp_millis())
    .execute(pool)
    .await
    .map(drop))
}

#[derive(sqlx::FromRow)]
struct Row {
    agent_id: String,
    team_id: String,
    revision: i64,
    hash: String,
    applied_at_ms: i64,
}

/// What `agent` enforced at `at`, by team id: per team, its last entry applied at or before `at`.
///
/// # Errors
/// The database's.
pub async fn agent_as_of(
    db: &Database,
    agent: &str,
    at: DateTime<Utc>,
) -> Result<Vec<Enforced>, sqlx::Error> {
    let rows: Vec<Row> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT h.agent_id, h.team_id, h.revision, h.hash, h.applied_at_ms \
           FROM agent_convergence_history h \
          WHERE h.agent_id = CAST($1 AS TEXT) \
            AND h.id = (SELECT max(l.id) FROM agent_convergence_history l \
                         WHERE l.agent_id = h.agent_id AND l.team_id = h.team_id \
                           AND l.applied_at_ms <= CAST($2 AS BIGINT)) \
          ORDER BY h.team_id"
    )
    .bind(agent)
    .bind(at.timestamp_millis())
    .fetch_all(pool)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|row| Enforced {
            agent_id: row.agent_id,
            team_id: row.team_id,
            revision: u64::try_from(row.revision).unwrap_or(0),
            hash: row.hash,
            applied_at: DateTime::from_timestamp_millis(row.applied_at_ms).unwrap_or_default(),
        })
        .collect())
}
