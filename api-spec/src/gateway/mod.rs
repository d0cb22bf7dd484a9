//! The agent gateway: the server side of the agent ↔ gateway WebSocket protocol
//! ([`crate::protocol`]), on its own listener, route `/ws` only. Behind the `gateway` feature.
//!
//! It depends on the application only: Edict's use cases ([`Edict`]) and the two ports it drives,
//! [`RulesetFeed`] (where published rule sets come from) and [`ConvergenceRecords`] (where the
//! agents' `applied` are written), both in `edict_application::delivery`. Their adapters (the NATS KV
//! watch, the in-process publisher, the convergence tables) are in `edict-infrastructure`, and the
//! composition root (`edict serve`) hands them to [`Gateway::bind`] (ADR 0026).
//!
//! Layout:
//! - this file: [`Gateway`] (bind, accept loop, shutdown, the log watch for revocations and
//!   membership changes) and [`GatewaySettings`];
//! - `handshake`: the upgrade request, peeked and authenticated before the WebSocket handshake
//!   (401 for anything but a valid agent token, 426 for another protocol version, 404 off `/ws`);
//! - `probes`: `/health/live`, `/health/ready` and `/metrics` on the gateway port (plain HTTP, no
//!   upgrade);
//! - `connection`: one agent's session (hello, pushes, timers, revocation), with `inbound` (the
//!   agent's `applied` and `report`), `decisions` (decided change requests, polled), `keys` (the
//!   organization's key sets), `removals` (teams the agent left), `polls` (the periodic reads, run
//!   beside the connection's loop) and `wire` (the connection's socket and its bounded queue of
//!   frames encoded once, which the connection's task drains);
//! - `rulesets`: [`Rulesets`], the shared, once-serialized [`Payload`] per (team, revision); `feed`:
//!   how that cache follows the [`RulesetFeed`]; `fanout`: the thread that offers each new revision
//!   to the ports of its team; `gate`: the connections' reads held while a fan-out runs;
//! - `recorder`: the agents' `applied` and their connections (presence), written through
//!   [`ConvergenceRecords`] (one task per gateway, in batches, off the connections' path).
//!
//! Gateways hold no state that matters: any gateway serves any agent, everything is re-derived from
//! the store and the feed at each `hello`.
//!
//! An idle connection costs little memory: the WebSocket buffers are set small
//! ([`GatewaySettings::websocket_config`]), and the connection task's future stays small because its
//! rare, deep calls (authentication, the greeting, reports, the timers' reads) are boxed while they
//! run rather than inlined into every idle connection's state. Measurements: `docs/benchmarks.md`
//! (`edict-bench agents`).

mod connection;
mod decisions;
mod fanout;
mod feed;
mod gate;
mod handshake;
mod inbound;
mod keys;
mod polls;
mod probes;
mod recorder;
mod removals;
mod rulesets;
mod wire;

pub use inbound::ReportRate;
pub use rulesets::{Payload, Rulesets};

use edict_application::Edict;
use edict_application::delivery::{ConvergenceRecords, RulesetFeed};
use edict_application::gateway::AdmissionChange;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Revocations buffered per connection; one that lags re-checks its token at once.
const ADMISSION_CAPACITY: usize = 1_024;
/// Events read from the log per revocation poll.
const ADMISSION_BATCH: usize = 1_000;
/// How long the membership watch waits for the directory to show a change before it tells the
/// connections anyway (their periodic refresh corrects a read that came too early).
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(5);

