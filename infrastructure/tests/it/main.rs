//! The integration tests of `edict-infrastructure`, one binary (one link of the crate, not one per
//! file). Each module runs the adapters against real servers and files, isolated per test: its own
//! PostgreSQL database, its own SQLite file, its own NATS prefix (`edict-test-kit`).
//!
//! - the event store: `store_contract` (both backends), `store_global_log`, `bounds_event_log`,
//!   `idempotency_store`;
//! - the read models and their runner: `bounds_read_models`, `projection_runner`,
//!   `projection_rebuild_rate` (ignored: a benchmark), `publication`;
//! - NATS: `nats_relay`, `nats_projector`, `nats_auth` (private servers), `nats_traces` (the trace
//!   context in message headers);
//! - the gateway's adapters: `gateway_nats_feed`, `convergence_history`;
//! - the audit chain: `audit_chain`.

mod audit_chain;
mod bounds_event_log;
mod bounds_read_models;
mod convergence_history;
mod gateway_nats_feed;
mod idempotency_store;
mod nats_auth;
mod nats_projector;
mod nats_relay;
mod nats_traces;
mod projection_rebuild_rate;
mod projection_runner;
mod publication;
mod store_contract;
mod store_global_log;
mod support;
