//! One agent's connection, from the upgrade request to the close.
//!
//! One task per connection: it reads frames, runs the timers, decides, and drains the bounded queue
//! of its [`Port`] whenever something is queued (every message goes out as a frame encoded once: a
//! rule set's is shared by every connection of its team). Once greeted, the connection's port joins
//! its teams in the gateway's fan-out, which writes each new revision straight into the socket when
//! nothing is queued before it (the task is not woken for it), else queues it and wakes the task. A
//! push that finds the queue full, or finds it stalled for longer than the write timeout, closes the
//! connection with `too_slow` (the agent resyncs with a new `hello`), so no revision is ever dropped
//! silently; replies (`welcome`, acks) are written at once, waiting up to the write timeout.
//!
//! Revocation: the gateway tails the log for `AgentRevoked` / `UserDeactivated` and tells every
//! connection (see `watch_admissions`), which closes at once (`PasswordChanged`: it re-checks its token
//! at once, revoked before the event was written); a connection re-checks its token once
//! right after subscribing (closing the window between the upgrade's authentication and the
//! subscription), whenever it missed some of those notices, every `revocation_check` as a safety
//! net, and when its token expires (closed with `token_expired`: ADR 0025).
//!
//! Membership: the same watch tells of `MemberAdded` / `MemberRemoved` (once the directory read model
//! shows them) and `TeamArchived`; the connections concerned re-read the agent's teams at once (the
//! refresh below, started now), since membership changes produce no rule set revision.
//!
//! Timers (one `Sleep`, set to whichever is due first: `Due`): a WebSocket ping every
//! `ping_interval`, a close after `idle_timeout` without any frame from the agent, the token re-check,
//! and a refresh every `refresh_interval` that re-reads the agent's teams from the directory and the
//! latest revision of each team (a safety net under the watch and the feed); the agent's change
//! requests are polled every `decision_interval` for decisions (see `decisions`).
//!
//! The timers' reads (re-check, refresh, decisions) run beside the loop, one at a time (`polls`): a
//! push is never held back by a slow read. The handling of `applied` and `report` is in `inbound`, the
//! decisions in `decisions`.
//!
//! Size: one connection is one state machine (the loop, its timers, the session's transitions and the
//! close), read as a whole; the parts that stand alone are already beside it (`inbound`, `decisions`,
//! `polls`, `gate`), and its unit tests are in `tests.rs`.

use super::Shared;
use super::gate::Gate;
use super::handshake::{Agent, admit, peek_request};
use super::polls::Poll;
use super::rulesets::Payload;
use super::wire::{self, Offered, Port, Wire};
use crate::protocol::{AgentMessage, GatewayMessage, Holding, PROTOCOL_VERSION};
use edict_application::error::AppError;
use edict_application::gateway::{AdmissionChange, AgentAdmission};
use edict_application::metrics::names;
use edict_application::principal::Principal;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::{BTreeSet, HashMap};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll as TaskPoll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;

type Socket = WebSocketStream<Wire>;

/// Serves one TCP connection until it closes or the gateway shuts down.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, shutdown: watch::Receiver<bool>) {
    let settings = &shared.settings;
    let Some(request) = peek_request(&stream, settings.handshake_timeout).await else {
        return;
    };
    if super::probes::is_probe(&request) {
        super::probes::answer(&shared, stream, &request).await;
        return;
    }
    // Boxed (here and below): what runs rarely and deep (authentication, the handshake, the greeting,
    // reports, the timers' reads) lives on the heap while it runs, instead of widening the state every
    // idle connection keeps.
    let verdict = Box::pin(admit(&shared, &request)).await;
    if let Err(refusal) = &verdict {
        metrics::counter!(names::GATEWAY_REFUSED, "status" => refusal.status().as_str().to_owned())
            .increment(1);
    }
    let agent = verdict.as_ref().ok().cloned();
    // The callback's signature, large error type included, is tungstenite's `Callback`.
    #[allow(clippy::result_large_err)]
    let callback = move |_: &Request, response: Response| verdict.map(|_| response);
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
        Wire::new(stream, settings.queue_capacity),
        callback,
        Some(settings.websocket_config()),
    );
    let ws = match tokio::time::timeout(settings.handshake_timeout, Box::pin(upgrade)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%error, "upgrade refused or failed");
            return;
        }
        Err(_) => return,
    };
    let Some(agent) = agent else {
        return;
    };
    let span = tracing::info_span!("agent", agent = %agent.id);
    run(shared, agent, ws, shutdown).instrument(span).await;
}

