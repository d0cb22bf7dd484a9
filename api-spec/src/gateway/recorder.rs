//! Convergence recording off the connections' path.
//!
//! A connection hands each `applied` to the gateway's one [`Recorder`] and goes on at once: the
//! recorder keeps the latest `applied` per (agent, team) not yet written, and its task takes them all
//! whenever there are some and writes them through the [`ConvergenceRecords`] port,
//! [`ROWS_PER_WRITE`] per write, [`WRITERS`] writes at a time. So a push to a team's agents never
//! parks their connection tasks on the database pool (where the next push, the handshakes and the
//! timers of every connection would wait behind them), and a database that falls behind delays the
//! *recording* only, never the next push.
//!
//! The recorder writes once a burst of acks is over (no new `applied` for [`SETTLE`], or
//! [`MAX_DELAY`] after the first unwritten one, whichever comes first): a revision pushed to a team
//! brings one ack per agent in a burst, and the database's work for them (often on the same machine
//! as the gateway) then comes after the fan-out instead of competing with it (ADR 0011; measurements
//! in `docs/benchmarks.md`). The convergence view lags the acks by that much.
//!
//! What is pending is bounded by the (agent, team) pairs (one entry each, overwritten by a newer
//! `applied`): when the writes fall behind, an agent that applied two revisions meanwhile is recorded
//! at the second only (the table keeps the latest anyway). A failed write is logged; the agent's next
//! `applied` (next revision or next connection) records it again.

use chrono::{DateTime, Utc};
use edict_application::delivery::{AppliedRow, ConvergenceRecords, SeenRow};
use edict_domain::AgentId;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Writes in flight at once (the pool has 32 connections, shared with everything else).
const WRITERS: usize = 4;
/// `applied` per write: on PostgreSQL one multi-row statement each.
const ROWS_PER_WRITE: usize = 1_000;
/// A burst of acks is over when none came for this long.
const SETTLE: Duration = Duration::from_millis(30);
/// The longest an `applied` waits to be written, burst or not.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// One agent's `applied`.
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) agent: AgentId,
    pub(crate) team: String,
    pub(crate) revision: u64,
    pub(crate) hash: String,
    pub(crate) at: DateTime<Utc>,
}

/// What an (agent, team) applied last: revision, hash, when.
#[derive(Debug)]
struct Latest {
    revision: u64,
    hash: String,
    at: DateTime<Utc>,
}

type Pending = HashMap<(AgentId, String), Latest>;

/// One connection of an agent, as the gateway last saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) connected_at: DateTime<Utc>,
    pub(crate) last_seen_at: DateTime<Utc>,
    /// `Some`: the connection ended then.
    pub(crate) disconnected_at: Option<DateTime<Utc>>,
}

type Presence = HashMap<AgentId, Seen>;

/// The latest unwritten `applied` per (agent, team), shared by every connection and the task.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder {
    pending: Arc<Mutex<Pending>>,
    /// The latest unwritten state of each agent's connection.
    presence: Arc<Mutex<Presence>>,
    wake: Arc<Notify>,
    /// `applied` and presence kept so far (tells the task whether more came while it waited).
    kept: Arc<AtomicU64>,
}

impl Recorder {
    /// An empty recorder; [`run`] writes what it gathers.
    pub(crate) fn new() -> Recorder {
        Recorder::default()
    }

