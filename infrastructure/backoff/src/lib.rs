//! Retry delays: exponential backoff, capped, optionally jittered. The one copy every retry loop of
//! Edict uses (the server's relay, projectors, supervisor, audit writer, NATS connection and owed rule-set
//! publisher; the agent's
//! gateway client and token renewer), each with its own first delay and cap.
//!
//! A [`Backoff`] is a policy, not a counter: the caller counts its failures in a row (resetting the
//! count on success) and asks for the delay of that attempt. Jitter keeps the many clients of a
//! restarted server from retrying in lockstep.
//!
//! A leaf crate (it depends on `rand` only) so the server crates and the agent reach it alike.

use std::time::Duration;

use rand::Rng;

/// Delays that double from a first delay up to a cap, drawn from `[delay / 2, delay]` when jittered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    jitter: bool,
}

impl Backoff {
    /// Delays `first × 2^attempt`, at most `cap`, exactly.
    #[must_use]
    pub const fn exact(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            jitter: false,
        }
    }

    /// Delays `first × 2^attempt`, at most `cap`, each then drawn uniformly from `[delay / 2, delay]`.
    #[must_use]
    pub const fn jittered(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            jitter: true,
        }
    }

    /// The delay before retry number `attempt` (0 after the first failure), before jitter.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^31 × any first delay worth waiting for is past any cap; saturating keeps it so.
        let factor = 1_u32 << attempt.min(31);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `attempt` (0 after the first failure).
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter {
            return ceiling;
        }
        let half = ceiling / 2;
        let spread = ceiling - half;
        half + spread.mul_f64(rand::thread_rng().r#gen::<f64>())
    }

    /// [`delay`](Self::delay) for a failure count kept as a `usize`.
    #[must_use]
    pub fn delay_after(&self, failures: usize) -> Duration {
        self.delay(u32::try_from(failures).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exact_delays_double_from_the_first_up_to_the_cap() {
        let backoff = Backoff::exact(Duration::from_secs(30), Duration::from_secs(300));
        let delays: Vec<_> = (0..6)
            .map(|attempt| backoff.delay(attempt).as_secs())
            .collect();
        assert_eq!(delays, [30, 60, 120, 240, 300, 300]);
    }

    #[test]
    fn jittered_delays_stay_between_half_and_all_of_the_ceiling() {
        let backoff = Backoff::jittered(100 * MS, Duration::from_secs(30));
        for attempt in 0..40 {
            let ceiling = backoff.ceiling(attempt);
            for _ in 0..50 {
                let delay = backoff.delay(attempt);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{attempt}: {delay:?}"
                );
            }
        }
        assert_eq!(backoff.ceiling(0), 100 * MS);
        assert_eq!(backoff.ceiling(3), 800 * MS);
        assert_eq!(backoff.ceiling(40), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let backoff = Backoff::jittered(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff.delay(0)).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn huge_attempts_and_durations_saturate_at_the_cap() {
        let backoff = Backoff::exact(Duration::MAX / 2, Duration::from_secs(5));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(5));
        assert_eq!(backoff.delay_after(usize::MAX), Duration::from_secs(5));
        let uncapped = Backoff::exact(Duration::from_secs(1), Duration::MAX);
        assert_eq!(uncapped.delay(u32::MAX), Duration::from_secs(1 << 31));
    }

    #[test]
    fn a_zero_cap_means_no_delay() {
        let backoff = Backoff::jittered(50 * MS, Duration::ZERO);
        assert_eq!(backoff.delay(3), Duration::ZERO);
    }
}