/// What the main loop does next.
pub(super) enum Flow {
    Continue,
    /// Close, sending this error first when there is one.
    Close(Option<Box<GatewayMessage>>),
}

/// The close of a revoked agent (or deactivated user).
pub(super) fn revoked() -> Flow {
    tracing::info!("agent revoked; closing");
    Flow::Close(Some(Box::new(error(
        crate::protocol::REVOKED,
        "the agent token is no longer valid",
    ))))
}

/// The close of an agent whose token expired (its lifetime, or the grace after its renewal, is
/// over): the agent reconnects with its renewed token, or must log in again.
pub(super) fn expired() -> Flow {
    tracing::info!("agent token expired; closing");
    Flow::Close(Some(Box::new(error(
        crate::protocol::TOKEN_EXPIRED,
        "the agent token expired; connect with the renewed token, or log in again",
    ))))
}

/// The error of a connection that does not take messages fast enough.
fn too_slow() -> GatewayMessage {
    metrics::counter!(names::GATEWAY_TOO_SLOW).increment(1);
    error(
        "too_slow",
        "this connection does not take messages fast enough",
    )
}

/// The error of a connection whose queue a push found full or stalled.
fn too_slow_push() -> GatewayMessage {
    metrics::counter!(names::GATEWAY_TOO_SLOW).increment(1);
    error(
        "too_slow",
        "this connection does not take messages fast enough; send hello again",
    )
}

/// A protocol error message.
pub(super) fn error(code: &str, message: &str) -> GatewayMessage {
    GatewayMessage::Error {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

/// A protocol message as an encoded text frame.
pub(super) fn encoded(message: &GatewayMessage) -> Bytes {
    // Invariant: the protocol types serialize without failing (plain strings, numbers, JSON values).
    wire::frame(serde_json::to_vec(message).unwrap_or_default())
}

/// The fields of an `applied` message, read directly (any other message, or one this reading does
/// not take, goes through the full parse of [`AgentMessage`]).
#[derive(serde::Deserialize)]
struct AppliedFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    team: Option<String>,
    revision: Option<u64>,
    hash: Option<String>,
}

/// `body` as the holding of an `applied` message, if that is what it is.
fn applied(body: &str) -> Option<Holding> {
    let fields = serde_json::from_str::<AppliedFields<'_>>(body).ok()?;
    if fields.kind != "applied" {
        return None;
    }
    Some(Holding {
        team: fields.team?,
        revision: fields.revision?,
        hash: fields.hash?,
    })
}

/// What the connection's socket did: a frame came (or the stream ended), a write failed, or the
/// fan-out found the queue full or stalled.
enum Io {
    Frame(Option<Result<Message, WsError>>),
    WriteFailed(std::io::Error),
    Overflowed,
}

/// Writes what is queued on `ws` (as far as the socket takes it) and reads the next frame, unless a
/// fan-out runs (`gate`: delivery first, the agents' messages are read after it); the task is woken
/// when the fan-out queues a frame for it.
fn poll_io(ws: &mut Socket, gate: &Gate, cx: &mut Context<'_>) -> TaskPoll<Io> {
    let port = ws.get_ref().port();
    if port.watch(cx.waker()) {
        return TaskPoll::Ready(Io::Overflowed);
    }
    if let TaskPoll::Ready(Err(error)) = port.poll_drain(cx) {
        return TaskPoll::Ready(Io::WriteFailed(error));
    }
    if !gate.admit(cx.waker()) {
        return TaskPoll::Pending;
    }
    ws.poll_next_unpin(cx).map(Io::Frame)
}

/// Writes everything queued on `port`.
async fn drain(port: &Port) -> std::io::Result<()> {
    poll_fn(|cx| port.poll_drain(cx)).await
}

/// Ends the connection within `timeout`: with an error (`last`), the error in place of what is still
/// queued (after a frame partly written, if one is: the stream must not break inside it); without,
/// the rest of the queue; then a close frame (`Policy` after an error, else `Normal`).
async fn close(mut ws: Socket, last: Option<Bytes>, timeout: Duration) {
    let port = Arc::clone(ws.get_ref().port());
    port.close();
    let ending = async {
        let code = match last {
            Some(message) => {
                port.discard_unstarted();
                if port.push(message).is_err() {
                    return;
                }
                CloseCode::Policy
            }
            None => CloseCode::Normal,
        };
        let reason = Utf8Bytes::from_static(if code == CloseCode::Policy {
            "error"
        } else {
            ""
        });
        let _ = ws.close(Some(CloseFrame { code, reason })).await;
    };
    let _ = tokio::time::timeout(timeout, ending).await;
}

/// One connected agent's state.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) agent: Agent,
    ws: Socket,
    pub(super) teams: BTreeSet<String>,
    /// The teams whose fan-out writes into this connection's port (the revision sent per team is
    /// kept in the port).
    membership: Membership,
    /// The last decision sent per change request.
    pub(super) decided: HashMap<String, GatewayMessage>,
    /// The organization key set the agent holds, as far as this connection knows (its `hello`, then
    /// what it was sent).
    pub(super) key_sequence: u64,
    /// The teams the agent is owed a signed removal of (see `removals`).
    pub(super) owed_removals: BTreeSet<String>,
    /// When the agent token expires, as the last re-check found it: the re-check is due then at the
    /// latest, so a connection does not outlive its token (ADR 0025).
    token_deadline: Option<Instant>,
    last_seen: Instant,
    /// When the connection began, and when its presence was last handed to the recorder (`None`:
    /// not yet, before the agent is greeted).
    connected_at: chrono::DateTime<chrono::Utc>,
    presence_kept: Option<Instant>,
}

