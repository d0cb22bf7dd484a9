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
//!
//! Layout: this module holds the [`Port`] and its queue; `encoding` the frames encoded once; `stream`
//! the [`Wire`] tungstenite runs on.

mod encoding;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Bytes;

pub(super) use encoding::ping;
pub(crate) use encoding::{frame, payload_of};
pub(super) use stream::Wire;

/// Queued frames written by one `writev`, at most.
const SLICES: usize = 16;

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