/// How a gateway treats its connections.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// A WebSocket ping this often (20 s).
    pub ping_interval: Duration,
    /// A connection with no frame from the agent for this long is closed (60 s).
    pub idle_timeout: Duration,
    /// The log is read for revocations (agent revoked, user deactivated) this often, so a revoked
    /// agent's connection is closed within about this time (250 ms). One read per gateway, whatever
    /// the number of connections.
    pub revocation_poll: Duration,
    /// Each connection also re-checks its agent token this often, a safety net under the log watch
    /// (5 min).
    pub revocation_check: Duration,
    /// The agent's teams (and the latest revision of each) are re-read this often (2 min), a safety
    /// net: membership changes and team archivals are read from the log (the same watch as
    /// revocations) and each concerned connection re-reads its teams at once.
    pub refresh_interval: Duration,
    /// The agent's change requests are polled for decisions this often (5 s).
    pub decision_interval: Duration,
    /// The upgrade request and handshake must complete within this (10 s).
    pub handshake_timeout: Duration,
    /// A write that takes longer closes the connection (10 s).
    pub write_timeout: Duration,
    /// Messages queued per connection before a push closes it with `too_slow` (64).
    pub queue_capacity: usize,
    /// The largest message read from an agent (256 KiB; `EDICT_WS_MAX_MESSAGE_BYTES`). An agent sends
    /// `applied` (a few hundred bytes) and reports, whose diff the agent cuts at 64 KiB; JSON escaping
    /// of ordinary text stays well under four times that. A larger frame is refused from its header,
    /// before its payload is read, and closes the connection.
    pub max_message_size: usize,
    /// The largest message sent to an agent (8 MiB): a whole rule set must fit. Only the write buffer
    /// depends on it; what the gateway reads is bounded by `max_message_size`.
    pub max_sent_message_size: usize,
    /// Sockets whose upgrade request is being read or authenticated, at once (256;
    /// `EDICT_WS_MAX_UNAUTHENTICATED`). One more is answered `503` with `Retry-After` at once and
    /// closed, so slow or anonymous clients cannot hold the gateway's sockets.
    pub max_unauthenticated: usize,
    /// Sockets one agent token may hold at once, handshakes included (4;
    /// `EDICT_WS_MAX_SOCKETS_PER_AGENT`): an agent holds one, and a reconnect may overlap the old
    /// socket until it is seen closed. One more upgrade is answered `429`.
    pub max_sockets_per_agent: usize,
    /// Reports each agent may send (120 a minute); past it a report is not acknowledged.
    pub report_rate: ReportRate,
    /// The metrics page served at `/metrics` on the gateway port (none: 404).
    pub metrics: Option<edict_application::metrics::Exposition>,
    /// The host the fleet names this gateway by, with its port (`gateway`: the composition root
    /// passes the machine's host name).
    pub host: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            revocation_poll: Duration::from_millis(250),
            revocation_check: Duration::from_secs(300),
            refresh_interval: Duration::from_secs(120),
            decision_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            queue_capacity: 64,
            max_message_size: 256 << 10,
            max_sent_message_size: 8 << 20,
            max_unauthenticated: 256,
            max_sockets_per_agent: 4,
            report_rate: ReportRate::default(),
            metrics: None,
            host: "gateway".to_owned(),
        }
    }
}

impl GatewaySettings {
    /// The WebSocket buffers: a 1 KiB read buffer (what an agent sends is small: `applied`, reports;
    /// a larger frame grows it while it is read), no write buffering (each frame goes out at once).
    ///
    /// tungstenite refuses to buffer a frame larger than `max_write_buffer_size`, so it is the largest
    /// message sent (a whole rule set), not the 64 KiB a small-message server would use; the buffer
    /// only grows while a large frame is being written. `max_message_size` and `max_frame_size` bound
    /// only what is read.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_write_buffer_size(self.max_sent_message_size.max(64 << 10) + 1024)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) edict: Arc<Edict>,
    /// Revocations read from the log, to every connection (each filters its own agent and user).
    pub(crate) admissions: broadcast::Sender<AdmissionChange>,
    pub(crate) rulesets: Rulesets,
    /// Where published (signed) rule sets are read when a team is not cached yet.
    pub(crate) feed: Arc<dyn RulesetFeed>,
    pub(crate) convergence: Arc<dyn ConvergenceRecords>,
    /// Where connections hand their agents' `applied`.
    pub(crate) recorder: recorder::Recorder,
    /// This gateway's name in the fleet's presence records: host and port.
    pub(crate) name: Arc<str>,
    /// The change requests of each team, shared by the connections' decision polls.
    pub(crate) team_requests: decisions::TeamRequests,
    /// The organization's key sets, shared by the connections.
    pub(crate) keysets: keys::KeySets,
    /// Each agent's report budget.
    pub(crate) reports: inbound::ReportLimiter,
    pub(crate) settings: GatewaySettings,
    /// Permits of the sockets not yet authenticated (see [`GatewaySettings::max_unauthenticated`]).
    handshakes: Arc<Semaphore>,
    /// The sockets each agent holds (see [`GatewaySettings::max_sockets_per_agent`]).
    pub(crate) sockets: handshake::Sockets,
}