/// How often a live connection's presence is recorded (the fleet's "last seen").
const PRESENCE_EVERY: Duration = Duration::from_secs(60);

/// Counts a connection in `edict_gateway_connections` while it lives.
struct Connected;

impl Connected {
    fn new() -> Self {
        metrics::gauge!(names::GATEWAY_CONNECTIONS).increment(1.0);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!(names::GATEWAY_CONNECTIONS).decrement(1.0);
    }
}

async fn run(shared: Arc<Shared>, agent: Agent, ws: Socket, mut shutdown: watch::Receiver<bool>) {
    let _connected = Connected::new();
    let settings = shared.settings.clone();
    let mut admissions = received(shared.admissions.subscribe());
    let membership = Membership {
        shared: shared.clone(),
        port: Arc::clone(ws.get_ref().port()),
        joined: Vec::new(),
    };
    let mut session = Session {
        shared,
        agent,
        ws,
        teams: BTreeSet::new(),
        membership,
        decided: HashMap::new(),
        key_sequence: 0,
        owed_removals: BTreeSet::new(),
        token_deadline: None,
        last_seen: Instant::now(),
        connected_at: chrono::Utc::now(),
        presence_kept: None,
    };
    let flow = if let Flow::Close(reason) = Box::pin(session.recheck()).await {
        Flow::Close(reason)
    } else {
        tokio::select! {
        flow = Box::pin(session.greet()) => flow,
        _ = shutdown.changed() => Flow::Close(None),
        }
    };
    let flow = match flow {
        Flow::Continue => {
            session.keep_presence(None);
            session.follow(&mut admissions, &mut shutdown).await
        }
        close => close,
    };
    if session.presence_kept.is_some() {
        session.keep_presence(Some(chrono::Utc::now()));
    }
    let last = match flow {
        Flow::Close(Some(message)) => Some(encoded(&message)),
        _ => None,
    };
    let Session { ws, membership, .. } = session;
    // Out of the fan-out before the close frame: nothing may follow it.
    drop(membership);
    Box::pin(close(ws, last, settings.write_timeout)).await;
    tracing::debug!("agent disconnected");
}

