//! Edict's application layer: the use cases over cqrs-es and the ports they need.
//!
//! - [`service`]: [`Edict`], the use cases, split by aggregate into [`rules`], [`teams`],
//!   [`change_requests`], [`users`], [`agents`] and [`sessions`] (login, tokens, authentication).
//! - [`principal`]: who is calling and what they may do; [`probation`]: who counts towards a quorum.
//! - [`command`]: the command executor (load, check expected version, decide, commit) that replaces
//!   `CqrsFramework`, so a caller learns the new version of what it changed.
//! - [`event_log`]: the commit-ordered global log every store must offer (`read_all`).
//! - [`auth`]: the authentication and idempotency ports.
//! - [`history`]: replay for auditors (the filtered log, aggregate histories, time travel).
//! - [`gateway`]: what the agent gateway asks of Edict (recording enforcement reports, an agent's teams).
//! - [`delivery`]: the ports the agent gateway drives (the rule set feed, the convergence records).
//! - [`audit`]: the hash chain over the log, signed checkpoints, the export with hashes.
//! - [`metrics`]: what Edict measures (names, help texts, the gauges sampled from the store).
//! - [`supervision`]: the states of this process's roles and the probes readiness runs.
//! - [`metadata`], [`clock`], [`error`].

pub mod agents;
pub mod audit;
pub mod auth;
pub mod change_requests;
pub mod clock;
pub mod command;
pub mod delivery;
pub mod enrollment;
pub mod error;
pub mod event_log;
pub mod gateway;
pub mod history;
pub mod metadata;
pub mod metrics;
pub mod principal;
pub mod probation;
pub mod queries;
pub mod read_models;
pub mod rules;
pub mod service;
pub mod sessions;
pub mod signing;
pub mod supervision;
pub mod teams;
pub mod users;

pub use service::{CommitHook, Edict, NoHook, Outcome, Ports, RequestContext};
