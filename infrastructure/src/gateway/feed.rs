//! Where a gateway learns of new rule sets, and the payloads it sends.
//!
//! - [`RulesetFeed`] (a port of `edict_application::delivery`): the stream of published rule sets; its
//!   adapters are in `edict-infrastructure` (the in-process publisher's `WatchFeed`, the KV bucket's
//!   `NatsFeed`).
//! - [`Rulesets`]: one serialized `rule_set` message per (team, revision), encoded once as the
//!   WebSocket frame every connection of the team writes as it is (reference-counted `Bytes`), the
//!   latest per team kept, each new one fanned out to the ports of the team's connections by the
//!   gateway's fan-out thread (see below). A team the feed has not mentioned yet is read from the
//!   feed's current values (never from the read model, whose documents are not signed).
//!
//! The fan-out: one thread per gateway takes each new revision and offers it to every port of its
//! team ([`Port::offer`]): written into the socket at once when nothing waits before it (one
//! `write`, no task woken: a push to 10,000 idle agents is 10,000 writes in a row, not 10,000 task
//! wake-ups on the runtime that also reads their `applied`), queued for the connection's task
//! otherwise. A thread rather than a task: the loop runs for tens of milliseconds at 10,000
//! connections and would hold one of the runtime's workers that long.
//!
//! Delivery first: while a fan-out runs, the connections read nothing (the [`Gate`]); the `applied`
//! that come back meanwhile wait in their sockets and are read once the last port was offered the
//! revision. Reading 10,000 acks costs the gateway as much CPU as writing the 10,000 frames; done
//! during the fan-out it would take that CPU from the writes (and, on a shared machine, from the
//! agents), so the last agent would get its rule set later.
//!
//! A feed that fails is opened again after a pause; an open that starts with the current values (the KV
//! watch does) simply re-announces revisions the connections already sent, which they skip. After the
//! stream lagged, and every 30 s, the cache is reconciled with the feed's current values
//! ([`RulesetFeed::current`]: the KV bucket, the in-process publisher's latest): a revision the stream
//! skipped is announced then (ADR 0014).
//!
//! One payload per (team, revision): a revision already cached is not serialized again, and a team
//! missing from the cache is read and serialized by one connection while the others wait for it (after
//! a gateway restart thousands of agents ask for the same few teams at once). Each build is logged
//! (`rule set payload built`, target `edict_infrastructure::gateway::feed`, level info) and counted in
//! [`Rulesets::built`], so a benchmark can check it.

use super::wire::{Offered, Port};
use edict_application::delivery::{FeedError, RulesetFeed, RulesetUpdate};
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::task::Waker;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Bytes;

/// Rule set notifications buffered per connection; a connection that falls further behind is closed
/// with `too_slow` (it resyncs with a new `hello`), never silently skipped.
const BROADCAST_CAPACITY: usize = 256;
/// How long a port's queue may take nothing before a push closes it with `too_slow`, unless the
/// gateway sets it ([`Rulesets::with_stall_limit`]).
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// How often a gateway reconciles its cache with the feed's current rule sets, a safety net under
/// the stream (which a lag or a lost watch message would leave behind).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// The id of the key that signed a published rule set document.
fn signer_of(doc: &Value) -> Option<&str> {
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

/// The JSON of [`edict_api::protocol::GatewayMessage::RuleSet`], borrowing the stored document.
#[derive(serde::Serialize)]
#[serde(tag = "type", rename = "rule_set")]
struct RuleSetMessage<'a> {
    team: &'a str,
    revision: u64,
    hash: &'a str,
    ruleset: &'a Value,
}

/// Closed while a fan-out runs: the connections' reads wait for it to open (see the module's
/// documentation).
#[derive(Debug, Default)]
pub(super) struct Gate {
    closed: AtomicUsize,
    waiting: Mutex<Vec<Waker>>,
}

impl Gate {
    /// Closes the gate until the answer is dropped (also when the fan-out panics: the connections'
    /// reads never stay held).
    fn close(&self) -> Closed<'_> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Closed(self)
    }

    fn open(&self) {
        if self.closed.fetch_sub(1, Ordering::SeqCst) == 1 {
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
            for waker in waiting {
                waker.wake();
            }
        }
    }

    /// Whether a connection may read now; when not, `waker` is woken once the gate opens.
    pub(super) fn admit(&self, waker: &Waker) -> bool {
        if self.closed.load(Ordering::Acquire) == 0 {
            return true;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Opened meanwhile: `open` takes the list under this lock after clearing the count.
        if self.closed.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if !waiting.last().is_some_and(|last| last.will_wake(waker)) {
            waiting.push(waker.clone());
        }
        false
    }
}

/// The gate closed by one fan-out, opened when dropped.
struct Closed<'a>(&'a Gate);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// The ports of each team's connections, by address.
type Members = Arc<Mutex<HashMap<Arc<str>, HashMap<usize, Arc<Port>>>>>;

/// The latest payload per team, the broadcast of new ones, and their fan-out to the ports.
#[derive(Debug, Clone)]
pub struct Rulesets {
    latest: Arc<RwLock<HashMap<String, Arc<Payload>>>>,
    sender: broadcast::Sender<Arc<Payload>>,
    /// The ports each new revision is offered to.
    members: Members,
    /// To the fan-out thread (which ends when the last clone of this is dropped); `None` when the
    /// thread could not be started: then each revision is fanned out by the task that announces it.
    fanout: Option<mpsc::Sender<Arc<Payload>>>,
    stall_limit: Duration,
    /// Closed while a fan-out runs.
    gate: Arc<Gate>,
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
    /// Empty, with the default stall limit (10 s).
    pub fn new() -> Self {
        Self::with_stall_limit(STALL_LIMIT)
    }