/// The connection's four timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// A WebSocket ping (and the idle and stall checks), every `ping_interval`.
    Ping,
    /// The token re-check, every `revocation_check`.
    Recheck,
    /// The teams refresh, every `refresh_interval` (or at once after a membership notice).
    Refresh,
    /// The decisions poll, every `decision_interval` (the first at once).
    Decisions,
}

/// When each timer is due next. A timer that fires is due again one period later (a late one does not
/// fire twice); the three reads wait while one of them is in flight.
#[derive(Debug)]
struct Due {
    ping: Instant,
    recheck: Instant,
    refresh: Instant,
    decisions: Instant,
}

impl Due {
    fn new(settings: &super::GatewaySettings) -> Due {
        let now = Instant::now();
        Due {
            ping: now + settings.ping_interval,
            recheck: now + settings.revocation_check,
            refresh: now + settings.refresh_interval,
            decisions: now,
        }
    }

    /// The earliest deadline (of the ping alone while a read is in flight).
    fn next(&self, idle: bool) -> Instant {
        if idle {
            self.ping
                .min(self.recheck)
                .min(self.refresh)
                .min(self.decisions)
        } else {
            self.ping
        }
    }

    /// The timer due at `now`, if one is (the ping first), rescheduled one period after `now`.
    fn take(
        &mut self,
        now: Instant,
        idle: bool,
        settings: &super::GatewaySettings,
    ) -> Option<Timer> {
        let (deadline, period, timer) = if self.ping <= now {
            (&mut self.ping, settings.ping_interval, Timer::Ping)
        } else if !idle {
            return None;
        } else if self.recheck <= now {
            (&mut self.recheck, settings.revocation_check, Timer::Recheck)
        } else if self.refresh <= now {
            (&mut self.refresh, settings.refresh_interval, Timer::Refresh)
        } else if self.decisions <= now {
            (
                &mut self.decisions,
                settings.decision_interval,
                Timer::Decisions,
            )
        } else {
            return None;
        };
        *deadline = now + period;
        Some(timer)
    }
}

/// What a broadcast receiver yields.
type Received<T> = Result<T, broadcast::error::RecvError>;

/// `receiver` as a stream whose pending `recv` lives across polls: an idle connection stays
/// registered with the broadcast once, instead of registering and leaving again at every turn of its
/// loop (10,000 connections of a team share the broadcast's lock).
fn received<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
) -> BoxStream<'static, Received<T>> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        Some((receiver.recv().await, receiver))
    })
    .boxed()
}

/// The teams whose fan-out reaches a connection's port: joined once the agent is greeted (so no
/// push comes before `welcome` and the answers of `hello`), left when it leaves a team or the
/// connection ends (dropped).
pub(super) struct Membership {
    shared: Arc<Shared>,
    port: Arc<Port>,
    joined: Vec<Arc<str>>,
}

impl Membership {
    fn join(&mut self, team: &str) {
        if !self.joined.iter().any(|held| **held == *team) {
            let team = self.shared.rulesets.join(team, &self.port);
            // The port takes the team's revisions from now on (refused after it forgets the team).
            self.port.join(&team);
            // Most agents are in one team: no room for more until a second comes.
            self.joined.reserve_exact(1);
            self.joined.push(team);
        }
    }

