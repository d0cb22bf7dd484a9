//! [`Rulesets`]: the gateway's cache of rule set payloads, one per (team, revision), and the broadcast
//! of each new one.
//!
//! A [`Payload`] is a `rule_set` message serialized once and encoded once as the WebSocket frame
//! every connection of the team writes as it is (reference-counted `Bytes`). The latest per team is
//! kept; each new one is handed to the fan-out (`fanout`), which offers it to the ports of the team's
//! connections. A team the feed has not mentioned yet is read from the feed's current values (never
//! from the read model, whose documents are not signed). How the cache follows the feed is in `feed`.
//!
//! One payload per (team, revision): a revision already cached is not serialized again, and a team
//! missing from the cache is read and serialized by one connection while the others wait for it
//! (after a gateway restart its agents ask for the same few teams at once). Each build is logged
//! (`rule set payload built`, target `edict_api::gateway::rulesets`, level info) and counted in
//! [`Rulesets::built`], so a benchmark can check it. The same revision signed again by another key
//! (a key rotation, ADR 0021) replaces the cached one without being sent again.

use super::fanout::Fanout;
use super::gate::Gate;
use super::wire::Port;
use edict_application::delivery::{FeedError, RulesetFeed, RulesetUpdate};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Bytes;

/// Rule set notifications buffered per connection; a connection that falls further behind is closed
/// with `too_slow` (it resyncs with a new `hello`), never silently skipped.
const BROADCAST_CAPACITY: usize = 256;
/// How long a port's queue may take nothing before a push closes it with `too_slow`, unless the
/// gateway sets it ([`Rulesets::with_stall_limit`]).
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// The id of the key that signed a published rule set document.
pub(super) fn signer_of(doc: &Value) -> Option<&str> {
    doc["signature"]["key_id"].as_str()
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
    /// The id of the key that signed it (`None` unsigned): a revision signed again with a new key
    /// (a key rotation, ADR 0021) replaces the cached one.
    pub key_id: Option<Arc<str>>,
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
        // The projection's document goes out as it is stored (the JSON of a
        // `GatewayMessage::RuleSet`), without parsing it into the typed document and back.
        let message = RuleSetMessage {
            team,
            revision,
            hash: &hash,
            ruleset: doc,
        };
        let text = serde_json::to_vec(&message).ok()?;
        Some(Payload {
            team: Arc::from(team),
            revision,
            hash: Arc::from(hash),
            frame: super::wire::frame(text),
            key_id: signer_of(doc).map(Arc::from),
        })
    }
}

/// The JSON of [`crate::protocol::GatewayMessage::RuleSet`], borrowing the stored document.
#[derive(serde::Serialize)]
#[serde(tag = "type", rename = "rule_set")]
struct RuleSetMessage<'a> {
    team: &'a str,
    revision: u64,
    hash: &'a str,
    ruleset: &'a Value,
}

/// The latest payload per team, the broadcast of new ones, and their fan-out to the ports.
#[derive(Debug, Clone)]
pub struct Rulesets {
    latest: Arc<RwLock<HashMap<String, Arc<Payload>>>>,
    sender: broadcast::Sender<Arc<Payload>>,
    /// The ports of each team and the fan-out thread (which ends when the last clone of this is
    /// dropped).
    fanout: Arc<Fanout>,
    /// Held while a team missing from the cache is read from the feed (one at a time: misses are
    /// rare, and the connections that wait find the payload cached when they get the lock).
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
    /// Empty, with the default stall limit (10 s).
    pub fn new() -> Self {
        Self::with_stall_limit(STALL_LIMIT)
    }

