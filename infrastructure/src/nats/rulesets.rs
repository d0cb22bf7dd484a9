//! Team rule sets to gateways: the KV bucket `<prefix>rulesets`, key = team id, value = the rule set JSON
//! the `team_rulesets` projection stored.
//!
//! The bucket keeps one revision per key. Its stream is created by [`Nats::ensure_streams`] (by hand:
//! `create_key_value` fails on nats-server 2.9); here it is only opened with `get_key_value`.

use std::sync::Arc;

use async_nats::jetstream::kv;
use async_trait::async_trait;
use edict_projections::RulesetPublisher;
use futures::{Stream, StreamExt};

use super::{Nats, NatsError};
use crate::projection::RulesetUpdate;

/// Publishes rule sets to the KV bucket (the distributed deployment's [`RulesetPublisher`]).
#[derive(Debug, Clone)]
pub struct KvRulesetPublisher {
    store: kv::Store,
}

impl KvRulesetPublisher {
    /// Opens the bucket `<prefix>rulesets`, creating its stream when missing.
    ///
    /// # Errors
    /// [`NatsError::JetStream`] when the stream cannot be ensured or the bucket opened.
    pub async fn open(nats: &Nats) -> Result<KvRulesetPublisher, NatsError> {
        Ok(KvRulesetPublisher {
            store: open_bucket(nats).await?,
        })
    }
}

#[async_trait]
impl RulesetPublisher for KvRulesetPublisher {
    #[tracing::instrument(skip_all, fields(team = team), err)]
    async fn publish(&self, team: &str, ruleset: &serde_json::Value) -> Result<(), String> {
        let value = serde_json::to_vec(ruleset).map_err(|error| error.to_string())?;
        self.store
            .put(team, value.into())
            .await
            .map(drop)
            .map_err(|error| format!("put rule set of team {team}: {error}"))
    }
}

/// Every team's current rule set, then each new one as it is published, as the embedded mode's
/// [`WatchPublisher`](crate::projection::WatchPublisher) hands them out. Deleted keys and values that are
/// not JSON are skipped (the latter with a warning).
///
/// # Errors
/// [`NatsError::JetStream`] when the bucket cannot be opened or watched; an item is an error when the
/// watch fails (the gateway then opens a new watch, which starts with the current values again).
pub async fn watch_rulesets(
    nats: &Nats,
) -> Result<impl Stream<Item = Result<RulesetUpdate, NatsError>> + Send + use<>, NatsError> {
    let store = open_bucket(nats).await?;
    let watch = store
        .watch_with_history(">")
        .await
        .map_err(|error| NatsError::jetstream("watch rule sets", error))?;
    Ok(watch.filter_map(|entry| async move {
        match entry {
            Err(error) => Some(Err(NatsError::jetstream("watch rule sets", error))),
            Ok(entry) if entry.operation != kv::Operation::Put => None,
            Ok(entry) => match serde_json::from_slice(&entry.value) {
                Ok(ruleset) => Some(Ok(RulesetUpdate {
                    team: entry.key,
                    ruleset: Arc::new(ruleset),
                })),
                Err(error) => {
                    tracing::warn!(team = entry.key, %error, "rule set is not JSON; skipped");
                    None
                }
            },
        }
    }))
}

async fn open_bucket(nats: &Nats) -> Result<kv::Store, NatsError> {
    nats.ensure_streams().await?;
    let bucket = nats.prefix().rulesets_bucket();
    nats.jetstream()
        .get_key_value(bucket.as_str())
        .await
        .map_err(|error| NatsError::jetstream(format!("open bucket {bucket}"), error))
}