    /// Empty; a port whose queue took nothing for longer than `stall_limit` is closed by the next
    /// push (`too_slow`).
    pub fn with_stall_limit(stall_limit: Duration) -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let members = Members::default();
        let (to_fanout, payloads) = mpsc::channel::<Arc<Payload>>();
        let fanning = Arc::clone(&members);
        let gate = Arc::new(Gate::default());
        let gating = Arc::clone(&gate);
        let started = std::thread::Builder::new()
            .name("edict-fanout".into())
            .spawn(move || {
                while let Ok(payload) = payloads.recv() {
                    fan_out(&fanning, &gating, &payload, stall_limit);
                }
            });
        let fanout = match started {
            Ok(_) => Some(to_fanout),
            Err(error) => {
                tracing::error!(%error, "cannot start the fan-out thread; fanning out inline");
                None
            }
        };
        Rulesets {
            latest: Arc::new(RwLock::new(HashMap::new())),
            sender,
            members,
            fanout,
            stall_limit,
            gate,
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
        &self.gate
    }

    /// Adds `port` to the ports every new revision of `team` is offered to; answers the team's id as
    /// the member map holds it (one copy per team, shared by its connections).
    pub(super) fn join(&self, team: &str, port: &Arc<Port>) -> Arc<str> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let key = Arc::as_ptr(port) as usize;
        if let Some(ports) = members.get_mut(team) {
            ports.insert(key, Arc::clone(port));
        }
        if let Some((team, _)) = members.get_key_value(team) {
            return Arc::clone(team);
        }
        let team: Arc<str> = Arc::from(team);
        members.insert(Arc::clone(&team), HashMap::from([(key, Arc::clone(port))]));
        team
    }

    /// Removes `port` from the ports of `team`.
    pub(super) fn leave(&self, team: &str, port: &Arc<Port>) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ports) = members.get_mut(team) {
            ports.remove(&(Arc::as_ptr(port) as usize));
            if ports.is_empty() {
                members.remove(team);
            }
        }
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
            // Cached before it is fanned out, so a port that joins meanwhile finds it in one place or
            // the other. Without the fan-out thread (not started, or gone after a panic) the
            // announcing task fans out itself.
            let unsent = match &self.fanout {
                Some(fanout) => fanout.send(Arc::clone(&payload)).err().map(|e| e.0),
                None => Some(Arc::clone(&payload)),
            };
            if let Some(unsent) = unsent {
                fan_out(&self.members, &self.gate, &unsent, self.stall_limit);
            }
            // No subscriber is not an error.
            let _ = self.sender.send(payload);
        }
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

    /// Reads the feed's current rule set of every team this gateway caches or has connections of, and
    /// announces each that is newer than the cached one (to the cache and the connections). Answers
    /// how many were newer.
    ///
    /// # Errors
    /// [`FeedError::Unavailable`] when the feed cannot be read.
    pub async fn reconcile(&self, feed: &dyn RulesetFeed) -> Result<usize, FeedError> {
        let teams: Vec<String> = {
            let mut teams: std::collections::BTreeSet<String> = self
                .members
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .map(ToString::to_string)
                .collect();
            teams.extend(
                self.latest
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .cloned(),
            );
            teams.into_iter().collect()
        };
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
                                // Forget the cache then: the next reads go to the read model, which
                                // is complete.
                                tracing::warn!(%error, "cannot reconcile; dropping the cache");
                                self.latest.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
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

/// Offers `payload` to every port of its team (on the fan-out thread), the connections' reads held
/// meanwhile.
fn fan_out(members: &Members, gate: &Gate, payload: &Payload, stall_limit: Duration) {
    let started = Instant::now();
    let closed = gate.close();
    // A copy of the list (reference counts): ports join and leave meanwhile without waiting.
    let ports: Vec<Arc<Port>> = members
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&*payload.team)
        .map(|ports| ports.values().cloned().collect())
        .unwrap_or_default();
    let (mut written, mut queued, mut overflowed) = (0usize, 0usize, 0usize);
    for port in &ports {
        match port.offer(&payload.team, payload.revision, &payload.frame, stall_limit) {
            Offered::Written => written += 1,
            Offered::Queued => queued += 1,
            Offered::Overflowed => overflowed += 1,
            // A port whose connection left the team after the copy above refuses it (`NotMember`).
            Offered::Stale | Offered::NotMember | Offered::Closed => {}
        }
    }
    drop(closed);
    tracing::info!(
        team = &*payload.team,
        revision = payload.revision,
        ports = ports.len(),
        written,
        queued,
        overflowed,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "rule set fanned out"
    );
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_closed_gate_holds_readers_until_the_last_fan_out_ends() {
        let gate = Gate::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(gate.admit(&waker), "open: reads go on");
        let first = gate.close();
        let second = gate.close();
        assert!(!gate.admit(&waker));
        // The same task twice in a row is remembered once.
        assert!(!gate.admit(&waker));
        drop(first);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "one fan-out still runs");
        assert!(!gate.admit(&waker));
        drop(second);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(gate.admit(&waker));
    }
}
