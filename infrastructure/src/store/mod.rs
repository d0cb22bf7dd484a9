//! The event store: where every domain event is appended, and the global log that reads them back in
//! commit order.
//!
//! Two backends sit behind one type, [`Database`]:
//!
//! - PostgreSQL, through postgres-es, for the distributed deployment;
//! - SQLite, through sqlite-es, for the embedded default (`edict serve` with no configuration).
//!
//! Layout:
//!
//! - this module: connecting ([`Database::connect`]), the schema ([`Database::migrate`], SQL files under
//!   `infrastructure/migrations/{postgres,sqlite}`), readiness ([`Database::ping`]);
//! - [`repository`]: [`EventRepository`], the one cqrs-es repository type every aggregate is stored with
//!   (`PersistedEventStore::new_event_store(db.event_repository())`, event-store mode only);
//! - [`global_log`]: the [`EventLog`](edict_application::event_log::EventLog) port, reading every event of
//!   every aggregate in commit order;
//! - [`convergence`], [`convergence_history`]: which revision each agent enforces, now and in the past
//!   ([`ConvergenceStore`]: the gateway's `ConvergenceRecords` port and the query side's
//!   `ConvergenceReads`);
//! - [`presence`]: where each agent is (or was last) connected, on the same two ports.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub mod convergence;
pub mod convergence_history;
pub mod global_log;
pub mod presence;
pub mod private;
pub mod repository;

pub use convergence::{ConvergenceError, ConvergenceStore, Enforced};
pub use repository::EventRepository;

/// The PostgreSQL schema, embedded at compile time.
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
/// The SQLite schema, embedded at compile time.
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections to PostgreSQL: one per concurrent appender (the append benchmark drives 32 clients).
const POSTGRES_MAX_CONNECTIONS: u32 = 32;
/// Connections of the read-model pool ([`Database::for_read_models`]): one per projection and a few
/// for rebuilds.
const READ_MODEL_MAX_CONNECTIONS: u32 = 10;
/// Connections to SQLite: it has one writer anyway; a few more let readers run beside it (WAL).
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// How long an SQLite writer waits for the write lock before failing with `SQLITE_BUSY`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the event store could not be opened or prepared.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `postgres://…` nor `sqlite:…`, or could not be parsed.
    #[error("invalid event store url: {0}")]
    InvalidUrl(String),
    /// The SQLite file's directory could not be created.
    #[error("cannot create directory {path}")]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be reached.
    #[error("cannot connect to the event store")]
    Connect(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("cannot migrate the event store")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("event store query failed")]
    Query(#[source] sqlx::Error),
}

/// An open event store: a connection pool to PostgreSQL or to an SQLite file.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL (distributed deployment).
    Postgres(PgPool),
    /// An SQLite file (embedded deployment).
    Sqlite(SqlitePool),
}