    fn leave(&mut self, team: &str) {
        if let Some(i) = self.joined.iter().position(|held| **held == *team) {
            let team = self.joined.swap_remove(i);
            self.shared.rulesets.leave(&team, &self.port);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for team in self.joined.drain(..) {
            self.shared.rulesets.leave(&team, &self.port);
        }
    }
}

impl Session {
    /// Waits for `hello`, answers `welcome` and the state of each team.
    async fn greet(&mut self) -> Flow {
        let idle = self.shared.settings.idle_timeout;
        let first = loop {
            let io = tokio::time::timeout(
                idle,
                poll_fn(|cx| poll_io(&mut self.ws, self.shared.rulesets.gate(), cx)),
            )
            .await;
            match io {
                Err(_) | Ok(Io::WriteFailed(_) | Io::Frame(None | Some(Err(_)))) => {
                    return Flow::Close(None);
                }
                // Not a member of any fan-out yet: only its own replies are queued.
                Ok(Io::Overflowed) => return Flow::Close(Some(Box::new(too_slow()))),
                Ok(Io::Frame(Some(Ok(Message::Text(text))))) => break text,
                Ok(Io::Frame(Some(Ok(Message::Close(_))))) => return Flow::Close(None),
                Ok(Io::Frame(Some(Ok(Message::Binary(_))))) => {
                    return Flow::Close(Some(Box::new(error("malformed", "text frames only"))));
                }
                Ok(Io::Frame(Some(Ok(_)))) => {}
            }
        };
        self.last_seen = Instant::now();
        let holdings = match serde_json::from_str::<AgentMessage>(&first) {
            Ok(AgentMessage::Hello {
                protocol,
                holdings,
                key_sequence,
                ..
            }) => {
                if protocol != PROTOCOL_VERSION {
                    return Flow::Close(Some(Box::new(error(
                        "unsupported_protocol",
                        &format!("this gateway speaks protocol {PROTOCOL_VERSION}"),
                    ))));
                }
                self.key_sequence = key_sequence;
                holdings
            }
            Ok(_) => {
                return Flow::Close(Some(Box::new(error(
                    "malformed",
                    "the first message is hello",
                ))));
            }
            Err(e) => return Flow::Close(Some(Box::new(error("malformed", &e.to_string())))),
        };
        let teams = match self.shared.edict.teams_of(self.agent.user).await {
            Ok(teams) => teams
                .iter()
                .map(ToString::to_string)
                .collect::<BTreeSet<_>>(),
            Err(e) => return self.unavailable(&e),
        };
        let welcome = GatewayMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            agent_id: self.agent.id.to_string(),
            teams: teams.iter().cloned().collect(),
        };
        if let Flow::Close(reason) = self.reply(encoded(&welcome)).await {
            return Flow::Close(reason);
        }
        // The key sets first: a rule set signed by a key announced since the agent's last connection
        // verifies only once the agent took the key set that announces it.
        match self.shared.keysets.all(&self.shared.edict).await {
            Ok(keysets) => {
                if let Flow::Close(reason) = self.send_keys(&keysets).await {
                    return Flow::Close(reason);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the key sets; sent at the next poll"),
        }
        self.teams = teams;
        let held: HashMap<&str, &Holding> = holdings.iter().map(|h| (h.team.as_str(), h)).collect();
        for team in self.teams.clone() {
            if let Flow::Close(reason) = self.answer(&team, held.get(team.as_str()).copied()).await
            {
                return Flow::Close(reason);
            }
        }
        for holding in &holdings {
            if !self.teams.contains(&holding.team) {
                self.owed_removals.insert(holding.team.clone());
            }
        }
        if let Flow::Close(reason) = self.send_removals().await {
            return Flow::Close(reason);
        }
        self.join_teams()
    }

    /// Joins the fan-out of each of the agent's teams, then offers each team's cached latest: a
    /// revision cached before the port joined is taken here, one cached after reaches the port
    /// through the fan-out (cached before it is fanned out), and the port sends each revision once.
    fn join_teams(&mut self) -> Flow {
        for team in &self.teams {
            self.membership.join(team);
        }
        let cached: Vec<Arc<Payload>> = self
            .teams
            .iter()
            .filter_map(|team| self.shared.rulesets.cached(team))
            .collect();
        for payload in &cached {
            if let Flow::Close(reason) = self.on_update(payload) {
                return Flow::Close(reason);
            }
        }
        Flow::Continue
    }

    /// Tells the agent the state of `team`: `current` when it holds the latest (or a later revision
    /// than this gateway has), else the rule set.
    async fn answer(&mut self, team: &str, held: Option<&Holding>) -> Flow {
        let latest = match self.shared.rulesets.latest(&*self.shared.feed, team).await {
            Ok(latest) => latest,
            Err(e) => {
                return self.unavailable(&edict_application::error::AppError::Unavailable(
                    e.to_string(),
                ));
            }
        };
        let Some(latest) = latest else {
            // No rule set of this team exists yet; its first revision will be pushed.
            return Flow::Continue;
        };
        if let Some(newer) = held.filter(|h| h.revision > latest.revision) {
            // The agent holds a later revision than this gateway knows (another gateway, or a
            // publisher this one has not heard from yet, was first): it is current as far as this
            // gateway can tell, and its older rule set must never replace the newer one. Revisions up
            // to the agent's are skipped from now on; a later one is pushed as usual.
            self.membership.port.mark_sent(&latest.team, newer.revision);
            return self
                .reply(encoded(&GatewayMessage::Current(newer.clone())))
                .await;
        }
        let current =
            held.is_some_and(|h| h.revision == latest.revision && *h.hash == *latest.hash);
        if current {
            // The agent holds the latest durably (it says so at each hello), but its `applied` may
            // have been lost (killed after the commit, before the ack): record it now. Unchanged
            // records stay as they are, so the time is the first the gateway learned of it.
            self.shared.recorder.record(super::recorder::Applied {
                agent: self.agent.id,
                team: team.to_owned(),
                revision: latest.revision,
                hash: latest.hash.to_string(),
                at: chrono::Utc::now(),
            });
        }
        let message = if current {
            encoded(&GatewayMessage::Current(Holding {
                team: team.to_owned(),
                revision: latest.revision,
                hash: latest.hash.to_string(),
            }))
        } else {
            latest.frame.clone()
        };
        self.membership
            .port
            .mark_sent(&latest.team, latest.revision);
        self.reply(message).await
    }

    /// After the greeting: frames, pushes and timers until the connection ends.
    async fn follow(
        &mut self,
        admissions: &mut BoxStream<'static, Received<AdmissionChange>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Flow {
        // Created once: polled at every turn, registered with the watch once.
        let mut stopping = std::pin::pin!(shutdown.changed());
        let settings = self.shared.settings.clone();
        let mut due = Due::new(&settings);
        // One timer for the four (whichever is due first): an idle connection polls one `Sleep` per
        // turn of its loop and keeps one, not four.
        let timer = tokio::time::sleep_until(due.next(true));
        tokio::pin!(timer);
        // The read in flight, if any; a read due meanwhile waits for it to finish.
        let mut polling: Option<Poll> = None;
        loop {
            if let Some(expiry) = self.token_deadline
                && expiry < due.recheck
            {
                due.recheck = expiry;
            }
            let idle = polling.is_none();
            let deadline = due.next(idle);
            if timer.deadline() != deadline || timer.is_elapsed() {
                timer.as_mut().reset(deadline);
            }
            let flow = tokio::select! {
                _ = &mut stopping => Flow::Close(None),
                io = poll_fn(|cx| poll_io(&mut self.ws, self.shared.rulesets.gate(), cx)) => match io {
                    Io::Frame(frame) => Box::pin(self.on_frame(frame)).await,
                    Io::WriteFailed(error) => {
                        tracing::debug!(%error, "write failed");
                        Flow::Close(None)
                    }
                    Io::Overflowed => Flow::Close(Some(Box::new(too_slow_push()))),
                },
                change = admissions.next() => match change.unwrap_or(Err(broadcast::error::RecvError::Closed)) {
                    // The event is authoritative (and may be read before the token is revoked).
                    Ok(AdmissionChange::AgentRevoked(agent)) if agent == self.agent.id => revoked(),
                    Ok(AdmissionChange::UserDeactivated(user)) if user == self.agent.user => revoked(),
                    // The tokens were revoked before the event was written: the re-check sees it
                    // (and a token issued after that password change stays connected).
                    Ok(AdmissionChange::PasswordChanged(user)) if user == self.agent.user => {
                        Box::pin(self.recheck()).await
                    }
                    Ok(AdmissionChange::MembershipChanged(user)) if user == self.agent.user => {
                        due.refresh = Instant::now();
                        Flow::Continue
                    }
                    Ok(AdmissionChange::TeamArchived(team)) if self.teams.contains(&team.to_string()) => {
                        due.refresh = Instant::now();
                        Flow::Continue
                    }
                    Ok(_) => Flow::Continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Some notices were missed: membership ones too.
                        due.refresh = Instant::now();
                        Box::pin(self.recheck()).await
                    }
                    Err(broadcast::error::RecvError::Closed) => Flow::Close(None),
                },
                polled = async {
                    match polling.as_mut() {
                        Some(poll) => poll.await,
                        None => std::future::pending().await,
                    }
                }, if !idle => {
                    polling = None;
                    Box::pin(self.on_polled(polled)).await
                }
                () = &mut timer => {
                    let now = Instant::now();
                    match due.take(now, idle, &settings) {
                        Some(Timer::Ping) => self.on_ping(settings.idle_timeout),
                        Some(Timer::Recheck) => {
                            // Set again by the answer: a failed re-check waits a whole period.
                            self.token_deadline = None;
                            polling = Some(self.start_recheck());
                            Flow::Continue
                        }
                        Some(Timer::Refresh) => {
                            polling = Some(self.start_refresh());
                            Flow::Continue
                        }
                        Some(Timer::Decisions) => {
                            polling = Some(self.start_decisions());
                            Flow::Continue
                        }
                        None => Flow::Continue,
                    }
                }
            };
            if let Flow::Close(reason) = flow {
                return Flow::Close(reason);
            }
        }
    }

