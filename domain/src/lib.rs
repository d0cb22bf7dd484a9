//! Edict's domain: the aggregates Rule, Team and ChangeRequest, and the supporting User and Agent, with
//! their commands, events, typed errors and value types.
//!
//! Pure: no IO, no clock, no randomness. Outside facts (the time, whether a rule is approved, who is a
//! team admin) arrive inside the commands, resolved by the application layer.
//!
//! Layout: one module per aggregate (`rule`, `team`, `change_request`, `user`, `agent`), each split into
//! `command.rs`, `event.rs`, `error.rs` and `value.rs`; identifiers in `ids`; value types shared by several
//! aggregates, and the [`ValueError`] every parser returns, in `value`; the impls all aggregates share
//! (`Aggregate`, `Versioned`, `DomainEvent`) come from the macros in `aggregate`. Every aggregate is a
//! cqrs-es [`Aggregate`](cqrs_es::Aggregate) with `Services = ()`, whose `Default` is "does not exist
//! yet".

#[macro_use]
mod aggregate;

pub mod agent;
pub mod change_request;
pub mod ids;
pub mod rule;
pub mod team;
pub mod user;
pub mod value;

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
pub(crate) mod testkit;

pub use agent::Agent;
pub use change_request::ChangeRequest;
pub use ids::{AgentId, ChangeRequestId, ExceptionId, RuleId, TeamId, UserId};
pub use rule::Rule;
pub use team::Team;
pub use user::User;
pub use value::{Enforcement, EnforcementMode, Layer, Reason, Sha256Hex, ValueError};

/// An aggregate that knows how many events it has applied: its version, which the API shows and
/// `If-Match` compares against. Every aggregate increments it in `apply`, once per event.
pub trait Versioned {
    /// The number of events applied so far (0 for an aggregate that does not exist yet).
    fn version(&self) -> u64;
}
