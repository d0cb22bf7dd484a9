//! The writing half of a connection: one task per connection, fed by a bounded queue, with a side
//! channel for a last message (an error) that goes ahead of anything still queued.
//!
//! A text message longer than [`FRAGMENT`] (a rule set) goes out as fragments (a text frame, then
//! continuation frames; the agent's WebSocket reassembles them): tungstenite formats each frame into a
//! write buffer that keeps the capacity of the largest frame it ever held, so unfragmented, every
//! connection would keep a copy-sized buffer of its team's largest rule set for as long as it lives.

use futures::SinkExt;
use futures::stream::SplitSink;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// The largest frame written: what the write buffer of an idle connection keeps at most.
const FRAGMENT: usize = 1024;

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// Writes queued messages until the queue closes (then a normal close) or a last message arrives
/// (an error: sent ahead of anything still queued, then the close).
pub(super) async fn write_loop(
    mut sink: Sink,
    mut queue: mpsc::Receiver<Message>,
    mut last: oneshot::Receiver<Message>,
    write_timeout: Duration,
) {
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: Utf8Bytes::from_static(""),
    };
    let mut closing = Some(normal);
    loop {
        tokio::select! {
            biased;
            message = &mut last => {
                if let Ok(message) = message {
                    let _ = tokio::time::timeout(write_timeout, sink.send(message)).await;
                    closing = Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: Utf8Bytes::from_static("error"),
                    });
                }
                break;
            }
            message = queue.recv() => match message {
                Some(message) => {
                    let fragmented = matches!(&message, Message::Text(text) if text.len() > FRAGMENT);
                    let sent = tokio::select! {
                        biased;
                        sent = tokio::time::timeout(write_timeout, send(&mut sink, message)) => sent,
                        // An error to send while this write is stuck: the frame stays buffered
                        // whole in the sink; the error follows it. Not in the middle of a fragmented
                        // message (no other data frame may come before its last fragment): then the
                        // connection just ends.
                        final_message = &mut last => {
                            if let Ok(final_message) = final_message
                                && !fragmented
                            {
                                let _ = tokio::time::timeout(write_timeout, sink.send(final_message)).await;
                            }
                            closing = None;
                            break;
                        }
                    };
                    if !matches!(sent, Ok(Ok(()))) {
                        closing = None;
                        break;
                    }
                }
                None => break,
            }
        }
    }
    if let Some(frame) = closing {
        let _ = tokio::time::timeout(write_timeout, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
}

/// Sends `message`, in fragments of at most [`FRAGMENT`] bytes when it is a longer text.
async fn send(
    sink: &mut Sink,
    message: Message,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let text = match message {
        Message::Text(text) if text.len() > FRAGMENT => text,
        other => return sink.send(other).await,
    };
    let bytes: &Bytes = text.as_ref();
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT).min(bytes.len());
        let opcode = if start == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(bytes.slice(start..end), opcode, end == bytes.len());
        // Frames are flushed one by one (each is written at once: no write buffering), so the write
        // buffer never holds more than one.
        sink.send(Message::Frame(frame)).await?;
        start = end;
    }
    Ok(())
}
