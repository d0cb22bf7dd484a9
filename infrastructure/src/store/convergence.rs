//! The `agent_convergence` table: which revision of each team's rule set each agent enforces, and since
//! when. The gateway writes a row when an agent reports `applied` (through the
//! [`ConvergenceRecords`] port, in batches); the admin API reads it per team
//! ([`ConvergenceStore::convergence`]) or per agent ([`ConvergenceStore::agent_enforced`]), through
//! the `ConvergenceReads` port.
//!
//! Operational state, not an event: the next `applied` of each agent rewrites it. The SQL is the
//! dialect PostgreSQL and SQLite share, run on whichever pool the store holds.

use crate::store::Database;
use chrono::{DateTime, Utc};
use edict_application::delivery::{
    AppliedRow, ConvergenceRecords, ConvergenceUnavailable, SeenRow,
};
use serde::Serialize;

/// The convergence table could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("convergence store unavailable: {0}")]
pub struct ConvergenceError(#[from] sqlx::Error);

/// One agent's enforced revision of one team's rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enforced {
    /// The agent.
    pub agent_id: String,
    /// The team.
    pub team_id: String,
    /// The revision it enforces.
    pub revision: u64,
    /// That revision's hash.
    pub hash: String,
    /// When it applied it (the first `applied` of this revision and hash).
    pub applied_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    agent_id: String,
    team_id: String,
    revision: i64,
    hash: String,
    applied_at: i64,
}

impl From<Row> for Enforced {
    fn from(row: Row) -> Self {
        Enforced {
            agent_id: row.agent_id,
            team_id: row.team_id,
            revision: u64::try_from(row.revision).unwrap_or(0),
            hash: row.hash,
            applied_at: DateTime::from_timestamp(row.applied_at, 0).unwrap_or_default(),
        }
    }
}

/// Reads and writes `agent_convergence`.
#[derive(Debug, Clone)]
pub struct ConvergenceStore {
    pub(super) db: Database,
}

impl ConvergenceStore {
    /// A store over `db` (migrated).
    pub fn new(db: Database) -> Self {
        ConvergenceStore { db }
    }

    /// Records that `agent` enforces `revision` (with `hash`) of `team`'s rule set. Repeating the same
    /// revision and hash keeps the first `applied_at`.
    ///
    /// # Errors
    /// [`ConvergenceError`] when the database fails.
    #[tracing::instrument(skip_all, fields(agent, team, revision), err)]
    pub async fn record(
        &self,
        agent: &str,
        team: &str,
        revision: u64,
        hash: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ConvergenceError> {
        let revision = i64::try_from(revision).unwrap_or(i64::MAX);
        on_pool!(&self.db, |pool| sqlx::query(
            "INSERT INTO agent_convergence (agent_id, team_id, revision, hash, applied_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (agent_id, team_id) DO UPDATE SET revision = excluded.revision, \
             hash = excluded.hash, applied_at = excluded.applied_at \
             WHERE agent_convergence.revision <> excluded.revision \
             OR agent_convergence.hash <> excluded.hash"
        )
        .bind(agent)
        .bind(team)
        .bind(revision)
        .bind(hash)
        .bind(at.timestamp())
        .execute(pool)
        .await
        .map(drop))?;
        super::convergence_history::append(&self.db, agent, team, revision, hash, at).await?;
        Ok(())
    }

    /// [`ConvergenceStore::record`] for many (agent, team) pairs at once (each pair at most once): on
    /// PostgreSQL one statement whatever their number, on SQLite one [`record`](Self::record) each.
    ///
    /// # Errors
    /// [`ConvergenceError`] when the database fails.
    #[tracing::instrument(skip_all, fields(count = applied.len()), err)]
    pub async fn record_many(&self, applied: &[AppliedRow<'_>]) -> Result<(), ConvergenceError> {
        let Database::Postgres(pool) = &self.db else {
            for row in applied {
                self.record(row.agent, row.team, row.revision, row.hash, row.at)
                    .await?;
            }
            return Ok(());
        };
        let mut agents = Vec::with_capacity(applied.len());
        let mut teams = Vec::with_capacity(applied.len());
        let mut revisions = Vec::with_capacity(applied.len());
        let mut hashes = Vec::with_capacity(applied.len());
        let mut seconds = Vec::with_capacity(applied.len());
        let mut millis = Vec::with_capacity(applied.len());
        for row in applied {
            agents.push(row.agent);
            teams.push(row.team);
            revisions.push(i64::try_from(row.revision).unwrap_or(i64::MAX));
            hashes.push(row.hash);
            seconds.push(row.at.timestamp());
            millis.push(row.at.timestamp_millis());
        }
        // The history gets a row exactly where the upsert changed one (inserted, or a new revision or
        // hash): what `convergence_history::append` checks row by row, in the same statement.
        sqlx::query(
            "WITH u AS ( \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], \
                                      $5::bigint[], $6::bigint[]) \
                     AS u(agent_id, team_id, revision, hash, at_s, at_ms) \
             ), changed AS ( \
                 INSERT INTO agent_convergence (agent_id, team_id, revision, hash, applied_at) \
                 SELECT agent_id, team_id, revision, hash, at_s FROM u \
                 ON CONFLICT (agent_id, team_id) DO UPDATE SET revision = excluded.revision, \
                 hash = excluded.hash, applied_at = excluded.applied_at \
                 WHERE agent_convergence.revision <> excluded.revision \
                 OR agent_convergence.hash <> excluded.hash \
                 RETURNING agent_id, team_id \
             ) \
             INSERT INTO agent_convergence_history (agent_id, team_id, revision, hash, applied_at_ms) \
             SELECT u.agent_id, u.team_id, u.revision, u.hash, u.at_ms \
               FROM u JOIN changed ON changed.agent_id = u.agent_id AND changed.team_id = u.team_id",
        )
        .bind(&agents)
        .bind(&teams)
        .bind(&revisions)
        .bind(&hashes)
        .bind(&seconds)
        .bind(&millis)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// What every agent that applied a rule set of `team` enforces, by agent id.
    ///
    /// # Errors
    /// [`ConvergenceError`] when the database fails.
    pub async fn convergence(&self, team: &str) -> Result<Vec<Enforced>, ConvergenceError> {
        let rows: Vec<Row> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT agent_id, team_id, revision, hash, applied_at FROM agent_convergence \
             WHERE team_id = $1 ORDER BY agent_id"
        )
        .bind(team)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(Enforced::from).collect())
    }

    /// What `agent` enforces, by team id.
    ///
    /// # Errors
    /// [`ConvergenceError`] when the database fails.
    pub async fn agent_enforced(&self, agent: &str) -> Result<Vec<Enforced>, ConvergenceError> {
        let rows: Vec<Row> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT agent_id, team_id, revision, hash, applied_at FROM agent_convergence \
             WHERE agent_id = $1 ORDER BY team_id"
        )
        .bind(agent)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(Enforced::from).collect())
    }
}

