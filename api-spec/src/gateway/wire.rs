//! The socket under a connection's WebSocket, and the bounded queue of frames written to it.
//!
//! A [`Port`] owns the TCP stream and what waits to be written to it; it is shared by the
//! connection's task (through a [`Wire`], the `AsyncRead + AsyncWrite` tungstenite runs on) and by
//! the gateway's fan-out (`fanout`), which writes a team's new revision into every idle socket of the
//! team itself, one `write` each, without waking the connections' tasks.
//!
//! Every message goes out as a frame encoded once ([`frame`]): a rule set is encoded once per (team,
//! revision) and the same bytes go to every connection of its team (a server's frames are not
//! masked), so a push costs one reference-count increment and one `write` per connection, with no
//! copy and no per-connection write buffer (tungstenite's keeps the capacity of the largest frame it
//! ever wrote, which would have cost every connection a rule-set-sized buffer for life).
//!
//! The writers never interleave inside a frame: everything is written under the port's lock, a frame
//! goes straight to the socket only when nothing is queued before it (else it is queued behind), and
//! whatever tungstenite writes is taken whole at once (appended to the queue, never refused with
//! `Pending`), so its buffer is empty, and the queue on a frame boundary, whenever a frame is added.
//! What tungstenite writes by itself (pongs, the close) is bounded: past twice the queue's capacity a
//! write fails and the connection ends.
//!
//! The rule set revisions sent per team are kept here too, under the same lock, so that a revision
//! offered twice (by the fan-out and by the connection's own reads) goes out once, in order. So are
//! the teams the connection belongs to: the fan-out offers a revision to a copy of the team's ports,
//! so an offer may come after the connection left the team; it is refused under the lock the leave
//! takes ([`Port::forget`]), and the `removed` queued after the leave is the last the agent hears of
//! the team.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Queued frames written by one `writev`, at most.
const SLICES: usize = 16;

/// `payload` as one final, unmasked WebSocket text frame (what a server sends), header included.
pub(crate) fn frame(payload: impl Into<Bytes>) -> Bytes {
    encode(Frame::message(payload, OpCode::Data(Data::Text), true))
}

/// The payload of a frame [`frame`] encoded (unmasked): after 2 header bytes, plus an extended
/// length of 2 or 8 bytes when the length byte says 126 or 127.
pub(crate) fn payload_of(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|length| length & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}

/// An empty ping frame.
pub(super) fn ping() -> Bytes {
    encode(Frame::ping(Bytes::new()))
}

fn encode(frame: Frame) -> Bytes {
    let mut encoded = Vec::with_capacity(frame.len());
    // Invariant: formatting into a `Vec` cannot fail (the only error is the writer's).
    let _ = frame.format(&mut encoded);
    Bytes::from(encoded)
}

/// What became of a rule set revision offered to a port ([`Port::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    /// The port was sent this revision of the team (or a later one) already: nothing done.
    Stale,
    /// The connection does not belong to the team (it left it, or never joined): nothing done.
    NotMember,
    /// Written to the socket whole, now.
    Written,
    /// Queued (behind other frames, or the socket took part of it or nothing): the connection's task
    /// writes the rest.
    Queued,
    /// The queue is full or stalled: the connection is told to close with `too_slow` (its agent
    /// resyncs with a new `hello`), the revision is not queued.
    Overflowed,
    /// The connection is closing.
    Closed,
}

/// A connection's TCP stream and the frames waiting to be written to it, in order.
pub(super) struct Port {
    stream: TcpStream,
    out: Mutex<Out>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// What a port holds under its lock.
struct Out {
    queue: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Frames the connection may queue; tungstenite's own writes may take as many again.
    capacity: usize,
    /// While something is queued: since when the socket took nothing (the queue's first frame, or the
    /// last write that made progress). `None` when the queue is empty.
    since: Option<Instant>,
    /// The teams the connection belongs to, each with the latest revision sent (written or queued),
    /// if any. Only these teams' revisions are taken.
    teams: Vec<(Arc<str>, Option<u64>)>,
    /// An offer found the queue full or stalled.
    overflowed: bool,
    /// The connection is closing: offers are refused.
    closed: bool,
    /// The connection's task, woken when a frame is queued for it or the queue overflowed.
    waker: Option<Waker>,
}

impl Out {
    fn enqueue(&mut self, frame: Bytes) {
        self.since.get_or_insert_with(Instant::now);
        self.queue.push_back(frame);
    }

    fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    /// The entry of `team`, when the connection belongs to it.
    fn team(&mut self, team: &str) -> Option<&mut Option<u64>> {
        self.teams
            .iter_mut()
            .find(|(held, _)| std::ptr::eq(held.as_ptr(), team.as_ptr()) || **held == *team)
            .map(|(_, sent)| sent)
    }

    #[cfg(test)]
    fn sent(&self, team: &str) -> Option<u64> {
        self.teams
            .iter()
            .find(|(held, _)| std::ptr::eq(held.as_ptr(), team.as_ptr()) || **held == *team)
            .and_then(|(_, revision)| *revision)
    }

    /// The entry of `team`, added when the connection did not belong to it yet.
    fn join(&mut self, team: &Arc<str>) -> &mut Option<u64> {
        let i = match self
            .teams
            .iter()
            .position(|(held, _)| Arc::ptr_eq(held, team) || **held == **team)
        {
            Some(i) => i,
            None => {
                // Most agents are in one team: no room for more until a second comes.
                self.teams.reserve_exact(1);
                self.teams.push((Arc::clone(team), None));
                self.teams.len() - 1
            }
        };
        &mut self.teams[i].1
    }

    /// One write of what is queued (several frames per `writev`), without waiting.
    fn write_once(&self, stream: &TcpStream) -> io::Result<usize> {
        if self.queue.len() == 1 {
            return stream.try_write(&self.queue[0][self.written..]);
        }
        let mut slices = [IoSlice::new(&[]); SLICES];
        for (slice, (i, frame)) in slices.iter_mut().zip(self.queue.iter().enumerate()) {
            let skip = if i == 0 { self.written } else { 0 };
            *slice = IoSlice::new(&frame[skip..]);
        }
        let used = self.queue.len().min(SLICES);
        stream.try_write_vectored(&slices[..used])
    }