    /// Empty; a port whose queue took nothing for longer than `stall_limit` is closed by the next
    /// push (`too_slow`).
    pub fn with_stall_limit(stall_limit: Duration) -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Rulesets {
            latest: Arc::new(RwLock::new(HashMap::new())),
            sender,
            fanout: Arc::new(Fanout::start(stall_limit)),
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

    /// Closed while a fan-out runs.
    pub(super) fn gate(&self) -> &Gate {
        self.fanout.gate()
    }

    /// Adds `port` to the ports every new revision of `team` is offered to; answers the team's id as
    /// the member map holds it (one copy per team, shared by its connections).
    pub(super) fn join(&self, team: &str, port: &Arc<Port>) -> Arc<str> {
        self.fanout.join(team, port)
    }

    /// Removes `port` from the ports of `team`.
    pub(super) fn leave(&self, team: &str, port: &Arc<Port>) {
        self.fanout.leave(team, port);
    }

    /// The teams this gateway caches or has connections of.
    pub(super) fn teams(&self) -> Vec<String> {
        let mut teams: BTreeSet<String> = self.fanout.teams().into_iter().collect();
        teams.extend(
            self.latest
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .cloned(),
        );
        teams.into_iter().collect()
    }

    /// Forgets every cached payload: the next reads ask the feed again.
    pub(super) fn forget(&self) {
        self.latest
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The cached latest rule set of `team`, if any.
    pub fn cached(&self, team: &str) -> Option<Arc<Payload>> {
        // A poisoned lock only means a panic elsewhere while inserting; the map is still usable.
        let latest = self
            .latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        latest.get(team).cloned()
    }

    /// Keeps `payload` if it is newer than the cached one; answers whether it was. The same revision
    /// signed by another key replaces the cached one without being sent: the agents that hold it keep
    /// it (verified when it arrived), the others get the new signature.
    fn offer(&self, payload: &Arc<Payload>) -> bool {
        let mut latest = self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match latest.get(&*payload.team) {
            Some(held) if held.revision == payload.revision && held.key_id != payload.key_id => {
                latest.insert(payload.team.to_string(), Arc::clone(payload));
                false
            }
            Some(held) if held.revision >= payload.revision => false,
            _ => {
                latest.insert(payload.team.to_string(), Arc::clone(payload));
                true
            }
        }
    }

    /// Takes one published rule set: cached and broadcast when it is a new revision (a revision
    /// already cached, re-announced by a reopened feed, is not serialized again; signed again by
    /// another key, it replaces the cached one).
    pub fn publish(&self, update: &RulesetUpdate) {
        if let (Some(revision), Some(held)) = (
            update.ruleset["revision"].as_u64(),
            self.cached(&update.team),
        ) && (held.revision > revision
            || (held.revision == revision && held.key_id.as_deref() == signer_of(&update.ruleset)))
        {
            return;
        }
        let span = push_span(update);
        let _push = span.enter();
        let Some(payload) = self.build(&update.team, &update.ruleset) else {
            tracing::warn!(
                team = update.team,
                "rule set without revision or hash; skipped"
            );
            return;
        };
        let revision = payload.revision;
        if self.announce(payload) {
            tracing::info!(
                team = update.team,
                revision,
                "rule set pushed to the team's connections"
            );
        }
    }

    /// Caches `payload` and sends it to the connections when it is newer than the cached one (from
    /// the feed, or read from the read model before the feed brought it: then the feed's copy is not
    /// sent again, so this one must be).
    /// Answers whether it was sent.
    fn announce(&self, payload: Arc<Payload>) -> bool {
        if !self.offer(&payload) {
            return false;
        }
        // Cached before it is fanned out, so a port that joins meanwhile finds it in one place or
        // the other.
        self.fanout.send(&payload);
        // No subscriber is not an error.
        let _ = self.sender.send(payload);
        true
    }

    /// The latest rule set of `team`: the cached one, else the feed's current one (then cached).
    ///
    /// Never the `team_rulesets` read model: its documents are not signed (rule sets are signed where
    /// they are published, ADR 0018), so an agent would refuse one, and this connection would count the
    /// revision as sent. A team the feed holds nothing of yet has no rule set to send: its first
    /// revision is pushed when it is published.
    ///
    /// # Errors
    /// When the feed cannot be read.
    pub async fn latest(
        &self,
        feed: &dyn RulesetFeed,
        team: &str,
    ) -> Result<Option<Arc<Payload>>, FeedError> {
        if let Some(payload) = self.cached(team) {
            return Ok(Some(payload));
        }
        let _loading = self.loading.lock().await;
        if let Some(payload) = self.cached(team) {
            return Ok(Some(payload));
        }
        let current = feed.current(&[team.to_owned()]).await?;
        let Some(update) = current.into_iter().find(|update| update.team == team) else {
            return Ok(None);
        };
        let Some(payload) = self.build(team, &update.ruleset) else {
            return Ok(None);
        };
        self.announce(Arc::clone(&payload));
        Ok(self.cached(team).or(Some(payload)))
    }
}

/// The span of one rule set publication reaching this gateway (`push`): a child of the trace of the
/// command that led to it, with that command's request id, when the publication carried them.
fn push_span(update: &RulesetUpdate) -> tracing::Span {
    let span = tracing::info_span!(
        "push",
        team = update.team,
        request_id = update.origin.request_id.as_deref().unwrap_or_default(),
    );
    if let Some(traceparent) = &update.origin.traceparent {
        crate::trace::set_remote_parent(&span, traceparent);
    }
    span
}