    /// Keeps `applied` (replacing an unwritten older one of the same agent and team); never waits.
    pub(crate) fn record(&self, applied: Applied) {
        let latest = Latest {
            revision: applied.revision,
            hash: applied.hash,
            at: applied.at,
        };
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((applied.agent, applied.team), latest);
        self.kept.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Keeps what the gateway saw of `agent`'s connection (replacing an unwritten older state); never
    /// waits. Written with the next `applied`, or within [`MAX_DELAY`].
    pub(crate) fn seen(&self, agent: AgentId, seen: Seen) {
        self.presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(agent, seen);
        self.kept.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn take_presence(&self) -> Presence {
        std::mem::take(&mut *self.presence.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// What is pending, leaving an empty map as large as the one taken (the next burst is likely
    /// the same size: no rehashing while the acks come in).
    fn take(&self) -> Pending {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = pending.len();
        std::mem::replace(&mut *pending, HashMap::with_capacity(capacity))
    }
}

/// Writes what `recorder` gathers until `stopped`, then what is left; presence as seen by the
/// gateway named `gateway`.
pub(crate) async fn run(
    recorder: Recorder,
    convergence: Arc<dyn ConvergenceRecords>,
    gateway: Arc<str>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let mut stopping = tokio::select! {
            () = recorder.wake.notified() => false,
            _ = stopped.changed() => true,
        };
        if !stopping {
            stopping = settle(&recorder, &mut stopped).await;
        }
        write(convergence.as_ref(), recorder.take()).await;
        write_presence(convergence.as_ref(), &gateway, recorder.take_presence()).await;
        if stopping {
            return;
        }
    }
}

/// Waits until no `applied` came for [`SETTLE`], [`MAX_DELAY`] at most; answers whether the gateway
/// stops meanwhile.
async fn settle(recorder: &Recorder, stopped: &mut watch::Receiver<bool>) -> bool {
    let deadline = Instant::now() + MAX_DELAY;
    let mut seen = recorder.kept.load(Ordering::Relaxed);
    loop {
        let quiet = (Instant::now() + SETTLE).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(quiet) => {}
            _ = stopped.changed() => return true,
        }
        let now = recorder.kept.load(Ordering::Relaxed);
        if now == seen || Instant::now() >= deadline {
            return false;
        }
        seen = now;
    }
}

/// Writes `pending`, [`ROWS_PER_WRITE`] per write, [`WRITERS`] writes at a time.
async fn write(convergence: &dyn ConvergenceRecords, pending: Pending) {
    let applied: Vec<(String, String, Latest)> = pending
        .into_iter()
        .map(|((agent, team), latest)| (agent.to_string(), team, latest))
        .collect();
    futures::stream::iter(applied.chunks(ROWS_PER_WRITE))
        .for_each_concurrent(WRITERS, |chunk| async move {
            let rows: Vec<AppliedRow<'_>> = chunk
                .iter()
                .map(|(agent, team, latest)| AppliedRow {
                    agent,
                    team,
                    revision: latest.revision,
                    hash: &latest.hash,
                    at: latest.at,
                })
                .collect();
            if let Err(error) = convergence.record_many(&rows).await {
                tracing::warn!(%error, rows = rows.len(), "cannot record convergence");
            }
        })
        .await;
}

/// Writes `presence`, [`ROWS_PER_WRITE`] per write, one write at a time (a gateway's restart brings
/// one row per agent; the `applied` writes have the pool first).
async fn write_presence(convergence: &dyn ConvergenceRecords, gateway: &str, presence: Presence) {
    let seen: Vec<(String, Seen)> = presence
        .into_iter()
        .map(|(agent, seen)| (agent.to_string(), seen))
        .collect();
    for chunk in seen.chunks(ROWS_PER_WRITE) {
        let rows: Vec<SeenRow<'_>> = chunk
            .iter()
            .map(|(agent, seen)| SeenRow {
                agent,
                gateway,
                connected_at: seen.connected_at,
                last_seen_at: seen.last_seen_at,
                disconnected_at: seen.disconnected_at,
            })
            .collect();
        if let Err(error) = convergence.record_presence(&rows).await {
            tracing::warn!(%error, rows = rows.len(), "cannot record presence");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Applied, MAX_DELAY, Recorder, SETTLE, settle};
    use edict_domain::AgentId;
    use std::time::Duration;
    use tokio::sync::watch;
    use tokio::time::Instant;

    fn applied(n: u128) -> Applied {
        Applied {
            agent: AgentId(uuid::Uuid::from_u128(n)),
            team: "team".into(),
            revision: 1,
            hash: "h".into(),
            at: chrono::Utc::now(),
        }
    }

    /// Records one `applied` every `every`, `count` times, from now.
    fn feed(recorder: &Recorder, count: u128, every: Duration) {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            for n in 0..count {
                recorder.record(applied(n));
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Feeds `count` acks `every` apart and settles: how long the settling took.
    async fn settled(recorder: &Recorder, count: u128, every: Duration) -> Duration {
        let (_stop, mut stopped) = watch::channel(false);
        let start = Instant::now();
        feed(recorder, count, every);
        tokio::task::yield_now().await;
        assert!(!settle(recorder, &mut stopped).await);
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_written_once_no_ack_came_for_the_settling_time() {
        let recorder = Recorder::new();
        // 20 acks, 10 ms apart: the last at 190 ms.
        let waited = settled(&recorder, 20, Duration::from_millis(10)).await;
        assert!(
            waited >= Duration::from_millis(190) + SETTLE && waited < MAX_DELAY,
            "{waited:?}"
        );
        assert_eq!(recorder.take().len(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn acks_that_never_stop_are_written_after_the_longest_delay() {
        let recorder = Recorder::new();
        let waited = settled(&recorder, 10_000, Duration::from_millis(5)).await;
        assert!(
            waited >= MAX_DELAY && waited < MAX_DELAY + SETTLE,
            "{waited:?}"
        );
        // The next burst finds a map as large as the last one: no rehashing while it comes in.
        let taken = recorder.take();
        assert!(taken.len() >= 150, "{}", taken.len());
        assert!(recorder.pending.lock().unwrap().capacity() >= taken.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_gateway_ends_the_wait_at_once() {
        let recorder = Recorder::new();
        let (stop, mut stopped) = watch::channel(false);
        feed(&recorder, 10_000, Duration::from_millis(5));
        let start = Instant::now();
        let stopping = tokio::spawn(async move { settle(&recorder, &mut stopped).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        assert!(stopping.await.unwrap());
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
