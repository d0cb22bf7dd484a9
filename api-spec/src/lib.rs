//! Edict's wire contract.
//!
//! - [`protocol`]: the messages agents and gateways exchange (serde only; the agent depends on this crate
//!   without default features).
//! - `server` (default feature): the poem-openapi HTTP API. The spec it generates is committed as
//!   `api-spec/openapi.yaml`, and a test fails when the two differ.

pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
