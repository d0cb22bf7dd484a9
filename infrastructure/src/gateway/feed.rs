//! Where a gateway learns of new rule sets, and the payloads it sends.
//!
//! - [`RulesetFeed`]: the stream of published rule sets, with two adapters: [`WatchFeed`] (the embedded
//!   mode's in-process [`WatchPublisher`]) and [`NatsFeed`] (the distributed mode's KV bucket watch).
//! - [`Rulesets`]: one serialized `rule_set` message per (team, revision), encoded once as the
//!   WebSocket frame every connection of the team writes as it is (reference-counted `Bytes`), the
//!   latest per team kept, each new one broadcast to the connections. A team the feed has not
//!   mentioned yet is read from the `team_rulesets` read model.
//!
//! A feed that fails is opened again after a pause; an open that starts with the current values (the KV
//! watch does) simply re-announces revisions the connections already sent, which they skip.
//!
//! One payload per (team, revision): a revision already cached is not serialized again, and a team
//! missing from the cache is read and serialized by one connection while the others wait for it (after
//! a gateway restart thousands of agents ask for the same few teams at once). Each build is logged
//! (`rule set payload built`, target `edict_infrastructure::gateway::feed`, level info) and counted in
//! [`Rulesets::built`], so a benchmark can check it.

use crate::nats::{Nats, watch_rulesets};
use crate::projection::{RulesetUpdate, WatchPublisher};
use async_trait::async_trait;
use edict_api::protocol::GatewayMessage;
use edict_application::Edict;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Bytes;

/// Rule set notifications buffered per connection; a connection that falls further behind is closed
/// with `too_slow` (it resyncs with a new `hello`), never silently skipped.
const BROADCAST_CAPACITY: usize = 256;
/// Revisions a team's broadcast holds for a connection that has not taken them yet (a connection
/// that falls this far behind is closed with `too_slow` and resyncs).
const TEAM_CAPACITY: usize = 16;

/// The rule set feed failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The transport failed; the gateway opens the feed again.
    #[error("rule set feed unavailable: {0}")]
    Unavailable(String),
    /// The consumer fell behind and missed updates; the gateway re-reads what it serves.
    #[error("rule set feed lagged by {0} updates")]
    Lagged(u64),
}

/// The published rule sets, as a stream.
#[async_trait]
pub trait RulesetFeed: Send + Sync + 'static {
    /// Opens the stream of rule sets published from now on (an adapter may start with the current
    /// ones).
    ///
    /// # Errors
    /// [`FeedError::Unavailable`] when the transport cannot be opened; items are errors when it fails
    /// later ([`FeedError::Lagged`] when updates were missed).
    async fn open(&self)
    -> Result<BoxStream<'static, Result<RulesetUpdate, FeedError>>, FeedError>;
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
}

/// The distributed mode's feed: a watch of the `<prefix>rulesets` KV bucket.
#[derive(Debug, Clone)]
pub struct NatsFeed(pub Nats);

#[async_trait]
impl RulesetFeed for NatsFeed {
    async fn open(
        &self,
    ) -> Result<BoxStream<'static, Result<RulesetUpdate, FeedError>>, FeedError> {
        let watch = watch_rulesets(&self.0)
            .await
            .map_err(|e| FeedError::Unavailable(e.to_string()))?;
        Ok(watch
            .map(|item| item.map_err(|e| FeedError::Unavailable(e.to_string())))
            .boxed())
    }
}

/// One rule set revision, serialized once as the `rule_set` message every connection sends.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The team.
    pub team: Arc<str>,
    /// The revision.
    pub revision: u64,
    /// Its hash.
    pub hash: Arc<str>,
    /// The `rule_set` message (JSON) as one encoded WebSocket text frame, header included.
    pub frame: Bytes,
}

impl Payload {
    /// The `rule_set` message (JSON) the frame carries.
    pub fn message(&self) -> &[u8] {
        super::wire::payload_of(&self.frame)
    }

    /// The payload of a `team_rulesets` document; `None` when it has no revision or hash.
    fn of(team: &str, doc: &Value) -> Option<Payload> {
        let revision = doc["revision"].as_u64()?;
        let hash = doc["hash"].as_str()?.to_owned();
        tracing::info!(team, revision, "rule set payload built");
        let message = GatewayMessage::RuleSet {
            team: team.to_owned(),
            revision,
            hash: hash.clone(),
            ruleset: doc.clone(),
        };
        let text = serde_json::to_vec(&message).ok()?;
        Some(Payload {
            team: Arc::from(team),
            revision,
            hash: Arc::from(hash),
            frame: super::wire::frame(text),
        })
    }
}