    /// The ping timer: close an agent silent for longer than `idle_timeout` or one whose queue is
    /// stalled, else queue a ping.
    fn on_ping(&mut self, idle_timeout: Duration) -> Flow {
        if self.last_seen.elapsed() > idle_timeout {
            tracing::debug!("idle timeout");
            Flow::Close(None)
        } else if self.stalled() {
            Flow::Close(None)
        } else {
            self.push(wire::ping())
        }
    }

    /// Hands the connection's presence to the recorder: seen now, and ended at `ended` if it did.
    fn keep_presence(&mut self, ended: Option<chrono::DateTime<chrono::Utc>>) {
        self.presence_kept = Some(Instant::now());
        self.shared.recorder.seen(
            self.agent.id,
            super::recorder::Seen {
                connected_at: self.connected_at,
                last_seen_at: ended.unwrap_or_else(chrono::Utc::now),
                disconnected_at: ended,
            },
        );
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Flow {
        let frame = match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Flow::Close(None),
            Some(Ok(frame)) => frame,
        };
        self.last_seen = Instant::now();
        if self
            .presence_kept
            .is_some_and(|kept| self.last_seen.duration_since(kept) >= PRESENCE_EVERY)
        {
            self.keep_presence(None);
        }
        let body = match frame {
            Message::Text(body) => body,
            Message::Binary(_) => {
                return Flow::Close(Some(Box::new(error("malformed", "text frames only"))));
            }
            _ => return Flow::Continue,
        };
        // The common message first, without the generic parse of a tagged enum (which buffers
        // every field before it knows the variant): 10,000 of them follow every push to a team of
        // 10,000 agents.
        if let Some(holding) = applied(&body) {
            return self.on_applied(holding).await;
        }
        match serde_json::from_str::<AgentMessage>(&body) {
            Ok(AgentMessage::Applied(holding)) => self.on_applied(holding).await,
            Ok(AgentMessage::Report(report)) => self.on_report(report).await,
            Ok(refused @ AgentMessage::Refused { .. }) => self.on_refused(&refused),
            Ok(failure @ AgentMessage::IntegrityFailure { .. }) => {
                self.on_integrity_failure(&failure).await
            }
            Ok(AgentMessage::Hello { .. }) => Flow::Close(Some(Box::new(error(
                "malformed",
                "hello is only the first message; reconnect to resync",
            )))),
            Err(e) => Flow::Close(Some(Box::new(error("malformed", &e.to_string())))),
        }
    }