impl Database {
    /// Opens a pool to `url`: `postgres://…` (or `postgresql://…`), `sqlite://path` or `sqlite:path`.
    ///
    /// For SQLite the file and its parent directory are created when missing, and every connection runs
    /// in WAL mode with `synchronous=NORMAL`, a 5 s busy timeout and foreign keys on. The schema is not
    /// touched: call [`Database::migrate`]. While PostgreSQL refuses connections (still starting), the
    /// first connection is retried for up to 30 s.
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`] for an unknown scheme or a malformed URL, [`StoreError::CreateDirectory`]
    /// when the SQLite directory cannot be created, [`StoreError::Connect`] when the first connection fails.
    #[tracing::instrument(skip_all, fields(kind), err)]
    pub async fn connect(url: &str) -> Result<Database, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            tracing::Span::current().record("kind", "postgres");
            postgres_pool(postgres_options(url)?, POSTGRES_MAX_CONNECTIONS).await
        } else if url.starts_with("sqlite:") {
            tracing::Span::current().record("kind", "sqlite");
            Self::connect_sqlite(url).await
        } else {
            Err(StoreError::InvalidUrl(redact(url)))
        }
    }

    /// The store projections write their read models through: on PostgreSQL a pool of its own whose
    /// sessions commit without waiting for the WAL flush (`synchronous_commit = off`, set in the
    /// startup packet: no extra round trip); on SQLite this store itself.
    ///
    /// Read models are derived: a crash may lose a projection's last commits (at most a few hundred
    /// milliseconds of them), but each commit holds its documents and its checkpoint together, so the
    /// projection simply applies those events again. Events themselves are never written here.
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`] or [`StoreError::Connect`] as [`Database::connect`].
    pub async fn for_read_models(&self, url: &str) -> Result<Database, StoreError> {
        match self {
            Database::Sqlite(_) => Ok(self.clone()),
            Database::Postgres(_) => {
                let options = postgres_options(url)?.options([("synchronous_commit", "off")]);
                postgres_pool(options, READ_MODEL_MAX_CONNECTIONS).await
            }
        }
    }

    async fn connect_sqlite(url: &str) -> Result<Database, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::InvalidUrl(format!("{}: {error}", redact(url))))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory
            && let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            private::create_private_dir(parent).map_err(|source| StoreError::CreateDirectory {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        if !in_memory {
            // Before SQLite opens it: its -wal and -shm files take the database file's mode.
            let file = options.get_filename();
            private::secure_sqlite_file(file).map_err(|source| StoreError::CreateDirectory {
                path: file.to_path_buf(),
                source,
            })?;
        }
        let mut pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if in_memory {
            // sqlx names in-memory databases per URL and shares them between the pool's connections only
            // while one of them stays open.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        Ok(Database::Sqlite(pool))
    }

    /// Creates or updates the schema (the events and snapshots tables). Safe to run any number of times,
    /// also from several processes at once on PostgreSQL (sqlx takes an advisory lock).
    ///
    /// # Errors
    /// [`StoreError::Migrate`] when a migration fails or the recorded migrations do not match the
    /// embedded ones.
    #[tracing::instrument(skip_all, fields(kind = self.kind()), err)]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Database::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
            Database::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
        }
        .map_err(StoreError::Migrate)
    }

    /// Checks that the database answers (readiness probe).
    ///
    /// # Errors
    /// [`StoreError::Query`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Database::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
        .map_err(StoreError::Query)
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        }
    }

    /// The cqrs-es repository over this database's `events` table.
    ///
    /// Use it in event-store mode only: `PersistedEventStore::new_event_store(db.event_repository())`.
    pub fn event_repository(&self) -> EventRepository {
        match self {
            Database::Postgres(pool) => {
                EventRepository::Postgres(postgres_es::PostgresEventRepository::new(pool.clone()))
            }
            Database::Sqlite(pool) => {
                EventRepository::Sqlite(sqlite_es::SqliteEventRepository::new(pool.clone()))
            }
        }
    }

    /// Closes every connection of the pool (shared by all clones) and waits until they are closed.
    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite(pool) => pool.close().await,
        }
    }
}

/// `url` without its password, for error messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://edict:s3cret@db:5432/edict"),
            "postgres://edict:***@db:5432/edict"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/postgres"),
            "postgres://postgres@127.0.0.1/postgres"
        );
        assert_eq!(redact("sqlite:data/edict.db"), "sqlite:data/edict.db");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_an_invalid_url() {
        let result = Database::connect("mysql://localhost/edict").await;
        assert!(
            matches!(result, Err(StoreError::InvalidUrl(_))),
            "{result:?}"
        );
    }
}

/// The connect options of a `postgres://` URL. A URL that names no `sslmode` and points at this machine
/// (loopback address or Unix socket) connects without TLS: encryption buys nothing on loopback and costs
/// about a sixth of the CPU of a busy deployment (`docs/benchmarks.md`). Any other URL keeps libpq's
/// default (`prefer`), and an explicit `sslmode` is always obeyed.
/// A PostgreSQL pool of at most `max_connections`. No ping before each checkout: it would add a round
/// trip to every append (a dead connection fails its statement instead, is dropped by the pool, and the
/// caller's retry gets a new one).
async fn postgres_pool(
    options: sqlx::postgres::PgConnectOptions,
    max_connections: u32,
) -> Result<Database, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(StoreError::Connect)?;
    Ok(Database::Postgres(pool))
}

fn postgres_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions, StoreError> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::InvalidUrl(redact(url)))?;
    let local = matches!(
        options.get_host(),
        "127.0.0.1" | "localhost" | "::1" | "[::1]"
    ) || options.get_host().starts_with('/');
    if local && !url.contains("sslmode=") {
        Ok(options.ssl_mode(sqlx::postgres::PgSslMode::Disable))
    } else {
        Ok(options)
    }
}

#[cfg(test)]
mod connect_tests {
    use super::postgres_options;
    use sqlx::postgres::PgSslMode;

    fn mode(url: &str) -> String {
        format!("{:?}", postgres_options(url).map(|o| o.get_ssl_mode()).ok())
    }

    #[test]
    fn loopback_urls_without_sslmode_skip_tls_and_others_keep_the_default() {
        let disabled = format!("{:?}", Some(PgSslMode::Disable));
        let preferred = format!("{:?}", Some(PgSslMode::Prefer));
        assert_eq!(mode("postgres://u@127.0.0.1:5432/db"), disabled);
        assert_eq!(mode("postgres://u@localhost/db"), disabled);
        assert_eq!(mode("postgres://u@db.example.com/db"), preferred);
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            format!("{:?}", Some(PgSslMode::Require))
        );
    }
}