/// The latest payload per team and the broadcast of new ones.
#[derive(Debug, Clone)]
pub struct Rulesets {
    latest: Arc<RwLock<HashMap<String, Arc<Payload>>>>,
    sender: broadcast::Sender<Arc<Payload>>,
    /// One broadcast per team, created when a connection first follows the team: a new revision
    /// wakes the connections of its team only.
    teams: Arc<std::sync::Mutex<HashMap<String, broadcast::Sender<Arc<Payload>>>>>,
    /// Held while a team missing from the cache is read from the read model (one at a time: misses
    /// are rare, and the connections that wait find the payload cached when they get the lock).
    loading: Arc<tokio::sync::Mutex<()>>,
    /// Payloads serialized so far.
    built: Arc<AtomicU64>,
}

impl Default for Rulesets {
    fn default() -> Self {
        Self::new()
    }
}

impl Rulesets {
    /// Empty.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Rulesets {
            latest: Arc::new(RwLock::new(HashMap::new())),
            sender,
            teams: Arc::new(std::sync::Mutex::new(HashMap::new())),
            loading: Arc::new(tokio::sync::Mutex::new(())),
            built: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many payloads this gateway serialized (one per team and revision, unless the feed lagged
    /// and the cache was dropped).
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// [`Payload::of`], counted.
    fn build(&self, team: &str, doc: &Value) -> Option<Arc<Payload>> {
        let payload = Payload::of(team, doc)?;
        self.built.fetch_add(1, Ordering::Relaxed);
        Some(Arc::new(payload))
    }

    /// Every new revision from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Payload>> {
        self.sender.subscribe()
    }

    /// Every new revision of `team` from now on.
    pub fn subscribe_team(&self, team: &str) -> broadcast::Receiver<Arc<Payload>> {
        let mut teams = self
            .teams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match teams.get(team) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(TEAM_CAPACITY);
                teams.insert(team.to_owned(), sender);
                receiver
            }
        }
    }

    /// The cached latest rule set of `team`, if any.
    pub(crate) fn cached(&self, team: &str) -> Option<Arc<Payload>> {
        // A poisoned lock only means a panic elsewhere while inserting; the map is still usable.
        let latest = self
            .latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        latest.get(team).cloned()
    }

    /// Keeps `payload` if it is newer than the cached one; answers whether it was.
    fn offer(&self, payload: &Arc<Payload>) -> bool {
        let mut latest = self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match latest.get(&*payload.team) {
            Some(held) if held.revision >= payload.revision => false,
            _ => {
                latest.insert(payload.team.to_string(), Arc::clone(payload));
                true
            }
        }
    }

    /// Takes one published rule set: cached and broadcast when it is a new revision (a revision
    /// already cached, re-announced by a reopened feed, is not serialized again).
    pub fn publish(&self, update: &RulesetUpdate) {
        if let (Some(revision), Some(held)) = (
            update.ruleset["revision"].as_u64(),
            self.cached(&update.team),
        ) && held.revision >= revision
        {
            return;
        }
        let Some(payload) = self.build(&update.team, &update.ruleset) else {
            tracing::warn!(
                team = update.team,
                "rule set without revision or hash; skipped"
            );
            return;
        };
        self.announce(payload);
    }

    /// Caches `payload` and sends it to the connections when it is newer than the cached one (from
    /// the feed, or read from the read model before the feed brought it: then the feed's copy is not
    /// sent again, so this one must be).
    fn announce(&self, payload: Arc<Payload>) {
        if self.offer(&payload) {
            // No connection listening is not an error: the latest is kept (cached before it is sent,
            // so a connection that subscribes meanwhile finds it in one place or the other).
            let team = self
                .teams
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&*payload.team)
                .cloned();
            if let Some(team) = team {
                let _ = team.send(Arc::clone(&payload));
            }
            let _ = self.sender.send(payload);
        }
    }

    /// The latest rule set of `team`: the cached one, else the one the read model holds (then cached).
    ///
    /// # Errors
    /// When the read model cannot be read.
    pub async fn latest(
        &self,
        edict: &Edict,
        team: &str,
    ) -> Result<Option<Arc<Payload>>, edict_application::error::AppError> {
        if let Some(payload) = self.cached(team) {
            return Ok(Some(payload));
        }
        let _loading = self.loading.lock().await;
        if let Some(payload) = self.cached(team) {
            return Ok(Some(payload));
        }
        let Some(doc) = edict.latest_ruleset(team).await? else {
            return Ok(None);
        };
        let Some(payload) = self.build(team, &doc) else {
            return Ok(None);
        };
        self.announce(Arc::clone(&payload));
        Ok(self.cached(team).or(Some(payload)))
    }

    /// Pumps `feed` into the cache and the broadcast until `shutdown`, reopening it after failures.
    pub async fn follow(
        &self,
        feed: Arc<dyn RulesetFeed>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let pause = Duration::from_secs(1);
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
                    item = updates.next() => match item {
                        Some(Ok(update)) => self.publish(&update),
                        Some(Err(FeedError::Lagged(missed))) => {
                            // Forget the cache: the next reads go to the read model, which is complete.
                            tracing::warn!(missed, "rule set feed lagged; re-reading from the read model");
                            self.latest.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
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
