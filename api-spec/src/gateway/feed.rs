//! How a gateway's cache of rule sets ([`Rulesets`]) follows the feed ([`RulesetFeed`], a port of
//! `edict_application::delivery`; its adapters, the in-process publisher's `WatchFeed` and the KV
//! bucket's `NatsFeed`, are in `edict-infrastructure`).
//!
//! Each update the stream brings is published to the cache (and, when it is a new revision, fanned
//! out). A feed that fails is opened again after a pause; an open that starts with the current values
//! (the KV watch does) simply re-announces revisions the connections already sent, which they skip.
//! After the stream lagged, and every 30 s, the cache is reconciled with the feed's current values
//! ([`RulesetFeed::current`]: the KV bucket, the in-process publisher's latest): a revision the
//! stream skipped is announced then (ADR 0014). When that read fails after a lag, the cache is
//! dropped.

use super::rulesets::{Rulesets, signer_of};
use edict_application::delivery::{FeedError, RulesetFeed};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How often a gateway reconciles its cache with the feed's current rule sets, a safety net under
/// the stream (which a lag or a lost watch message would leave behind).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

impl Rulesets {
    /// Reads the feed's current rule set of every team this gateway caches or has connections of, and
    /// announces each that is newer than the cached one (to the cache and the connections). Answers
    /// how many were newer.
    ///
    /// # Errors
    /// [`FeedError::Unavailable`] when the feed cannot be read.
    pub async fn reconcile(&self, feed: &dyn RulesetFeed) -> Result<usize, FeedError> {
        let teams = self.teams();
        if teams.is_empty() {
            return Ok(0);
        }
        let mut newer = 0;
        for update in feed.current(&teams).await? {
            let held = self.cached(&update.team);
            let revision = update.ruleset["revision"].as_u64();
            let resigned = held.as_ref().is_some_and(|held| {
                Some(held.revision) == revision
                    && held.key_id.as_deref() != signer_of(&update.ruleset)
            });
            if held.map(|payload| payload.revision) < revision || resigned {
                newer += 1;
                self.publish(&update);
            }
        }
        if newer > 0 {
            tracing::info!(
                teams = teams.len(),
                newer,
                "rule set cache reconciled with the feed"
            );
        }
        Ok(newer)
    }

    /// Pumps `feed` into the cache and the broadcast until `shutdown`, reopening it after failures.
    ///
    /// The cache is reconciled with the feed's current rule sets ([`Rulesets::reconcile`]) after the
    /// stream lagged and every 30 s: a revision the stream skipped still reaches the connections.
    pub async fn follow(
        &self,
        feed: Arc<dyn RulesetFeed>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let pause = Duration::from_secs(1);
        let mut reconcile = tokio::time::interval_at(
            tokio::time::Instant::now() + RECONCILE_INTERVAL,
            RECONCILE_INTERVAL,
        );
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut updates = match feed.open().await {
                Ok(updates) => updates,
                Err(error) => {
                    tracing::warn!(%error, "cannot open the rule set feed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = reconcile.tick() => {
                        if let Err(error) = self.reconcile(feed.as_ref()).await {
                            tracing::warn!(%error, "cannot reconcile the rule set cache; retrying later");
                        }
                    }
                    item = updates.next() => match item {
                        Some(Ok(update)) => self.publish(&update),
                        Some(Err(FeedError::Lagged(missed))) => {
                            tracing::warn!(missed, "rule set feed lagged; reconciling the cache with the feed");
                            if let Err(error) = self.reconcile(feed.as_ref()).await {
                                // Forget the cache then: the next reads ask the feed again.
                                tracing::warn!(%error, "cannot reconcile; dropping the cache");
                                self.forget();
                            }
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "rule set feed failed; reopening");
                            break;
                        }
                        None => {
                            tracing::warn!("rule set feed ended; reopening");
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