    /// Offers a team's revision to the port (written now, or queued for this loop; skipped when it
    /// was sent already).
    fn on_update(&mut self, payload: &Payload) -> Flow {
        if !self.teams.contains(&*payload.team) {
            return Flow::Continue;
        }
        let offered = self.membership.port.offer(
            &payload.team,
            payload.revision,
            &payload.frame,
            self.shared.settings.write_timeout,
        );
        match offered {
            Offered::Overflowed => Flow::Close(Some(Box::new(too_slow_push()))),
            Offered::Stale
            | Offered::NotMember
            | Offered::Written
            | Offered::Queued
            | Offered::Closed => Flow::Continue,
        }
    }

    /// Re-checks the agent token: a revoked agent or deactivated user is closed.
    async fn recheck(&mut self) -> Flow {
        let principal = Principal::Agent {
            id: self.agent.id,
            user: self.agent.user,
        };
        let admission = self
            .shared
            .edict
            .agent_still_admitted(&principal, &self.agent.bearer)
            .await;
        self.on_admission(admission)
    }

    /// Acts on a token re-check: a revoked agent, deactivated user or expired token is closed; an
    /// admitted one is re-checked again when its token expires at the latest (ADR 0025).
    pub(super) fn on_admission(&mut self, admission: Result<AgentAdmission, AppError>) -> Flow {
        match admission {
            Ok(AgentAdmission::Admitted { expires_at }) => {
                let left = expires_at.saturating_sub(chrono::Utc::now().timestamp());
                self.token_deadline = Some(
                    Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or_default()),
                );
                Flow::Continue
            }
            Ok(AgentAdmission::Expired) => expired(),
            Ok(AgentAdmission::Refused) => revoked(),
            Err(error) => {
                tracing::warn!(%error, "cannot re-check the agent token; keeping the connection");
                Flow::Continue
            }
        }
    }

