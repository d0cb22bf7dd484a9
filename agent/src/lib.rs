//! `edict-agent`: the enforcement daemon. It writes the managed sections of the `CLAUDE.md` files from
//! the rule sets a gateway sends, keeps them as the rules say (block, temporary, warning) and reports
//! every enforcement action.
//!
//! Layout: [`section`] (markers and merge), [`ruleset`] (the rule set document and renderer),
//! [`snapshot`] (redb state), [`files`] (paths, rendering per layer, atomic writes), [`enforce`] (the
//! decisions on a changed file), [`watch`] (notify watcher), [`client`] (the gateway connection),
//! [`daemon`] (`run`), [`login`] (enrollment), [`renew`] (the agent token's renewal), [`service`] (the
//! systemd or launchd unit), [`doctor`] (the checks of `edict-agent doctor`), [`cli`] and [`output`].

pub mod cli;
pub mod client;
pub mod daemon;
pub mod doctor;
pub mod enforce;
pub mod files;
pub mod frame;
pub mod login;
pub mod output;
pub mod renew;
pub mod ruleset;
pub mod section;
pub mod service;
pub mod snapshot;
pub mod tls;
pub mod watch;
