//! Frames encoded once: a server's unmasked WebSocket frames, header included, and the payload found
//! back in one.

use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

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
pub(in crate::gateway) fn ping() -> Bytes {
    encode(Frame::ping(Bytes::new()))
}

fn encode(frame: Frame) -> Bytes {
    let mut encoded = Vec::with_capacity(frame.len());
    // Invariant: formatting into a `Vec` cannot fail (the only error is the writer's).
    let _ = frame.format(&mut encoded);
    Bytes::from(encoded)
}
