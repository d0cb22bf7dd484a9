//! The simulated agents of `edict-bench agents`: one task and one WebSocket per agent, speaking the
//! real protocol (`edict_api::protocol`) as `edict-agent`'s client does, minus the files and redb.
//!
//! The upgrade is tokio-tungstenite's; after it, a [`Link`] reads and writes the frames itself (a
//! client's masked, a server's not, RFC 6455): the load generator shares the machine's two cores with
//! the gateway it measures, so each rule set costs it one read, one parse of the fields it checks and
//! one write, nothing more.
//!
//! Each agent connects with its agent token and `Edict-Protocol: 1`, sends `hello` with what it holds
//! (nothing at first, then the last rule set it applied: a resume), answers every `rule_set` with
//! `applied` at once, and reconnects after any close with the real client's jittered exponential
//! backoff (100 ms doubling to 30 s, drawn from [base / 2, base], reset once welcomed). It checks that
//! revisions never go backwards. What the measurements read is shared through atomics: the revision
//! each agent holds and when it sent the `applied` of that revision.

use edict_api::protocol::{AgentMessage, Holding, PROTOCOL_HEADER, PROTOCOL_VERSION};
use edict_backoff::Backoff;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The reconnect delays of `edict-agent`'s client.
const BACKOFF: Backoff = Backoff::jittered(Duration::from_millis(100), Duration::from_secs(30));

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

/// One agent: connect, serve, reconnect, until stopped.
async fn agent(i: usize, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut holding: Option<Holding> = None;
    // Connections in a row without a welcome.
    let mut failures = 0;
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
            failures = 0;
        }
        tokio::select! {
            () = tokio::time::sleep(BACKOFF.delay(failures)) => {}
            _ = stop.changed() => return,
        }
        failures = failures.saturating_add(1);
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
    let Some(addr) = request.uri().authority().map(|a| a.as_str().to_owned()) else {
        return false;
    };
    let connect = async move {
        let mut stream = TcpStream::connect(&addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        // The upgrade through tungstenite, on a borrowed stream kept afterwards: the gateway sends
        // nothing before `hello`, so tungstenite holds no byte past the handshake.
        let upgrade =
            tokio_tungstenite::client_async_with_config(request, &mut stream, Some(config)).await;
        drop(upgrade.ok()?);
        Some(Link::new(stream))
    };
    let mut ws = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(Some(link)) => link,
        _ => return false,
    };
    let hello = AgentMessage::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: "bench".into(),
        holdings: holding.iter().cloned().collect(),
        key_sequence: 0,
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
                let _ = ws.write(CLOSE, &1000u16.to_be_bytes()).await;
                break;
            }
        };
        let text = match frame {
            Ok(Some((TEXT, range))) => range,
            Ok(Some((PING, range))) => {
                let payload = ws.buffer[range].to_vec();
                if ws.write(PONG, &payload).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Some((CLOSE, _))) => {
                let _ = ws.write(CLOSE, &1000u16.to_be_bytes()).await;
                break;
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        };
        let Ok(message) = serde_json::from_slice::<Incoming>(&ws.buffer[text]) else {
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
            // Key sets (ADR 0021) come at each connection of an agent that named none.
            ("report_ack" | "decision" | "keys", ..) => {}
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
/// real agent renders it; that cost is the agent's, measured by `edict-bench agent-revert`): the
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

async fn send(link: &mut Link, message: &AgentMessage) -> Result<(), ()> {
    let text = serde_json::to_vec(message).map_err(drop)?;
    link.write(TEXT, &text).await.map_err(drop)
}

/// Frame opcodes (RFC 6455, 5.2).
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
/// The largest frame read (the gateway's limit of a message).
const MAX_FRAME: usize = 8 << 20;

/// A simulated agent's WebSocket after the upgrade: the TCP stream and what was read of it.
struct Link {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Unparsed bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl Link {
    fn new(stream: TcpStream) -> Link {
        Link {
            stream,
            buffer: vec![0; 4096],
            start: 0,
            end: 0,
        }
    }

    /// The next whole frame (only final frames: the gateway sends no fragments): its opcode and
    /// where its payload is in `buffer`; `None` at the end of the stream.
    async fn next(&mut self) -> io::Result<Option<(u8, std::ops::Range<usize>)>> {
        loop {
            match parse(&self.buffer[self.start..self.end])? {
                Some((opcode, header, length)) => {
                    let payload = self.start + header..self.start + header + length;
                    self.start = payload.end;
                    return Ok(Some((opcode, payload)));
                }
                None => self.make_room()?,
            }
            let read = self.stream.read(&mut self.buffer[self.end..]).await?;
            if read == 0 {
                return Ok(None);
            }
            self.end += read;
        }
    }

    /// Moves what is unparsed to the front, or grows the buffer when it is full of one frame.
    fn make_room(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buffer.len() {
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buffer.len() < MAX_FRAME + 14 {
                self.buffer.resize(self.buffer.len() * 2, 0);
            } else {
                return Err(io::Error::other("frame too large"));
            }
        }
        Ok(())
    }

    /// Writes one final frame, masked as a client's must be.
    async fn write(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand::random();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        self.stream.write_all(&frame).await
    }
}

/// A server frame at the start of `bytes`: (opcode, header length, payload length) once it is
/// whole, `None` until then.
fn parse(bytes: &[u8]) -> io::Result<Option<(u8, usize, usize)>> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x80 == 0 || second & 0x80 != 0 {
        return Err(io::Error::other(
            "a fragmented or masked frame from the gateway",
        ));
    }
    let (header, length) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(len) => (4, usize::from(u16::from_be_bytes([len[0], len[1]]))),
            None => return Ok(None),
        },
        127 => match bytes
            .get(2..10)
            .and_then(|len| <[u8; 8]>::try_from(len).ok())
        {
            Some(len) => (
                10,
                usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX),
            ),
            None => return Ok(None),
        },
        n => (2, usize::from(n)),
    };
    if length > MAX_FRAME {
        return Err(io::Error::other("frame too large"));
    }
    Ok((bytes.len() >= header + length).then_some((first & 0x0f, header, length)))
}

