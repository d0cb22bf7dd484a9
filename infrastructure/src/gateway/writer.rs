//! The writing half of a connection: an [`Outbox`] the connection's own task drains while it waits for
//! anything else (no writer task, no channel: each idle connection keeps a sink and an empty queue).
//!
//! A text message longer than [`FRAGMENT`] (a rule set) goes out as fragments (a text frame, then
//! continuation frames; the agent's WebSocket reassembles them): tungstenite formats each frame into a
//! write buffer that keeps the capacity of the largest frame it ever held, so unfragmented, every
//! connection would keep a copy-sized buffer of its team's largest rule set for as long as it lives.

use futures::stream::SplitSink;
use futures::{Sink, SinkExt};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Error, Message, Utf8Bytes};

/// The largest frame written: what the write buffer of an idle connection keeps at most.
const FRAGMENT: usize = 1024;

type WsSink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// Messages waiting to be written to one connection, bounded, written in order.
pub(super) struct Outbox {
    sink: WsSink,
    queue: VecDeque<Message>,
    capacity: usize,
    /// Frames of a fragmented message still queued at the front: nothing may go before them.
    fragments: usize,
    /// A frame was handed to the sink and not flushed yet.
    unflushed: bool,
    /// Since when the queue has not been empty (cleared when it drains).
    since: Option<Instant>,
}

impl Outbox {
    /// An empty outbox of at most `capacity` messages over `sink`.
    pub(super) fn new(sink: WsSink, capacity: usize) -> Outbox {
        Outbox {
            sink,
            queue: VecDeque::new(),
            capacity,
            fragments: 0,
            unflushed: false,
            since: None,
        }
    }

    /// Queues `message`, unless `capacity` messages are waiting already (then it is handed back).
    pub(super) fn push(&mut self, message: Message) -> Result<(), Message> {
        if self.queue.len() >= self.capacity {
            return Err(message);
        }
        self.since.get_or_insert_with(Instant::now);
        self.queue.push_back(message);
        Ok(())
    }

    /// Whether something waits to be written (or flushed).
    pub(super) fn is_pending(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    /// How long the queue has been waiting without draining, if it is.
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        self.since.map(|since| since.elapsed())
    }

    /// Writes everything queued. Cancel-safe: a message leaves the queue only once the sink took it.
    ///
    /// # Errors
    /// The WebSocket's error when a write fails (the connection is gone).
    pub(super) async fn drain(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_drain(cx)).await
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if self.unflushed {
                // Each frame is flushed before the next one (no write buffering): the write buffer
                // never holds more than one.
                ready!(Sink::poll_flush(std::pin::Pin::new(&mut self.sink), cx))?;
                self.unflushed = false;
            }
            let Some(message) = self.queue.pop_front() else {
                self.since = None;
                return Poll::Ready(Ok(()));
            };
            let message = match message {
                Message::Text(text) if text.len() > FRAGMENT => {
                    self.split(&text);
                    continue;
                }
                message => message,
            };
            match self.sink.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    self.queue.push_front(message);
                    return Poll::Pending;
                }
            }
            if matches!(message, Message::Frame(_)) {
                self.fragments = self.fragments.saturating_sub(1);
            }
            self.sink.start_send_unpin(message)?;
            self.unflushed = true;
        }
    }

    /// Replaces a long text at the front of the queue by its fragments.
    fn split(&mut self, text: &Utf8Bytes) {
        let bytes: &Bytes = text.as_ref();
        let mut frames = Vec::with_capacity(bytes.len().div_ceil(FRAGMENT));
        let mut start = 0;
        while start < bytes.len() {
            let end = (start + FRAGMENT).min(bytes.len());
            let opcode = if start == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            frames.push(Message::Frame(Frame::message(
                bytes.slice(start..end),
                opcode,
                end == bytes.len(),
            )));
            start = end;
        }
        self.fragments = frames.len();
        for frame in frames.into_iter().rev() {
            self.queue.push_front(frame);
        }
    }

    /// Ends the connection within `timeout`: `last` (an error) ahead of whatever is still queued (not
    /// in the middle of a fragmented message: then the connection just ends), the rest of the queue,
    /// and a close frame (`Policy` after an error, else `Normal`).
    pub(super) async fn close(mut self, last: Option<Message>, timeout: Duration) {
        let ending = async {
            let code = match last {
                Some(message) if self.fragments == 0 => {
                    self.queue.clear();
                    self.queue.push_back(message);
                    CloseCode::Policy
                }
                Some(_) => return,
                None => CloseCode::Normal,
            };
            if self.drain().await.is_err() {
                return;
            }
            let reason = Utf8Bytes::from_static(if code == CloseCode::Policy {
                "error"
            } else {
                ""
            });
            let _ = self
                .sink
                .send(Message::Close(Some(CloseFrame { code, reason })))
                .await;
            let _ = self.sink.close().await;
        };
        let _ = tokio::time::timeout(timeout, ending).await;
    }
}
