//! [`Wire`]: a connection's [`Port`] as the `AsyncRead + AsyncWrite` byte stream tungstenite runs on;
//! what tungstenite writes is taken whole into the port's queue.

use super::Port;
use std::io::{self, Read};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Bytes;

/// A connection's [`Port`] as the byte stream tungstenite reads and writes.
pub(in crate::gateway) struct Wire {
    port: Arc<Port>,
}

impl Wire {
    /// `stream` with an empty queue of at most `capacity` frames.
    pub(in crate::gateway) fn new(stream: TcpStream, capacity: usize) -> Wire {
        Wire {
            port: Port::new(stream, capacity),
        }
    }

    /// The port, shared with the fan-out.
    pub(in crate::gateway) fn port(&self) -> &Arc<Port> {
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