/// A bound gateway, not yet serving.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    feed: Arc<dyn RulesetFeed>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Binds `addr` (port 0 picks one) for a gateway over `edict`, following `feed`, recording
    /// convergence in `convergence`. Answers the gateway and the address it listens on.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        edict: Arc<Edict>,
        feed: Arc<dyn RulesetFeed>,
        convergence: Arc<dyn ConvergenceRecords>,
        settings: GatewaySettings,
    ) -> std::io::Result<(Gateway, SocketAddr)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (admissions, _) = broadcast::channel(ADMISSION_CAPACITY);
        let recorder = recorder::Recorder::new();
        let shared = Arc::new(Shared {
            edict,
            admissions,
            rulesets: Rulesets::with_stall_limit(settings.write_timeout),
            feed: Arc::clone(&feed),
            convergence,
            recorder,
            name: format!("{}:{}", settings.host, local.port()).into(),
            team_requests: decisions::TeamRequests::new(settings.decision_interval / 2),
            keysets: keys::KeySets::new(settings.decision_interval / 2),
            handshakes: Arc::new(Semaphore::new(settings.max_unauthenticated.max(1))),
            sockets: handshake::Sockets::default(),
            reports: inbound::ReportLimiter::new(settings.report_rate),
            settings,
        });
        Ok((
            Gateway {
                listener,
                shared,
                feed,
            },
            local,
        ))
    }

    /// Serves agents until `shutdown` completes; then closes every connection (going away) and waits
    /// for them, at most the write timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Gateway {
            listener,
            shared,
            feed,
        } = self;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn({
            let rulesets = shared.rulesets.clone();
            let stopped = stopped.clone();
            async move { rulesets.follow(feed, stopped).await }
        });
        tasks.spawn(watch_admissions(shared.clone(), stopped.clone()));
        tasks.spawn(recorder::run(
            shared.recorder.clone(),
            Arc::clone(&shared.convergence),
            Arc::clone(&shared.name),
            stopped.clone(),
        ));
        tracing::info!(listen = ?listener.local_addr().ok(), "gateway serving /ws");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        match Arc::clone(&shared.handshakes).try_acquire_owned() {
                            // The permit is given back once the socket has authenticated (or ends).
                            Ok(permit) => {
                                tasks.spawn(handshake::unauthenticated(
                                    permit,
                                    connection::serve(shared.clone(), stream, stopped.clone()),
                                ));
                            }
                            Err(_) => {
                                tasks.spawn(handshake::refuse_busy(stream));
                            }
                        }
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let grace = shared.settings.write_timeout;
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!("gateway connections did not close in time");
            tasks.abort_all();
        }
        tracing::info!("gateway stopped");
    }
}

/// Waits (up to [`MEMBERSHIP_WAIT`]) until the directory read model has applied the event at `position`;
/// `false` when it has not by then.
async fn directory_caught_up(shared: &Shared, position: i64) -> bool {
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_WAIT;
    loop {
        if directory_covers(shared, position).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                position,
                "the directory is behind a membership change; telling the connections now and again once it shows it"
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn directory_covers(shared: &Shared, position: i64) -> bool {
    match shared.edict.directory_covers(position).await {
        Ok(covers) => covers,
        Err(error) => {
            tracing::debug!(%error, "cannot read the directory's checkpoint");
            false
        }
    }
}

/// Membership notices sent while the directory was behind them: the connections re-read stale teams
/// then, so the notices are sent again once the directory shows the change (a projector down or NATS
/// out for longer than [`MEMBERSHIP_WAIT`] must not leave connections on their old teams until their
/// periodic refresh).
#[derive(Debug, Default)]
struct LateMemberships {
    position: i64,
    changes: Vec<AdmissionChange>,
}

impl LateMemberships {
    fn add(&mut self, position: i64, changes: &[AdmissionChange]) {
        self.position = self.position.max(position);
        for change in changes {
            if !self.changes.contains(change) {
                self.changes.push(*change);
            }
        }
    }

    /// Sends the notices again when the directory shows them all.
    async fn resend_when_shown(&mut self, shared: &Shared) {
        if self.changes.is_empty() || !directory_covers(shared, self.position).await {
            return;
        }
        tracing::info!(
            position = self.position,
            "the directory caught up with late membership changes; telling the connections again"
        );
        for change in self.changes.drain(..) {
            let _ = shared.admissions.send(change);
        }
    }
}

/// Tails the log for revocations, deactivations and membership changes and tells every connection.
async fn watch_admissions(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut after = shared.edict.admission_watch_start().await;
    let poll = shared.settings.revocation_poll;
    let mut late = LateMemberships::default();
    loop {
        late.resend_when_shown(&shared).await;
        let pause = match shared.edict.admission_changes(after, ADMISSION_BATCH).await {
            Ok((changes, next, read)) => {
                after = next;
                let (revocations, memberships): (Vec<_>, Vec<_>) =
                    changes.into_iter().partition(|change| {
                        matches!(
                            change,
                            AdmissionChange::AgentRevoked(_) | AdmissionChange::UserDeactivated(_)
                        )
                    });
                // No connection listening is not an error.
                for change in revocations {
                    let _ = shared.admissions.send(change);
                }
                if !memberships.is_empty() {
                    // The connections re-read their teams from the directory: once it shows these.
                    if !directory_caught_up(&shared, next.position).await {
                        late.add(next.position, &memberships);
                    }
                    for change in memberships {
                        let _ = shared.admissions.send(change);
                    }
                }
                if read == ADMISSION_BATCH {
                    Duration::ZERO
                } else {
                    poll
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the log for revocations; retrying");
                poll.max(Duration::from_secs(1))
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => return,
        }
    }
}
