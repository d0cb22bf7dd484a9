//! Delivery first: while a fan-out runs (`fanout`), the connections read nothing. The fan-out closes
//! the [`Gate`] for as long as it offers a revision to the ports of a team; a connection's task asks
//! [`Gate::admit`] before it reads its socket and, when closed, is woken once the last fan-out ends.
//! The `applied` that come back meanwhile wait in their sockets and are read once the last port was
//! offered the revision: reading them during the fan-out would take CPU from the writes, so the last
//! agent would get its rule set later (ADR 0013; measurements in `docs/benchmarks.md`).
//!
//! The gate is a count, so overlapping fan-outs keep it closed until the last one ends, and it opens
//! when the fan-out's guard is dropped, also when the fan-out panics: the reads never stay held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::Waker;

/// Closed while a fan-out runs: the connections' reads wait for it to open.
#[derive(Debug, Default)]
pub(super) struct Gate {
    closed: AtomicUsize,
    waiting: Mutex<Vec<Waker>>,
}

impl Gate {
    /// Closes the gate until the answer is dropped (also when the fan-out panics: the connections'
    /// reads never stay held).
    pub(super) fn close(&self) -> Closed<'_> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Closed(self)
    }

    fn open(&self) {
        if self.closed.fetch_sub(1, Ordering::SeqCst) == 1 {
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
            for waker in waiting {
                waker.wake();
            }
        }
    }

    /// Whether a connection may read now; when not, `waker` is woken once the gate opens.
    pub(super) fn admit(&self, waker: &Waker) -> bool {
        if self.closed.load(Ordering::Acquire) == 0 {
            return true;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Opened meanwhile: `open` takes the list under this lock after clearing the count.
        if self.closed.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if !waiting.last().is_some_and(|last| last.will_wake(waker)) {
            waiting.push(waker.clone());
        }
        false
    }
}

/// The gate closed by one fan-out, opened when dropped.
pub(super) struct Closed<'a>(&'a Gate);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_closed_gate_holds_readers_until_the_last_fan_out_ends() {
        let gate = Gate::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(gate.admit(&waker), "open: reads go on");
        let first = gate.close();
        let second = gate.close();
        assert!(!gate.admit(&waker));
        // The same task twice in a row is remembered once.
        assert!(!gate.admit(&waker));
        drop(first);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "one fan-out still runs");
        assert!(!gate.admit(&waker));
        drop(second);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(gate.admit(&waker));
    }
}
