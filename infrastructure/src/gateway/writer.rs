//! The writing half of a connection: one task per connection, fed by a bounded queue, with a side
//! channel for a last message (an error) that goes ahead of anything still queued.

use futures::SinkExt;
use futures::stream::SplitSink;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

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
                    let sent = tokio::select! {
                        biased;
                        sent = tokio::time::timeout(write_timeout, sink.send(message)) => sent,
                        // An error to send while this write is stuck: the frame stays buffered
                        // whole in the sink; the error follows it.
                        final_message = &mut last => {
                            if let Ok(final_message) = final_message {
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
