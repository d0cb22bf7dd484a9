//! The integration tests of `edict-agent`, one binary: each module runs the real `edict-agent` process
//! (`CARGO_BIN_EXE_edict-agent`) in a temporary home, organization file and data directory of its own.
//!
//! - `agent_run`: `edict-agent run` against a fake gateway written there;
//! - `snapshot_integrity`: a rule set edited inside the redb snapshot is refused at start;
//! - `service`: `service install|status|uninstall` against a temporary unit directory;
//! - `machine`: what the first two run on (the temporary machine, the agent's guard, `eventually`).

mod agent_run;
mod machine;
mod service;
mod snapshot_integrity;