    /// Takes the agent's teams as re-read (`teams`, with the latest rule set of each): a team it
    /// left is owed a signed removal (sent by `removals`), the rule set of a revision it was not sent
    /// yet is offered.
    pub(super) fn apply_teams(&mut self, teams: BTreeSet<String>, latest: &[Arc<Payload>]) -> Flow {
        let gone: Vec<String> = self.teams.difference(&teams).cloned().collect();
        for team in gone {
            self.membership.leave(&team);
            self.membership.port.forget(&team);
            self.owed_removals.insert(team);
        }
        if self.teams != teams {
            self.teams = teams;
            if let Flow::Close(reason) = self.join_teams() {
                return Flow::Close(reason);
            }
        }
        for payload in latest {
            if let Flow::Close(reason) = self.on_update(payload) {
                return Flow::Close(reason);
            }
        }
        Flow::Continue
    }

    /// Whether the socket took nothing of what is queued for longer than the write timeout (the agent
    /// reads nothing; one that reads a large frame slowly is not stalled).
    fn stalled(&self) -> bool {
        self.membership
            .port
            .stalled_for()
            .is_some_and(|stalled| stalled > self.shared.settings.write_timeout)
    }

    /// Queues a push (the loop writes it); a full or stalled queue closes the connection
    /// (`too_slow`).
    fn push(&mut self, message: Bytes) -> Flow {
        if self.stalled() || self.membership.port.push(message).is_err() {
            return Flow::Close(Some(Box::new(too_slow_push())));
        }
        metrics::counter!(names::GATEWAY_PUSHES).increment(1);
        Flow::Continue
    }

    /// Writes a reply now (with whatever is queued before it), waiting up to the write timeout.
    pub(super) async fn reply(&mut self, message: Bytes) -> Flow {
        let timeout = self.shared.settings.write_timeout;
        let port = &self.membership.port;
        if let Err(message) = port.push(message) {
            // Full: write what is queued first, then queue the reply.
            match tokio::time::timeout(timeout, drain(port)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Flow::Close(None),
                Err(_) => return Flow::Close(Some(Box::new(too_slow()))),
            }
            if port.push(message).is_err() {
                return Flow::Close(Some(Box::new(too_slow())));
            }
        }
        match tokio::time::timeout(timeout, drain(port)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(_)) => Flow::Close(None),
            Err(_) => Flow::Close(Some(Box::new(too_slow()))),
        }
    }

    pub(super) fn unavailable(&self, cause: &AppError) -> Flow {
        tracing::warn!(error = %cause, "closing: the store is unavailable");
        Flow::Close(Some(Box::new(error(
            "unavailable",
            "the gateway cannot reach its store; reconnect later",
        ))))
    }
}

#[cfg(test)]
mod tests;
