//! The retry delays of the server's loops against NATS and the store (the relay, the projectors, the
//! supervisor, the audit writer, the NATS connection): an [`edict_backoff::Backoff`] from 50 ms,
//! jittered, capped by each caller.

use std::time::Duration;

use edict_backoff::Backoff;

/// The first delay (before jitter).
const FIRST: Duration = Duration::from_millis(50);

/// The delay before retry number `attempt` (from 0): `50 ms × 2^attempt`, capped at `cap`, then a
/// random value between half of it and all of it. The growth stops at `2^16` (about 55 min) whatever
/// the cap.
pub(crate) fn jittered(attempt: usize, cap: Duration) -> Duration {
    Backoff::jittered(FIRST, cap).delay_after(attempt.min(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let cap = Duration::from_secs(2);
        for attempt in 0..100 {
            let delay = jittered(attempt, cap);
            assert!(delay <= cap, "{delay:?}");
        }
        assert!(jittered(0, cap) <= Duration::from_millis(50));
        assert!(jittered(40, cap) >= Duration::from_secs(1));
    }
}
