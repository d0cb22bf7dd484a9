//! Jittered exponential backoff for retries against NATS and the store.
//!
//! Jitter keeps the relay, the projectors and every client of a restarted server from retrying in
//! lockstep.

use std::time::Duration;

use rand::Rng;

/// The first delay (before jitter).
const BASE: Duration = Duration::from_millis(50);

/// The delay before retry number `attempt` (from 0): `50 ms × 2^attempt`, capped at `cap`, then a
/// random value between half of it and all of it.
pub(crate) fn jittered(attempt: usize, cap: Duration) -> Duration {
    let exponent = u32::try_from(attempt.min(16)).unwrap_or(16);
    let ceiling = BASE.saturating_mul(1 << exponent).min(cap);
    let half = ceiling / 2;
    half + half.mul_f64(rand::thread_rng().r#gen::<f64>())
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