    /// Drops `wrote` bytes from the front of the queue.
    fn advance(&mut self, mut wrote: usize) {
        while let Some(front) = self.queue.front() {
            let left = front.len() - self.written;
            if wrote < left {
                self.written += wrote;
                return;
            }
            wrote -= left;
            self.written = 0;
            self.queue.pop_front();
        }
    }
}

impl Port {
    /// `stream` with an empty queue of at most `capacity` frames.
    pub(super) fn new(stream: TcpStream, capacity: usize) -> Arc<Port> {
        Arc::new(Port {
            stream,
            out: Mutex::new(Out {
                queue: VecDeque::new(),
                written: 0,
                capacity,
                since: None,
                teams: Vec::new(),
                overflowed: false,
                closed: false,
                waker: None,
            }),
        })
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        // A poisoned lock only means a panic elsewhere while holding it; the queue is still whole.
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an encoded frame, unless `capacity` frames are waiting already (then it is handed back).
    /// The connection's task writes it ([`Port::poll_drain`]).
    pub(super) fn push(&self, frame: Bytes) -> Result<(), Bytes> {
        let mut out = self.out();
        if out.queue.len() >= out.capacity {
            return Err(frame);
        }
        out.enqueue(frame);
        Ok(())
    }

    /// Offers revision `revision` of `team`'s rule set (`frame`): refused when the connection does not
    /// belong to the team ([`Port::join`], [`Port::forget`]), skipped when the port was sent it (or a
    /// later one) already; else written to the socket at once when nothing is queued before it
    /// and the socket takes it whole, or queued for the connection's task (woken). A queue that is full
    /// or has taken nothing for longer than `stall_limit` overflows instead: the connection's task is
    /// woken to close with `too_slow`.
    pub(super) fn offer(
        &self,
        team: &Arc<str>,
        revision: u64,
        frame: &Bytes,
        stall_limit: Duration,
    ) -> Offered {
        let mut out = self.out();
        if out.closed {
            return Offered::Closed;
        }
        let Some(sent) = out.team(team) else {
            return Offered::NotMember;
        };
        if sent.is_some_and(|sent| sent >= revision) {
            return Offered::Stale;
        }
        let stalled = out.since.is_some_and(|since| since.elapsed() > stall_limit);
        if stalled || out.queue.len() >= out.capacity {
            out.overflowed = true;
            out.wake();
            return Offered::Overflowed;
        }
        *out.join(team) = Some(revision);
        if out.queue.is_empty() {
            match self.stream.try_write(frame) {
                Ok(wrote) if wrote == frame.len() => return Offered::Written,
                Ok(wrote) => {
                    out.enqueue(frame.clone());
                    out.written = wrote;
                }
                // Nothing taken (or the socket failed: the task's own write meets the error).
                Err(_) => out.enqueue(frame.clone()),
            }
        } else {
            out.enqueue(frame.clone());
        }
        out.wake();
        Offered::Queued
    }

    /// The latest revision of `team` sent to this port, if any.
    #[cfg(test)]
    pub(super) fn sent(&self, team: &str) -> Option<u64> {
        self.out().sent(team)
    }

    /// Records that the connection belongs to `team`: its revisions are taken from now on.
    pub(super) fn join(&self, team: &Arc<str>) {
        self.out().join(team);
    }

    /// Records that `revision` of `team` was sent (by the connection itself, which belongs to the
    /// team); a later offer of it, or of an earlier one, is skipped.
    pub(super) fn mark_sent(&self, team: &Arc<str>, revision: u64) {
        let mut out = self.out();
        let sent = out.join(team);
        if sent.is_none_or(|sent| sent < revision) {
            *sent = Some(revision);
        }
    }

    /// Forgets `team` (the agent left it): what was sent of it, and the membership itself, so that an
    /// offer the fan-out makes after this (from a copy of the team's ports taken before the leave) is
    /// refused. Whatever the connection queues after this call (its `removed`) follows every frame of
    /// the team.
    pub(super) fn forget(&self, team: &str) {
        self.out().teams.retain(|(held, _)| **held != *team);
    }

    /// Remembers the task to wake when a frame is queued for it; answers whether an offer
    /// overflowed the queue (then the connection closes with `too_slow`).
    pub(super) fn watch(&self, waker: &Waker) -> bool {
        let mut out = self.out();
        if !out.waker.as_ref().is_some_and(|held| held.will_wake(waker)) {
            out.waker = Some(waker.clone());
        }
        out.overflowed
    }

    /// Refuses offers from now on (the connection is closing).
    pub(super) fn close(&self) {
        self.out().closed = true;
    }

    /// Drops every queued frame not started yet (a frame partly written stays: the stream must not
    /// break inside it).
    pub(super) fn discard_unstarted(&self) {
        let mut out = self.out();
        let keep = usize::from(out.written > 0);
        out.queue.truncate(keep);
        if out.queue.is_empty() {
            out.since = None;
        }
    }

    /// Whether something waits to be written.
    #[cfg(test)]
    pub(super) fn is_pending(&self) -> bool {
        !self.out().queue.is_empty()
    }

    /// How long the socket has taken nothing while something is queued, if something is (a slow
    /// agent that keeps reading a large frame is not stalled).
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        self.out().since.map(|since| since.elapsed())
    }

    /// Writes everything queued, several frames per `writev`. Cancel-safe: the queue keeps what the
    /// socket did not take.
    ///
    /// # Errors
    /// The socket's error when a write fails (the connection is gone).
    pub(super) fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out();
        while !out.queue.is_empty() {
            match out.write_once(&self.stream) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(wrote) => {
                    out.advance(wrote);
                    if !out.queue.is_empty() {
                        // Progress, with more to write: a stall counts from here.
                        out.since = Some(Instant::now());
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.poll_write_ready(cx))?;
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        out.since = None;
        Poll::Ready(Ok(()))
    }
}

/// A connection's [`Port`] as the byte stream tungstenite reads and writes.
pub(super) struct Wire {
    port: Arc<Port>,
}

impl Wire {
    /// `stream` with an empty queue of at most `capacity` frames.
    pub(super) fn new(stream: TcpStream, capacity: usize) -> Wire {
        Wire {
            port: Port::new(stream, capacity),
        }
    }