#[cfg(test)]
mod tests {
    use super::{Incoming, parse};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    #[test]
    fn server_frames_are_read_as_tungstenite_writes_them() {
        for len in [0usize, 125, 126, 2_075, 65_535, 65_536, 300_000] {
            let mut bytes = Vec::new();
            Frame::message(vec![b'a'; len], OpCode::Data(Data::Text), true)
                .format(&mut bytes)
                .unwrap();
            let (opcode, header, length) = parse(&bytes).unwrap().unwrap();
            assert_eq!((opcode, length, header + length), (0x1, len, bytes.len()));
            // Not whole yet.
            assert_eq!(parse(&bytes[..bytes.len() - 1]).unwrap(), None, "{len}");
        }
        let mut ping = Vec::new();
        Frame::ping(vec![1, 2]).format(&mut ping).unwrap();
        assert_eq!(parse(&ping).unwrap(), Some((0x9, 2, 2)));
        // A masked (client) frame, or a fragment, is not what the gateway sends.
        assert!(parse(&[0x81, 0x83, 1, 2, 3, 4, 0, 0, 0]).is_err());
        assert!(parse(&[0x01, 0x01, b'a']).is_err());
    }

    #[tokio::test]
    async fn a_link_speaks_websocket_with_a_tungstenite_server() {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let hello = ws.next().await.unwrap().unwrap();
            ws.send(Message::text("x".repeat(70_000))).await.unwrap();
            ws.send(Message::Ping(vec![7u8].into())).await.unwrap();
            let pong = ws.next().await.unwrap().unwrap();
            (hello, pong)
        });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("ws://{addr}/ws");
        drop(
            tokio_tungstenite::client_async(request, &mut stream)
                .await
                .unwrap(),
        );
        let mut link = super::Link::new(stream);
        link.write(super::TEXT, b"hello").await.unwrap();
        let (opcode, text) = link.next().await.unwrap().unwrap();
        assert_eq!((opcode, text.len()), (super::TEXT, 70_000));
        assert!(link.buffer[text].iter().all(|b| *b == b'x'));
        let (opcode, ping) = link.next().await.unwrap().unwrap();
        assert_eq!(opcode, super::PING);
        let payload = link.buffer[ping].to_vec();
        link.write(super::PONG, &payload).await.unwrap();
        let (hello, pong) = server.await.unwrap();
        assert_eq!(hello, Message::text("hello"));
        assert_eq!(pong, Message::Pong(vec![7u8].into()));
    }
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
            ruleset: Box::new(
                serde_json::from_value(serde_json::json!({
                    "team_id": "00000000-0000-0000-0000-000000000001", "revision": 7, "hash": "h",
                    "layers": {"team": {"rules": [{"rule_id": "00000000-0000-0000-0000-000000000002",
                        "name": "r", "mode": "block"}]}}
                }))
                .unwrap(),
            ),
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
        let removed = read(&GatewayMessage::Removed {
            team: "t".into(),
            agent: None,
            position: None,
            signature: None,
        });
        assert_eq!(removed.kind, "removed");
    }
}
