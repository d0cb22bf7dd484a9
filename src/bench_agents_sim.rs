//! The simulated agents of `edict bench agents`: one task and one WebSocket per agent, speaking the
//! real protocol (`edict_api::protocol`) as `edict-agent`'s client does, minus the files and redb.
//!
//! Each agent connects with its agent token and `Edict-Protocol: 1`, sends `hello` with what it holds
//! (nothing at first, then the last rule set it applied: a resume), answers every `rule_set` with
//! `applied` at once, and reconnects after any close with the real client's jittered exponential
//! backoff (100 ms doubling to 30 s, drawn from [base / 2, base], reset once welcomed). It checks that
//! revisions never go backwards. What the measurements read is shared through atomics: the revision
//! each agent holds and when it sent the `applied` of that revision.

use edict_api::protocol::{AgentMessage, Holding, PROTOCOL_HEADER, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the simulated fleet is.
pub(super) struct SimsConfig {
    /// `ws://host:port/ws`.
    pub url: String,
    /// One agent token per agent.
    pub tokens: Vec<String>,
    /// The team index of each agent.
    pub team_of: Vec<usize>,
    /// The team ids.
    pub teams: Vec<String>,
    /// Connections opened at once during the first ramp-up.
    pub connect_concurrency: usize,
}

struct Shared {
    url: String,
    tokens: Vec<String>,
    epoch: Instant,
    /// The revision each agent holds (0: none).
    held: Vec<AtomicU64>,
    /// When each agent sent its last `applied`, nanoseconds after `epoch`.
    applied_ns: Vec<AtomicU64>,
    /// While true, connections go through `gate` (the first ramp-up only; a storm is not throttled).
    ramp: AtomicBool,
    gate: Semaphore,
    connected: AtomicUsize,
    attempts: AtomicU64,
    regressions: AtomicU64,
    errors: AtomicU64,
}

/// The running fleet.
pub(super) struct Sims {
    shared: Arc<Shared>,
    members: Vec<Vec<usize>>,
    team_of: Vec<usize>,
    stop: watch::Sender<bool>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl Sims {
    /// Starts every agent.
    pub(super) fn start(config: SimsConfig) -> Sims {
        let n = config.tokens.len();
        let shared = Arc::new(Shared {
            url: config.url,
            tokens: config.tokens,
            epoch: Instant::now(),
            held: (0..n).map(|_| AtomicU64::new(0)).collect(),
            applied_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ramp: AtomicBool::new(true),
            gate: Semaphore::new(config.connect_concurrency.max(1)),
            connected: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
            regressions: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let mut members = vec![Vec::new(); config.teams.len()];
        for (i, team) in config.team_of.iter().enumerate() {
            members[*team].push(i);
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for i in 0..n {
            tasks.spawn(agent(i, shared.clone(), stopped.clone()));
        }
        Sims {
            shared,
            members,
            team_of: config.team_of,
            stop,
            tasks: tokio::sync::Mutex::new(tasks),
        }
    }

    /// Agents.
    pub(super) fn len(&self) -> usize {
        self.team_of.len()
    }

    /// Agents of `team`.
    pub(super) fn team_size(&self, team: usize) -> usize {
        self.members[team].len()
    }

    /// Ends the throttled first ramp-up: reconnects from now on are not gated.
    pub(super) fn end_ramp(&self) {
        self.shared.ramp.store(false, Ordering::Relaxed);
        self.shared.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Agents welcomed and still connected.
    pub(super) fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Connection attempts so far.
    pub(super) fn connect_attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::Relaxed)
    }

    /// Rule sets received below the revision held, so far.
    pub(super) fn regressions(&self) -> u64 {
        self.shared.regressions.load(Ordering::Relaxed)
    }

    /// Protocol errors and unparseable frames, so far.
    pub(super) fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    fn held(&self, i: usize) -> u64 {
        self.shared.held[i].load(Ordering::Acquire)
    }

    /// Agents holding at least `latest[team]` of their team.
    pub(super) fn on_latest(&self, latest: &[u64]) -> usize {
        (0..self.len())
            .filter(|i| self.held(*i) >= latest[self.team_of[*i]])
            .count()
    }

    /// Waits until every agent holds at least `latest[team]` of its team; false after `timeout`.
    pub(super) async fn wait_all(&self, latest: &[u64], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.on_latest(latest) == self.len() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The lowest revision an agent of `team` holds.
    pub(super) fn team_floor(&self, team: usize) -> u64 {
        self.members[team]
            .iter()
            .map(|i| self.held(*i))
            .min()
            .unwrap_or(0)
    }

    /// Waits until every agent of `team` holds a revision above `base`; false after `timeout`.
    pub(super) async fn wait_team_above(&self, team: usize, base: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.members[team].iter().all(|i| self.held(*i) > base) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// For each agent of `team` holding a revision above `base`: from `since` to the sending of its
    /// `applied` (zero when it came first).
    pub(super) fn applied_after(&self, team: usize, base: u64, since: Instant) -> Vec<Duration> {
        self.members[team]
            .iter()
            .filter(|i| self.held(**i) > base)
            .map(|i| {
                let at = self.shared.epoch
                    + Duration::from_nanos(self.shared.applied_ns[*i].load(Ordering::Acquire));
                at.saturating_duration_since(since)
            })
            .collect()
    }

    /// Closes every agent.
    pub(super) async fn stop(&self) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks.lock().await;
        if tokio::time::timeout(Duration::from_secs(20), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tasks.abort_all();
        }
    }
}

/// A delay drawn uniformly from `[base / 2, base]`, as `edict-agent` draws it.
fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    let spread = u64::try_from((base - half).as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
}

/// One agent: connect, serve, reconnect, until stopped.
async fn agent(i: usize, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut holding: Option<Holding> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let permit = if shared.ramp.load(Ordering::Relaxed) {
            shared.gate.acquire().await.ok()
        } else {
            None
        };
        let welcomed = session(i, &shared, &mut holding, &mut stop, permit).await;
        if *stop.borrow() {
            return;
        }
        if welcomed {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            () = tokio::time::sleep(jitter(backoff)) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection; answers whether the gateway welcomed the agent.
async fn session(
    i: usize,
    shared: &Shared,
    holding: &mut Option<Holding>,
    stop: &mut watch::Receiver<bool>,
    mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> bool {
    shared.attempts.fetch_add(1, Ordering::Relaxed);
    let Ok(mut request) = shared.url.as_str().into_client_request() else {
        return false;
    };
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", shared.tokens[i])) else {
        return false;
    };
    request.headers_mut().insert("Authorization", bearer);
    request
        .headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    // One stream, read and written in turn (no split: nothing to lock at every frame).
    let mut ws = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(Ok((ws, _))) => ws,
        _ => return false,
    };
    let hello = AgentMessage::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: "bench".into(),
        holdings: holding.iter().cloned().collect(),
    };
    if send(&mut ws, &hello).await.is_err() {
        return false;
    }
    let mut welcomed = false;
    // Created once, registered with the watch once.
    let mut stopping = std::pin::pin!(stop.changed());
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = &mut stopping => {
                let _ = ws.close(None).await;
                break;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let Ok(message) = serde_json::from_str::<Incoming>(&text) else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            break;
        };
        match (
            message.kind.as_str(),
            message.team,
            message.revision,
            message.hash,
        ) {
            ("welcome", ..) => {
                welcomed = true;
                permit.take();
                shared.connected.fetch_add(1, Ordering::Relaxed);
            }
            ("current", Some(team), Some(revision), Some(hash)) => {
                if holding.as_ref().is_some_and(|h| h.revision > revision) {
                    shared.regressions.fetch_add(1, Ordering::Relaxed);
                }
                shared.held[i].store(revision, Ordering::Release);
                *holding = Some(Holding {
                    team,
                    revision,
                    hash,
                });
            }
            ("rule_set", Some(team), Some(revision), Some(hash)) => {
                if holding.as_ref().is_some_and(|h| h.revision > revision) {
                    shared.regressions.fetch_add(1, Ordering::Relaxed);
                }
                let applied = Holding {
                    team,
                    revision,
                    hash,
                };
                if send(&mut ws, &AgentMessage::Applied(applied.clone()))
                    .await
                    .is_err()
                {
                    break;
                }
                let at = u64::try_from(shared.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                shared.applied_ns[i].store(at, Ordering::Release);
                shared.held[i].store(revision, Ordering::Release);
                *holding = Some(applied);
            }
            ("removed", ..) => *holding = None,
            ("report_ack" | "decision", ..) => {}
            ("error", ..) => {
                tracing::debug!(code = ?message.code, "gateway error");
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    if welcomed {
        shared.connected.fetch_sub(1, Ordering::Relaxed);
    }
    welcomed
}

/// What a simulated agent reads of a gateway message ([`edict_api::protocol::GatewayMessage`]): its
/// type and the fields it acts on. The rule set's content is skipped while parsing, not decoded (the
/// real agent renders it; that cost is the agent's, measured by `edict bench agent-revert`): the
/// simulated agents share the machine with the gateway they measure.
#[derive(serde::Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    team: Option<String>,
    revision: Option<u64>,
    hash: Option<String>,
    code: Option<String>,
}

async fn send<S>(sink: &mut S, message: &AgentMessage) -> Result<(), ()>
where
    S: futures::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(message).map_err(drop)?;
    sink.send(Message::text(text)).await.map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::Incoming;
    use edict_api::protocol::{GatewayMessage, Holding};

    fn read(message: &GatewayMessage) -> Incoming {
        serde_json::from_str(&serde_json::to_string(message).unwrap()).unwrap()
    }

    #[test]
    fn the_light_reading_sees_what_the_gateway_sends() {
        let rule_set = read(&GatewayMessage::RuleSet {
            team: "t".into(),
            revision: 7,
            hash: "h".into(),
            ruleset: serde_json::json!({"layers": {"team": {"rules": [{"id": "r"}]}}}),
        });
        assert_eq!(rule_set.kind, "rule_set");
        assert_eq!(
            (
                rule_set.team.as_deref(),
                rule_set.revision,
                rule_set.hash.as_deref()
            ),
            (Some("t"), Some(7), Some("h"))
        );
        let current = read(&GatewayMessage::Current(Holding {
            team: "t".into(),
            revision: 3,
            hash: "h".into(),
        }));
        assert_eq!(
            (current.kind.as_str(), current.revision),
            ("current", Some(3))
        );
        let removed = read(&GatewayMessage::Removed { team: "t".into() });
        assert_eq!(removed.kind, "removed");
    }
}
