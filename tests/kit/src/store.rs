//! A scratch event store on either backend, for the tests that run on both, and the macro that makes
//! one test per case and backend.

use std::path::PathBuf;

use edict_infrastructure::store::Database;

use crate::postgres::{create_isolated_postgres, drop_isolated_postgres, test_database_url};

/// Which backend a scratch store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh database on the test PostgreSQL server.
    Postgres,
    /// An SQLite file in a fresh temporary directory.
    Sqlite,
}

/// A migrated event store of its own, removed by [`ScratchStore::teardown`].
#[derive(Debug, Clone)]
pub struct ScratchStore {
    /// The open store.
    pub db: Database,
    /// Its URL (to connect to it again, as another process would).
    pub url: String,
    owner: Owner,
}

/// What to remove at the end: the PostgreSQL database (through the admin URL) or the directory.
#[derive(Debug, Clone)]
enum Owner {
    Postgres { admin_url: String },
    Sqlite { dir: PathBuf },
}

impl ScratchStore {
    /// Creates and migrates a store named after `name`: on PostgreSQL the database
    /// `edict_test_<name>_<uuid>`, on SQLite `<temp>/edict-<name>-test-<uuid>/data/edict.db`, in a
    /// directory that does not exist yet (connecting creates it).
    ///
    /// # Panics
    /// When the store cannot be created or migrated (a test helper: that is the test failing).
    #[allow(clippy::expect_used)]
    pub async fn new(backend: Backend, name: &str) -> ScratchStore {
        match backend {
            Backend::Postgres => {
                let admin_url = test_database_url();
                let (db, url) = create_isolated_postgres(&admin_url, &format!("edict_test_{name}"))
                    .await
                    .expect("create an isolated PostgreSQL database");
                ScratchStore {
                    db,
                    url,
                    owner: Owner::Postgres { admin_url },
                }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!(
                    "edict-{name}-test-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                let url = format!("sqlite://{}/data/edict.db", dir.display());
                let db = Database::connect(&url).await.expect("open SQLite");
                db.migrate().await.expect("migrate SQLite");
                ScratchStore {
                    db,
                    url,
                    owner: Owner::Sqlite { dir },
                }
            }
        }
    }

    /// Closes the store and removes it (best effort: a leftover does not fail a test).
    pub async fn teardown(self) {
        self.db.close().await;
        match self.owner {
            Owner::Postgres { admin_url } => {
                let _ = drop_isolated_postgres(&admin_url, &self.url).await;
            }
            Owner::Sqlite { dir } => {
                let _ = tokio::fs::remove_dir_all(dir).await;
            }
        }
    }
}

/// One `#[tokio::test]` (multi-threaded, two workers) per case and backend, in modules `postgres` and
/// `sqlite`: each calls `super::run(Backend::…, super::case)`, so the invoking module defines `run`
/// (usually: build the fixture, then [`run_isolated`](crate::run_isolated)).
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run($crate::store::Backend::Postgres, super::$case).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run($crate::store::Backend::Sqlite, super::$case).await;
                }
            )*
        }
    };
}
