//! Edict's read models: projections of the global log into documents the query API serves.
//!
//! A projection is a fold: [`Projection::apply`] takes one [`RecordedEvent`] and updates documents through
//! [`Docs`], a write-back cache over one projection generation. The runner (in `edict-infrastructure`)
//! loads missing documents from the database inside the transaction that also moves the projection's
//! checkpoint, and writes the dirty ones back at the end of a batch; a rebuild runs the same code over
//! an empty generation entirely in memory, then writes everything once. So the live read model and a
//! rebuild are the same function of the log, and a redelivered event never applies twice (the runner
//! skips it by checkpoint).
//!
//! Layout:
//! - [`docs`]: [`Docs`], [`DocMeta`], [`DocLoader`], [`StoredDoc`];
//! - [`decode`]: a recorded event's payload back to its domain event;
//! - one module per projection (see [`all`]): [`rule_catalog`], [`team_rulesets`], [`change_inbox`],
//!   [`directory`], [`agent_fleet`], each declared with the `projection!` macro of `declare`;
//! - [`ruleset`]: the team rule set documents published to gateways, and the managed-section renderer;
//! - [`as_of`]: one document as it was at a past point of the log, replayed in memory (time travel);
//! - this file: the [`Projection`] trait, [`all`] and [`by_name`], [`content_hash`] (compares a live
//!   read model with a rebuild) and [`replay`] (an in-memory fold for tests and benchmarks).

#[macro_use]
mod declare;

pub mod agent_fleet;
pub mod as_of;
mod canonical;
pub mod change_inbox;
pub mod decode;
pub mod directory;
pub mod docs;
pub mod rule_catalog;
pub mod ruleset;
pub mod team_rulesets;

#[cfg(test)]
mod batching_tests;
#[cfg(test)]
mod testkit;

pub use docs::{DocKey, DocLoader, DocMeta, Docs, EmptyLoader, StoredDoc};
pub use edict_application::event_log::RecordedEvent;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Why a projection could not apply an event. The runner stops the projection and shows the error in
/// its status; an event is never skipped silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// The event's payload does not decode as its aggregate's event type.
    #[error("cannot decode {event_type} v{event_version} at position {position}: {reason}")]
    Undecodable {
        /// The event's global position.
        position: i64,
        /// Its type.
        event_type: String,
        /// Its version.
        event_version: String,
        /// The decoder's message.
        reason: String,
    },
    /// The event contradicts the read model (for example an event about a rule the catalog never saw).
    #[error("inconsistent event at position {position}: {reason}")]
    Inconsistent {
        /// The event's global position.
        position: i64,
        /// What does not fit.
        reason: String,
    },
    /// A stored document could not be read or decoded.
    #[error("document store failure: {0}")]
    Store(String),
}

/// What applying one event to a projection comes to.
pub(crate) type Applied = Result<(), ProjectionError>;

/// A read model built from the global log.
#[async_trait]
pub trait Projection: Send + Sync {
    /// The projection's stable name (`rule_catalog`, `team_rulesets`, …).
    fn name(&self) -> &'static str;

    /// The aggregate types whose events can change this projection (empty: any). A reader that replays
    /// only these events (see [`as_of`]) computes the same documents as one that replays the whole log.
    fn follows(&self) -> &'static [&'static str] {
        &[]
    }

    /// Applies one event. Events of aggregates the projection does not follow are ignored (`Ok`).
    ///
    /// # Errors
    /// A [`ProjectionError`] when the event cannot be applied; the runner stops the projection there.
    async fn apply(
        &self,
        event: &RecordedEvent,
        docs: &mut Docs<'_>,
    ) -> Result<(), ProjectionError>;
}

/// The document kind of a team's effective rule set (written by the `team_rulesets` projection), which the
/// runner hands to a [`RulesetPublisher`] after each commit that changed it.
pub const RULESET_KIND: &str = "ruleset";

/// Makes new team rule set revisions visible to gateways: the NATS KV bucket `rulesets` (key = team id) in
/// the distributed deployment, an in-process watch channel in the embedded one.
#[async_trait]
pub trait RulesetPublisher: Send + Sync {
    /// Publishes the rule set document of `team` (the JSON the projection stored under [`RULESET_KIND`]),
    /// with the `origin` of the command that led to it for the gateways' traces and logs.
    /// Publishing the same revision twice is harmless.
    ///
    /// # Errors
    /// A message when the transport fails; the runner republishes every rule set at start.
    async fn publish(
        &self,
        team: &str,
        ruleset: &serde_json::Value,
        origin: &edict_application::delivery::Origin,
    ) -> Result<(), String>;
}