#[async_trait::async_trait]
impl ConvergenceRecords for ConvergenceStore {
    async fn record_many(&self, applied: &[AppliedRow<'_>]) -> Result<(), ConvergenceUnavailable> {
        ConvergenceStore::record_many(self, applied)
            .await
            .map_err(|ConvergenceError(error)| ConvergenceUnavailable(error.to_string()))
    }

    async fn record_presence(&self, seen: &[SeenRow<'_>]) -> Result<(), ConvergenceUnavailable> {
        ConvergenceStore::record_presence(self, seen)
            .await
            .map_err(|ConvergenceError(error)| ConvergenceUnavailable(error.to_string()))
    }
}

pub(super) fn unavailable(
    error: ConvergenceError,
) -> edict_application::read_models::ReadModelError {
    edict_application::read_models::ReadModelError::Unavailable(error.to_string())
}

impl From<Enforced> for edict_application::read_models::Enforcement {
    fn from(e: Enforced) -> Self {
        edict_application::read_models::Enforcement {
            agent_id: e.agent_id,
            team_id: e.team_id,
            revision: e.revision,
            hash: e.hash,
            applied_at: e.applied_at,
        }
    }
}

#[async_trait::async_trait]
impl edict_application::read_models::ConvergenceReads for ConvergenceStore {
    async fn by_team(
        &self,
        team: &str,
    ) -> Result<
        Vec<edict_application::read_models::Enforcement>,
        edict_application::read_models::ReadModelError,
    > {
        Ok(self
            .convergence(team)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn by_agent(
        &self,
        agent: &str,
    ) -> Result<
        Vec<edict_application::read_models::Enforcement>,
        edict_application::read_models::ReadModelError,
    > {
        Ok(self
            .agent_enforced(agent)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn by_agent_as_of(
        &self,
        agent: &str,
        at: DateTime<Utc>,
    ) -> Result<
        Vec<edict_application::read_models::Enforcement>,
        edict_application::read_models::ReadModelError,
    > {
        Ok(super::convergence_history::agent_as_of(&self.db, agent, at)
            .await
            .map_err(|e| unavailable(e.into()))?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn presence(
        &self,
        agents: &[String],
    ) -> Result<
        Vec<edict_application::read_models::Presence>,
        edict_application::read_models::ReadModelError,
    > {
        ConvergenceStore::presence(self, agents)
            .await
            .map_err(unavailable)
    }
}
