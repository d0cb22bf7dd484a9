//! Edict's two edges: the HTTP API with its OpenAPI spec, and the agent gateway with its protocol
//! (ADR 0026).
//!
//! - [`protocol`]: the messages agents and gateways exchange (serde only; the agent depends on this crate
//!   without default features).
//! - [`ruleset`]: a team's rule set document, the managed-section renderer and its rule markers, shared
//!   by the server's projection and the agent (serde only).
//! - `server` (default feature): the poem-openapi HTTP API. The spec it generates is committed as
//!   `api-spec/openapi.yaml`, and a test fails when the two differ.
//! - `console` (with `server`): the web console, pages for people served by the API process at `/`
//!   (docs/adr/0028-web-console.md).
//! - `gateway` (default feature): the agent gateway, the WebSocket server of [`protocol`].
//!
//! Both servers depend on `edict-application` (its use cases and ports) and never on
//! `edict-infrastructure`: the composition root hands them their adapters.

#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod protocol;
pub mod ruleset;
#[cfg(feature = "server")]
pub mod server;
#[cfg(any(feature = "server", feature = "gateway"))]
mod trace;
