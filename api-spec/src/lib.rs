//! Edict's wire contract.
//!
//! - [`protocol`]: the messages agents and gateways exchange (serde only; the agent depends on this crate
//!   without default features).
//! - [`ruleset`]: a team's rule set document, the managed-section renderer and its rule markers, shared
//!   by the server's projection and the agent (serde only).
//! - `server` (default feature): the poem-openapi HTTP API. The spec it generates is committed as
//!   `api-spec/openapi.yaml`, and a test fails when the two differ.

pub mod protocol;
pub mod ruleset;
#[cfg(feature = "server")]
pub mod server;
