//! Edict's adapters: everything that touches a database, the network or the operating system.
//!
//! - [`store`]: the event store (postgres-es / sqlite-es) with the commit-ordered global log.
//! - [`auth`]: credentials (argon2), sessions and JWT access tokens, agent tokens.
//! - [`nats`]: the NATS JetStream transport: the event relay, projection consumers, the rule set bucket.
//! - [`projection`]: the projection runner (live path, catch-up, rebuild) and the read-model store.
//! - [`gateway`]: the agent gateway (WebSocket `/ws`): rule sets to agents, their reports and
//!   convergence back.
//! - [`idempotency`]: remembered responses for `Idempotency-Key` retries.
//! - [`settings`]: configuration from the environment, with secrets wrapped.
//! - [`telemetry`]: the tracing subscriber.

pub mod auth;
pub mod gateway;
pub mod idempotency;
pub mod nats;
pub mod projection;
pub mod settings;
pub mod store;
pub mod telemetry;