    /// The port, shared with the fan-out.
    pub(super) fn port(&self) -> &Arc<Port> {
        &self.port
    }
}

impl AsyncRead for Wire {
    /// Reads what the socket holds. A read that fills less than the buffer drained the socket (epoll
    /// is edge-triggered), so the readiness is cleared at once, as tokio's own `TcpStream` does:
    /// the next poll waits for new bytes instead of trying a read that would find none (a wasted
    /// system call per frame received).
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.port.stream;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            let mut read = 0;
            // The closure answers `WouldBlock` for a partial read too: that is what makes tokio
            // clear the readiness (only if no newer event came meanwhile).
            let result = stream.try_io(Interest::READABLE, || {
                read = (&*socket2::SockRef::from(stream)).read(unfilled)?;
                if 0 < read && read < room {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match result {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && read == 0 => {
                    // No bytes after all (the readiness is cleared): the next poll registers for
                    // the next.
                }
                Err(error) if read == 0 => return Poll::Ready(Err(error)),
                _ => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// tungstenite's writes: taken whole at once (see the module's documentation).
impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut out = self.port.out();
        if out.queue.len() >= 2 * out.capacity {
            return Poll::Ready(Err(io::Error::other(
                "the agent does not read what is written",
            )));
        }
        out.enqueue(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.port.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.port.poll_drain(cx))?;
        Poll::Ready(socket2::SockRef::from(&self.port.stream).shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::{Offered, Port, Wire, frame};
    use futures::{SinkExt, StreamExt};
    use std::future::poll_fn;
    use std::io::Cursor;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Poll;
    use std::task::{Wake, Waker};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::{Bytes, Message};
    use tokio_tungstenite::{WebSocketStream, accept_async, client_async};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    #[tokio::test]
    async fn encoded_frames_and_tungstenite_writes_arrive_as_whole_messages_in_order() {
        let (client, server) = pair().await;
        let serving = tokio::spawn(async move {
            let mut ws = accept_async(Wire::new(server, 8)).await.unwrap();
            let shared = frame("x".repeat(70_000));
            for text in ["one", "two"] {
                ws.get_ref().port().push(frame(text)).unwrap();
            }
            ws.get_ref().port().push(shared.clone()).unwrap();
            poll_fn(|cx| ws.get_ref().port().poll_drain(cx))
                .await
                .unwrap();
            // tungstenite's own write (a ping) between two queued frames.
            ws.send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap();
            ws.get_ref().port().push(frame("three")).unwrap();
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        });
        let (mut ws, _) = client_async("ws://localhost/ws", client).await.unwrap();
        let mut got = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) if text.len() > 100 => got.push(format!("long {}", text.len())),
                Message::Text(text) => got.push(text.to_string()),
                Message::Ping(_) => got.push("ping".into()),
                Message::Close(_) => got.push("close".into()),
                _ => {}
            }
        }
        assert_eq!(
            got,
            ["one", "two", "long 70000", "ping", "three", "close"].map(String::from)
        );
        serving.await.unwrap();
    }

    #[tokio::test]
    async fn a_frame_the_socket_takes_in_parts_is_finished_before_the_next_one() {
        let (mut client, server) = pair().await;
        let wire = Wire::new(server, 4);
        // Larger than the socket buffers: the first writes are partial.
        let big = frame("y".repeat(8 << 20));
        wire.port().push(big.clone()).unwrap();
        wire.port().push(frame("after")).unwrap();
        let draining = tokio::spawn(async move {
            poll_fn(|cx| wire.port().poll_drain(cx)).await.unwrap();
            wire
        });
        let mut received = vec![0u8; big.len() + frame("after").len()];
        client.read_exact(&mut received).await.unwrap();
        let wire = draining.await.unwrap();
        assert!(!wire.port().is_pending());
        assert_eq!(&received[..big.len()], &big[..]);
        assert_eq!(&received[big.len()..], &frame("after")[..]);
    }

    #[tokio::test]
    async fn the_encoded_frames_decode_as_the_messages_they_stand_for() {
        let mut bytes = frame("hello").to_vec();
        bytes.extend_from_slice(&super::ping());
        let mut ws = WebSocketStream::from_raw_socket(Cursor::new(bytes), Role::Client, None).await;
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        assert!(matches!(ws.next().await.unwrap().unwrap(), Message::Ping(p) if p.is_empty()));
    }

    #[tokio::test]
    async fn a_socket_that_takes_bytes_slowly_is_not_stalled() {
        let (mut client, server) = pair().await;
        let wire = Wire::new(server, 4);
        wire.port().push(frame("z".repeat(8 << 20))).unwrap();
        let polled = poll_fn(|cx| Poll::Ready(wire.port().poll_drain(cx))).await;
        assert!(polled.is_pending());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Nothing read: stalled since the push.
        assert!(wire.port().stalled_for().unwrap() >= Duration::from_millis(200));
        let mut read = vec![0u8; 1 << 20];
        client.read_exact(&mut read).await.unwrap();
        // The socket takes more (the rest does not fit): the stall counts from that write.
        let draining = poll_fn(|cx| wire.port().poll_drain(cx));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), draining)
                .await
                .is_err()
        );
        assert!(wire.port().stalled_for().unwrap() < Duration::from_millis(200));
    }

