//! Publishing rule sets: the runner hands every rule set document ([`RULESET_KIND`]) a commit wrote to its
//! [`RulesetPublisher`], and [`ProjectionRunner::republish_all`] sends them all again (at start, after a
//! rebuild).
//!
//! [`WatchPublisher`] is the embedded mode's publisher: the team rule sets runner publishes every new
//! rule set to it; gateways in the same process subscribe and push to their agents.
//!
//! It keeps the latest rule set per team (a gateway that starts later reads them with
//! [`WatchPublisher::current`]) and broadcasts each update. A subscriber that falls behind the channel's
//! capacity gets `RecvError::Lagged` and should re-read [`WatchPublisher::current`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use edict_projections::{DocKey, RULESET_KIND, RulesetPublisher, StoredDoc};
use serde_json::Value;
use tokio::sync::broadcast;

use super::RunnerError;
use super::runner::ProjectionRunner;
use super::sql;

/// Updates buffered per subscriber before it lags.
const CHANNEL_CAPACITY: usize = 1_024;

/// One published rule set.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesetUpdate {
    /// The team id.
    pub team: String,
    /// The rule set document, as the projection stored it.
    pub ruleset: Arc<Value>,
}

/// The revision of a rule set document (`None` without one, which orders below any revision).
pub(crate) fn revision_of(ruleset: &Value) -> Option<u64> {
    ruleset.get("revision").and_then(Value::as_u64)
}

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
    async fn publish(&self, team: &str, ruleset: &Value) -> Result<(), String> {
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
        });
        Ok(())
    }
}

impl ProjectionRunner {
    /// Hands the rule set documents among `dirty` to the publisher; failures are logged (a restart
    /// republishes everything).
    pub(super) async fn publish(&self, dirty: &[(DocKey, Option<StoredDoc>)]) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        for ((kind, key), doc) in dirty {
            let Some(doc) = doc.as_ref().filter(|_| kind == RULESET_KIND) else {
                continue;
            };
            let team = doc.meta.team.as_deref().unwrap_or(key);
            if let Err(error) = publisher.publish(team, &doc.doc).await {
                tracing::warn!(projection = self.name(), team, %error, "cannot publish a rule set");
            }
        }
    }

    /// Publishes every rule set document of the served generation (at start, and after a rebuild), so
    /// a publisher that missed updates converges. Returns how many were published.
    ///
    /// # Errors
    /// [`RunnerError::Store`] when the database fails or some rule sets could not be published (all
    /// are tried).
    #[tracing::instrument(skip_all, fields(projection = self.name()), err)]
    pub async fn republish_all(&self) -> Result<u64, RunnerError> {
        let Some(publisher) = &self.publisher else {
            return Ok(0);
        };
        let rulesets = sql::served_docs_of_kind(&self.db, self.name(), RULESET_KIND).await?;
        let mut published = 0;
        let mut first_failure = None;
        for (key, team, doc) in &rulesets {
            let team = team.as_deref().unwrap_or(key);
            match publisher.publish(team, doc).await {
                Ok(()) => published += 1,
                Err(error) => {
                    tracing::warn!(projection = self.name(), team, %error, "cannot publish a rule set");
                    first_failure.get_or_insert(error);
                }
            }
        }
        match first_failure {
            None => Ok(published),
            Some(error) => Err(RunnerError::Store(format!(
                "{} of {} rule sets not published: {error}",
                rulesets.len() as u64 - published,
                rulesets.len()
            ))),
        }
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
            .publish("team-1", &json!({"revision": 1}))
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
        publisher.publish("t", &ruleset).await.unwrap_or_default();
        let mut updates = publisher.subscribe();
        publisher.publish("t", &ruleset).await.unwrap_or_default();
        assert!(updates.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_lower_revision_never_replaces_a_higher_one() {
        let publisher = WatchPublisher::new();
        publisher
            .publish("t", &json!({"revision": 2, "hash": "b"}))
            .await
            .unwrap_or_default();
        let mut updates = publisher.subscribe();
        publisher
            .publish("t", &json!({"revision": 1, "hash": "a"}))
            .await
            .unwrap_or_default();
        assert_eq!(
            publisher.current("t").as_deref(),
            Some(&json!({"revision": 2, "hash": "b"}))
        );
        assert!(updates.try_recv().is_err(), "nobody hears of the older one");
        // The same revision with another hash (a rebuild with a changed renderer) goes through.
        publisher
            .publish("t", &json!({"revision": 2, "hash": "c"}))
            .await
            .unwrap_or_default();
        assert_eq!(
            publisher.current("t").as_deref(),
            Some(&json!({"revision": 2, "hash": "c"}))
        );
    }
}
