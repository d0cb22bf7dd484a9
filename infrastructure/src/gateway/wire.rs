//! The socket under a connection's WebSocket, and the bounded queue of frames written to it.
//!
//! A [`Wire`] owns the TCP stream; tungstenite reads through it (the agent's frames, the handshake)
//! and writes through it (the 101 answer, pongs, the close frame), and the connection's own messages
//! are queued on it as frames already encoded ([`frame`]): a rule set is encoded once per (team,
//! revision) and the same bytes go to every connection of its team (a server's frames are not
//! masked), so a push costs one reference-count increment and one `write` per connection, with no
//! copy and no per-connection write buffer (tungstenite's keeps the capacity of the largest frame it
//! ever wrote, which would have cost every connection a rule-set-sized buffer for life).
//!
//! The two writers never interleave inside a frame: whatever tungstenite writes is taken whole at once
//! (appended to the queue, never refused with `Pending`), so its buffer is empty, and the queue on a
//! frame boundary, whenever the connection queues a frame of its own. What tungstenite writes by
//! itself (pongs, the close) is bounded: past twice the queue's capacity a write fails and the
//! connection ends.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// A connection's TCP stream and the frames waiting to be written to it, in order.
pub(super) struct Wire {
    stream: TcpStream,
    queue: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Frames the connection may queue; tungstenite's own writes may take as many again.
    capacity: usize,
    /// While something is queued: since when the socket took nothing (the queue's first frame, or the
    /// last write that made progress). `None` when the queue is empty.
    since: Option<Instant>,
}

impl Wire {
    /// `stream` with an empty queue of at most `capacity` frames.
    pub(super) fn new(stream: TcpStream, capacity: usize) -> Wire {
        Wire {
            stream,
            queue: VecDeque::new(),
            written: 0,
            capacity,
            since: None,
        }
    }

    /// Queues an encoded frame, unless `capacity` frames are waiting already (then it is handed back).
    pub(super) fn push(&mut self, frame: Bytes) -> Result<(), Bytes> {
        if self.queue.len() >= self.capacity {
            return Err(frame);
        }
        self.enqueue(frame);
        Ok(())
    }

    fn enqueue(&mut self, frame: Bytes) {
        self.since.get_or_insert_with(Instant::now);
        self.queue.push_back(frame);
    }

    /// Drops every queued frame not started yet (a frame partly written stays: the stream must not
    /// break inside it).
    pub(super) fn discard_unstarted(&mut self) {
        let keep = usize::from(self.written > 0);
        self.queue.truncate(keep);
        if self.queue.is_empty() {
            self.since = None;
        }
    }

    /// Whether something waits to be written.
    pub(super) fn is_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// How long the socket has taken nothing while something is queued, if something is (a slow
    /// agent that keeps reading a large frame is not stalled).
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        self.since.map(|since| since.elapsed())
    }

    /// Writes everything queued, several frames per `writev`. Cancel-safe: the queue keeps what the
    /// socket did not take.
    ///
    /// # Errors
    /// The socket's error when a write fails (the connection is gone).
    pub(super) fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let wrote = if self.queue.len() == 1 {
                let front = &self.queue[0][self.written..];
                ready!(Pin::new(&mut self.stream).poll_write(cx, front))?
            } else {
                let mut slices = [IoSlice::new(&[]); SLICES];
                for (slice, (i, frame)) in slices.iter_mut().zip(self.queue.iter().enumerate()) {
                    let skip = if i == 0 { self.written } else { 0 };
                    *slice = IoSlice::new(&frame[skip..]);
                }
                let used = self.queue.len().min(SLICES);
                ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..used]))?
            };
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(wrote);
            if !self.queue.is_empty() {
                // Progress, with more to write: a stall counts from here.
                self.since = Some(Instant::now());
            }
        }
        self.since = None;
        Poll::Ready(Ok(()))
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

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

/// tungstenite's writes: taken whole at once (see the module's documentation).
impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.queue.len() >= 2 * self.capacity {
            return Poll::Ready(Err(io::Error::other(
                "the agent does not read what is written",
            )));
        }
        self.enqueue(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Wire, frame};
    use futures::{SinkExt, StreamExt};
    use std::future::poll_fn;
    use std::io::Cursor;
    use std::task::Poll;
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
                ws.get_mut().push(frame(text)).unwrap();
            }
            ws.get_mut().push(shared.clone()).unwrap();
            poll_fn(|cx| ws.get_mut().poll_drain(cx)).await.unwrap();
            // tungstenite's own write (a ping) between two queued frames.
            ws.send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap();
            ws.get_mut().push(frame("three")).unwrap();
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
        let mut wire = Wire::new(server, 4);
        // Larger than the socket buffers: the first writes are partial.
        let big = frame("y".repeat(8 << 20));
        wire.push(big.clone()).unwrap();
        wire.push(frame("after")).unwrap();
        let draining = tokio::spawn(async move {
            poll_fn(|cx| wire.poll_drain(cx)).await.unwrap();
            wire
        });
        let mut received = vec![0u8; big.len() + frame("after").len()];
        client.read_exact(&mut received).await.unwrap();
        let wire = draining.await.unwrap();
        assert!(!wire.is_pending());
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
        let mut wire = Wire::new(server, 4);
        wire.push(frame("z".repeat(8 << 20))).unwrap();
        let polled = poll_fn(|cx| Poll::Ready(wire.poll_drain(cx))).await;
        assert!(polled.is_pending());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Nothing read: stalled since the push.
        assert!(wire.stalled_for().unwrap() >= Duration::from_millis(200));
        let mut read = vec![0u8; 1 << 20];
        client.read_exact(&mut read).await.unwrap();
        // The socket takes more (the rest does not fit): the stall counts from that write.
        let draining = poll_fn(|cx| wire.poll_drain(cx));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), draining)
                .await
                .is_err()
        );
        assert!(wire.stalled_for().unwrap() < Duration::from_millis(200));
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
        let mut wire = Wire::new(server, 2);
        wire.push(frame("a")).unwrap();
        wire.push(frame("b")).unwrap();
        assert_eq!(wire.push(frame("c")), Err(frame("c")));
        assert!(wire.stalled_for().is_some());
    }
}
