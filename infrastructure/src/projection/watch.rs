//! The embedded mode's rule set channel: [`WatchPublisher`], the [`RulesetPublisher`] the team rule
//! sets runner publishes every new rule set to, and [`WatchFeed`], the gateway's
//! [`RulesetFeed`] over it, for gateways in the same process.
//!
//! The publisher keeps the latest rule set per team (a gateway that starts later reads them with
//! [`WatchPublisher::current`]) and broadcasts each update. A subscriber that falls behind the channel's
//! capacity gets `RecvError::Lagged` (the feed's [`FeedError::Lagged`]) and should re-read
//! [`WatchPublisher::current`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use edict_application::delivery::{FeedError, Origin, RulesetFeed, RulesetUpdate};
use edict_projections::RulesetPublisher;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use serde_json::Value;
use tokio::sync::broadcast;

use super::publisher::revision_of;

/// Updates buffered per subscriber before it lags.
const CHANNEL_CAPACITY: usize = 1_024;

/// An in-process [`RulesetPublisher`]: latest value per team plus a broadcast of every update.
#[derive(Debug, Clone)]
pub struct WatchPublisher {
    sender: broadcast::Sender<RulesetUpdate>,
    latest: Arc<Mutex<HashMap<String, Arc<Value>>>>,
}

impl Default for WatchPublisher {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchPublisher {
    /// A publisher with no rule sets and no subscribers.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        WatchPublisher {
            sender,
            latest: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Every update published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RulesetUpdate> {
        self.sender.subscribe()
    }

    /// The latest rule set of `team`, if one was published.
    pub fn current(&self, team: &str) -> Option<Arc<Value>> {
        // A poisoned lock only means a panic elsewhere while inserting; the map is still usable.
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        latest.get(team).cloned()
    }
}

#[async_trait]
impl RulesetPublisher for WatchPublisher {
    async fn publish(&self, team: &str, ruleset: &Value, origin: &Origin) -> Result<(), String> {
        let ruleset = Arc::new(ruleset.clone());
        {
            let mut latest = self
                .latest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(held) = latest.get(team)
                && (**held == *ruleset || revision_of(held) > revision_of(&ruleset))
            {
                // Republishing the same rule set (a restart, a rebuild) wakes nobody, and an older
                // revision (a late publisher) never replaces a newer one.
                return Ok(());
            }
            latest.insert(team.to_owned(), Arc::clone(&ruleset));
        }
        // No subscriber is not an error: the latest value is kept for those that come later.
        let _ = self.sender.send(RulesetUpdate {
            team: team.to_owned(),
            ruleset,
            origin: origin.clone(),
        });
        Ok(())
    }
}

/// The embedded mode's feed: the projection runner's in-process [`WatchPublisher`].
#[derive(Debug, Clone)]
pub struct WatchFeed(pub WatchPublisher);

#[async_trait]
impl RulesetFeed for WatchFeed {
    async fn open(
        &self,
    ) -> Result<BoxStream<'static, Result<RulesetUpdate, FeedError>>, FeedError> {
        let receiver = self.0.subscribe();
        Ok(stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(update) => Some((Ok(update), receiver)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some((Err(FeedError::Lagged(n)), receiver))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed())
    }

    async fn current(&self, teams: &[String]) -> Result<Vec<RulesetUpdate>, FeedError> {
        Ok(teams
            .iter()
            .filter_map(|team| {
                self.0.current(team).map(|ruleset| RulesetUpdate {
                    team: team.clone(),
                    ruleset,
                    origin: Origin::default(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn subscribers_see_new_rule_sets_and_the_latest_is_kept() {
        let publisher = WatchPublisher::new();
        let mut updates = publisher.subscribe();
        publisher
            .publish("team-1", &json!({"revision": 1}), &Origin::default())
            .await
            .unwrap_or_default();
        let update = updates.recv().await.ok();
        assert_eq!(
            update.map(|u| (u.team, (*u.ruleset).clone())),
            Some(("team-1".to_owned(), json!({"revision": 1})))
        );
        assert_eq!(
            publisher.current("team-1").as_deref(),
            Some(&json!({"revision": 1}))
        );
        assert_eq!(publisher.current("team-2"), None);
    }

    #[tokio::test]
    async fn republishing_the_same_rule_set_wakes_nobody() {
        let publisher = WatchPublisher::new();
        let ruleset = json!({"revision": 3});
        publisher
            .publish("t", &ruleset, &Origin::default())
            .await
            .unwrap_or_default();
        let mut updates = publisher.subscribe();
        publisher
            .publish("t", &ruleset, &Origin::default())
            .await
            .unwrap_or_default();
        assert!(updates.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_lower_revision_never_replaces_a_higher_one() {
        let publisher = WatchPublisher::new();
        publisher
            .publish(
                "t",
                &json!({"revision": 2, "hash": "b"}),
                &Origin::default(),
            )
            .await
            .unwrap_or_default();
        let mut updates = publisher.subscribe();
        publisher
            .publish(
                "t",
                &json!({"revision": 1, "hash": "a"}),
                &Origin::default(),
            )
            .await
            .unwrap_or_default();
        assert_eq!(
            publisher.current("t").as_deref(),
            Some(&json!({"revision": 2, "hash": "b"}))
        );
        assert!(updates.try_recv().is_err(), "nobody hears of the older one");
        // The same revision with another hash (a rebuild with a changed renderer) goes through.
        publisher
            .publish(
                "t",
                &json!({"revision": 2, "hash": "c"}),
                &Origin::default(),
            )
            .await
            .unwrap_or_default();
        assert_eq!(
            publisher.current("t").as_deref(),
            Some(&json!({"revision": 2, "hash": "c"}))
        );
    }
}
