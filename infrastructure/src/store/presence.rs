//! The `agent_presence` table: which gateway each agent is (or was last) connected to, since when, and
//! when that gateway last heard from it. The gateway writes it (through the `ConvergenceRecords` port,
//! in batches) when a connection opens, about once a minute while it lives and when it ends; the fleet
//! reads it through `ConvergenceReads`.
//!
//! Operational state, not an event, like `agent_convergence`. One row per agent: the latest
//! connection. An end is written only over the connection it ends (same gateway, same start), so an
//! agent that reconnected elsewhere before its old socket closed stays shown as connected.

use super::Database;
use super::convergence::{ConvergenceError, ConvergenceStore};
use chrono::{DateTime, Utc};
use edict_application::delivery::SeenRow;
use edict_application::read_models::Presence;

/// Agents per statement when reading (well under SQLite's bound-parameter limit).
const AGENTS_PER_READ: usize = 500;

#[derive(sqlx::FromRow)]
struct Row {
    agent_id: String,
    gateway: String,
    connected_at: i64,
    last_seen_at: i64,
    disconnected_at: Option<i64>,
}

fn time(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

impl From<Row> for Presence {
    fn from(row: Row) -> Self {
        Presence {
            agent_id: row.agent_id,
            gateway: row.gateway,
            connected_at: time(row.connected_at),
            last_seen_at: time(row.last_seen_at),
            disconnected_at: row.disconnected_at.map(time),
        }
    }
}

impl ConvergenceStore {
    /// Records each row's connection (see the module's rules for an end).
    ///
    /// # Errors
    /// [`ConvergenceError`] when the database fails.
    #[tracing::instrument(skip_all, fields(count = seen.len()), err)]
    pub async fn record_presence(&self, seen: &[SeenRow<'_>]) -> Result<(), ConvergenceError> {
        const UPSERT: &str = "ON CONFLICT (agent_id) DO UPDATE SET gateway = excluded.gateway, \
             connected_at = excluded.connected_at, last_seen_at = excluded.last_seen_at, \
             disconnected_at = excluded.disconnected_at \
             WHERE excluded.disconnected_at IS NULL \
             OR (agent_presence.gateway = excluded.gateway \
                 AND agent_presence.connected_at = excluded.connected_at)";
        const COLUMNS: &str = "INSERT INTO agent_presence (agent_id, gateway, connected_at, last_seen_at, disconnected_at)";
        match &self.db {
            // One statement whatever the number of rows (each agent comes at most once).
            Database::Postgres(pool) => {
                let agents: Vec<&str> = seen.iter().map(|r| r.agent).collect();
                let gateways: Vec<&str> = seen.iter().map(|r| r.gateway).collect();
                let connected: Vec<i64> = seen.iter().map(|r| r.connected_at.timestamp()).collect();
                let last: Vec<i64> = seen.iter().map(|r| r.last_seen_at.timestamp()).collect();
                let ended: Vec<Option<i64>> = seen
                    .iter()
                    .map(|r| r.disconnected_at.map(|t| t.timestamp()))
                    .collect();
                sqlx::query(&format!(
                    "{COLUMNS} SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], \
                     $4::bigint[], $5::bigint[]) {UPSERT}"
                ))
                .bind(&agents)
                .bind(&gateways)
                .bind(&connected)
                .bind(&last)
                .bind(&ended)
                .execute(pool)
                .await?;
            }
            Database::Sqlite(pool) => {
                for row in seen {
                    sqlx::query(&format!("{COLUMNS} VALUES ($1, $2, $3, $4, $5) {UPSERT}"))
                        .bind(row.agent)
                        .bind(row.gateway)
                        .bind(row.connected_at.timestamp())
                        .bind(row.last_seen_at.timestamp())
                        .bind(row.disconnected_at.map(|t| t.timestamp()))
                        .execute(pool)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Where each of `agents` is (or was last) connected; agents never connected are left out.
    ///
    /// # Errors
    /// [`ConvergenceError`] when the database fails.
    pub async fn presence(&self, agents: &[String]) -> Result<Vec<Presence>, ConvergenceError> {
        let mut found = Vec::with_capacity(agents.len());
        for chunk in agents.chunks(AGENTS_PER_READ) {
            let rows: Vec<Row> = on_pool!(&self.db, |pool| {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT agent_id, gateway, connected_at, last_seen_at, disconnected_at \
                     FROM agent_presence WHERE agent_id IN (",
                );
                let mut separated = query.separated(", ");
                for agent in chunk {
                    separated.push_bind(agent.as_str());
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await
            })?;
            found.extend(rows.into_iter().map(Presence::from));
        }
        Ok(found)
    }
}
