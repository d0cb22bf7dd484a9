//! Edict's adapters: everything that touches a database, the network or the operating system.
//!
//! - [`store`]: the event store (postgres-es / sqlite-es) with the commit-ordered global log.
//! - [`audit`]: the hash chain beside the log, its signed checkpoints, and verifying them.
//! - [`auth`]: credentials (argon2), sessions and JWT access tokens, agent tokens.
//! - [`nats`]: the NATS JetStream transport: the event relay, projection consumers, the rule set bucket.
//! - [`projection`]: the projection runner (live path, catch-up, rebuild) and the read-model store.
//! - [`idempotency`]: remembered responses for `Idempotency-Key` retries.
//! - [`settings`]: configuration from the environment, with secrets wrapped.
//! - [`metrics`]: the Prometheus recorder, who may read `/metrics`, the gauges sampled from the store.
//! - [`supervisor`]: restarts the roles of a process with backoff and keeps their states.
//! - [`telemetry`]: the tracing subscriber.

/// Runs the same query-building expression on whichever pool `$db` (a [`store::Database`]) holds: the
/// SQL Edict keeps beside the log is written once in the dialect PostgreSQL and SQLite share.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Database::Postgres($pool) => $body,
            $crate::store::Database::Sqlite($pool) => $body,
        }
    };
}

pub mod audit;
pub mod auth;
pub mod idempotency;
pub mod metrics;
pub mod nats;
pub mod projection;
pub mod settings;
pub mod signing;
pub mod store;
pub mod supervisor;
pub mod telemetry;
