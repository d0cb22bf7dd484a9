//! End-to-end tests of the real `edict` binary: each test starts `edict serve` as a process on its own
//! store (a fresh PostgreSQL database, or an SQLite file in a temporary directory) and talks HTTP to it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod browser;
mod harness;

mod admin_cli;
mod agent_tokens;
mod agents;
mod api_errors;
mod audit;
mod auth;
mod authority;
mod bounds;
mod chaos;
mod console;
mod console_browser;
mod console_flow;
mod contract;
mod delivery;
mod enrollment;
mod health;
mod history;
mod metadata;
mod metrics;
mod nats_auth;
mod openapi;
mod projections;
mod proxy;
mod rate_limits;
mod removals;
mod roles;
mod rotation;
mod secrets;
mod signing;
mod tampering;
mod tls;
mod traces;
mod workflows;