    #[test]
    fn the_payload_is_found_after_each_length_of_header() {
        for len in [0, 125, 126, 65_535, 65_536, 200_000] {
            let payload = vec![b'a'; len];
            assert_eq!(
                super::payload_of(&frame(payload.clone())),
                &payload[..],
                "{len}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_hands_the_frame_back() {
        let (_client, server) = pair().await;
        let wire = Wire::new(server, 2);
        wire.port().push(frame("a")).unwrap();
        wire.port().push(frame("b")).unwrap();
        assert_eq!(wire.port().push(frame("c")), Err(frame("c")));
        assert!(wire.port().stalled_for().is_some());
    }

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    /// A port on a fresh socket whose readiness the runtime knows (a write went through it).
    async fn ready_port(capacity: usize) -> (TcpStream, Arc<Port>) {
        let (client, server) = pair().await;
        let port = Port::new(server, capacity);
        port.push(frame("first")).unwrap();
        poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
        (client, port)
    }

    async fn read_frame(client: &mut TcpStream, expected: &[u8]) {
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn an_offer_to_an_idle_port_is_written_at_once_and_only_once() {
        let (mut client, port) = ready_port(4).await;
        read_frame(&mut client, &frame("first")).await;
        let (count, waker) = counting();
        assert!(!port.watch(&waker));
        let team: Arc<str> = Arc::from("team");
        let rev2 = frame("rev 2");
        let limit = Duration::from_secs(10);
        port.join(&team);
        assert_eq!(port.offer(&team, 2, &rev2, limit), Offered::Written);
        assert!(!port.is_pending());
        read_frame(&mut client, &rev2).await;
        // The same revision again, or an older one: nothing written.
        assert_eq!(port.offer(&team, 2, &rev2, limit), Offered::Stale);
        assert_eq!(port.offer(&team, 1, &frame("rev 1"), limit), Offered::Stale);
        assert_eq!(port.sent("team"), Some(2));
        // Written directly: the connection's task was not woken.
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        // Another team is tracked apart.
        let other: Arc<str> = Arc::from("other");
        assert_eq!(
            port.offer(&other, 1, &frame("other 1"), limit),
            Offered::NotMember,
            "not a member of that team yet"
        );
        port.join(&other);
        assert_eq!(
            port.offer(&other, 1, &frame("other 1"), limit),
            Offered::Written
        );
        read_frame(&mut client, &frame("other 1")).await;
        port.forget("team");
        assert_eq!(port.sent("team"), None);
        assert_eq!(port.sent("other"), Some(1));
    }

    #[tokio::test]
    async fn an_offer_behind_queued_frames_is_queued_in_order_and_wakes_the_task() {
        let (mut client, port) = ready_port(4).await;
        read_frame(&mut client, &frame("first")).await;
        let (count, waker) = counting();
        port.watch(&waker);
        port.push(frame("reply")).unwrap();
        let team: Arc<str> = Arc::from("team");
        port.join(&team);
        let rev = frame("rev 1");
        assert_eq!(
            port.offer(&team, 1, &rev, Duration::from_secs(10)),
            Offered::Queued
        );
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
        let mut expected = frame("reply").to_vec();
        expected.extend_from_slice(&rev);
        read_frame(&mut client, &expected).await;
    }

    #[tokio::test]
    async fn an_offer_to_a_full_or_stalled_queue_overflows_and_a_closed_port_takes_none() {
        let (_client, port) = ready_port(2).await;
        let (count, waker) = counting();
        port.watch(&waker);
        port.push(frame("a")).unwrap();
        port.push(frame("b")).unwrap();
        let team: Arc<str> = Arc::from("team");
        port.join(&team);
        let limit = Duration::from_secs(10);
        assert_eq!(
            port.offer(&team, 1, &frame("c"), limit),
            Offered::Overflowed
        );
        assert!(port.watch(&waker), "the task learns of the overflow");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // Not full, but nothing taken for longer than the limit.
        let (_client, port) = ready_port(8).await;
        port.join(&team);
        port.push(frame("a")).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let short = Duration::from_millis(10);
        assert_eq!(
            port.offer(&team, 1, &frame("c"), short),
            Offered::Overflowed
        );
        let (_client, port) = ready_port(8).await;
        port.join(&team);
        port.close();
        assert_eq!(port.offer(&team, 1, &frame("c"), limit), Offered::Closed);
        assert_eq!(port.sent("team"), None);
    }

    /// The fan-out copies a team's ports, then offers to each: a port whose connection left the team
    /// between the two (it forgot the team and queued `removed`) must take none of the team's later
    /// revisions, or the agent stores the team again after `removed`.
    #[tokio::test]
    async fn an_offer_after_the_team_was_forgotten_is_refused_and_nothing_follows_removed() {
        let (mut client, port) = ready_port(8).await;
        read_frame(&mut client, &frame("first")).await;
        let team: Arc<str> = Arc::from("team");
        let limit = Duration::from_secs(10);
        port.join(&team);
        assert_eq!(
            port.offer(&team, 1, &frame("rev 1"), limit),
            Offered::Written
        );
        read_frame(&mut client, &frame("rev 1")).await;
        // A fan-out thread that copied this port keeps offering while the connection leaves.
        let offering = {
            let port = Arc::clone(&port);
            let team = Arc::clone(&team);
            std::thread::spawn(move || {
                for revision in 2..2_000u64 {
                    let _ = port.offer(&team, revision, &frame(format!("rev {revision}")), limit);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(1));
        port.forget("team");
        port.push(frame("removed")).unwrap();
        offering.join().unwrap();
        poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
        port.push(frame("end")).unwrap();
        poll_fn(|cx| port.poll_drain(cx)).await.unwrap();
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut after_removed = Vec::new();
        let mut removed = false;
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            match text.as_str() {
                "end" => break,
                "removed" => removed = true,
                other if removed => after_removed.push(other.to_owned()),
                _ => {}
            }
        }
        assert!(removed);
        assert!(
            after_removed.is_empty(),
            "pushed after removed: {:?}",
            &after_removed[..after_removed.len().min(3)]
        );
        // Offered afterwards: refused too.
        assert_eq!(
            port.offer(&team, 5_000, &frame("late"), limit),
            Offered::NotMember
        );
        assert_eq!(port.sent("team"), None);
        // Joining again (the agent is added back): its revisions are taken again.
        port.join(&team);
        assert_eq!(
            port.offer(&team, 5_001, &frame("back"), limit),
            Offered::Written
        );
    }
}