/// Every projection, in a stable order: `rule_catalog`, `team_rulesets`, `change_inbox`, `directory`,
/// `agent_fleet`.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(rule_catalog::RuleCatalog),
        Arc::new(team_rulesets::TeamRulesets),
        Arc::new(change_inbox::ChangeInbox),
        Arc::new(directory::Directory),
        Arc::new(agent_fleet::AgentFleet),
    ]
}

/// The projection named `name`, if there is one.
pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}

/// SHA-256 (lowercase hex) of a set of documents: each `(kind, key, meta, doc)` as canonical JSON (keys
/// sorted, so a `jsonb` round trip does not matter), one per line, in key order whatever the iterator's
/// order. Equal for a live read model and its rebuild.
pub fn content_hash<'a>(docs: impl Iterator<Item = (&'a DocKey, &'a StoredDoc)>) -> String {
    let mut sorted: Vec<(&DocKey, &StoredDoc)> = docs.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for ((kind, key), stored) in sorted {
        let line = serde_json::json!([
            kind,
            key,
            {
                "team": stored.meta.team,
                "status": stored.meta.status,
                "sort_key": stored.meta.sort_key,
            },
            stored.doc,
        ]);
        hasher.update(canonical::to_string(&line).as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Folds `events` with `projection` into an empty generation, in memory, and returns every document
/// (in key order): what a rebuild computes.
///
/// # Errors
/// The first [`ProjectionError`] the projection returns.
pub async fn replay(
    projection: &dyn Projection,
    events: &[RecordedEvent],
) -> Result<Vec<(DocKey, StoredDoc)>, ProjectionError> {
    let mut loader = EmptyLoader;
    let mut docs = Docs::new(&mut loader);
    for event in events {
        projection.apply(event, &mut docs).await?;
    }
    Ok(docs
        .all()?
        .map(|(key, doc)| (key.clone(), doc.clone()))
        .collect())
}

/// An [`ProjectionError::Inconsistent`] about `event`.
pub(crate) fn inconsistent(event: &RecordedEvent, reason: impl Into<String>) -> ProjectionError {
    ProjectionError::Inconsistent {
        position: event.global_position,
        reason: reason.into(),
    }
}

/// The aggregate version an event brings its aggregate to (its sequence; never negative in a store).
pub(crate) fn version_of(event: &RecordedEvent) -> u64 {
    u64::try_from(event.sequence).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_projection_is_found_by_its_name() {
        let names: Vec<_> = all().iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "rule_catalog",
                "team_rulesets",
                "change_inbox",
                "directory",
                "agent_fleet"
            ]
        );
        for name in names {
            assert_eq!(by_name(name).map(|p| p.name()), Some(name));
        }
        assert!(by_name("audit").is_none());
    }

    fn stored(doc: serde_json::Value, status: &str) -> StoredDoc {
        StoredDoc {
            meta: DocMeta {
                team: None,
                status: Some(status.into()),
                sort_key: "k".into(),
            },
            doc,
        }
    }

    #[test]
    fn the_content_hash_ignores_order_but_not_content() {
        let a: DocKey = ("rule".into(), "1".into());
        let b: DocKey = ("rule".into(), "2".into());
        let one = stored(serde_json::from_str(r#"{"x":1,"y":2}"#).unwrap(), "draft");
        let reordered = stored(serde_json::from_str(r#"{"y":2,"x":1}"#).unwrap(), "draft");
        let two = stored(serde_json::json!({"x": 2}), "draft");
        let forward = content_hash([(&a, &one), (&b, &two)].into_iter());
        let backward = content_hash([(&b, &two), (&a, &reordered)].into_iter());
        assert_eq!(forward, backward);
        let other_meta = stored(serde_json::json!({"x": 2}), "approved");
        assert_ne!(
            forward,
            content_hash([(&a, &one), (&b, &other_meta)].into_iter())
        );
        assert_ne!(forward, content_hash([(&a, &one)].into_iter()));
    }
}
