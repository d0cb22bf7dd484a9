//! `edict-test-kit`: what Edict's tests and benchmarks share, and nothing the product links (a
//! dev-dependency of the crates whose tests use it; `edict-bench` uses it too).
//!
//! - [`postgres`]: the test PostgreSQL server (`EDICT_TEST_DATABASE_URL`, one place) and one fresh,
//!   migrated database per test or benchmark run;
//! - [`nats`]: the test NATS server (`EDICT_TEST_NATS_URL`, one place) and a fresh prefix per test;
//! - [`store`]: a scratch event store on either backend, and [`on_both_backends!`] (one test per case and
//!   backend);
//! - [`eventually`]: waiting on a condition is a bounded poll, never a bare sleep; [`run_isolated`]: a
//!   case on a task of its own, cleaned up after even when it panics;
//! - [`seed`]: bulk event seeding straight into the events table (rebuild and audit benchmarks, and the
//!   tests that need a long history fast);
//! - [`tally`]: a small aggregate appended through the real write path (store, relay and projector tests).

use std::future::Future;
use std::time::Duration;

pub mod nats;
pub mod postgres;
pub mod seed;
pub mod store;
pub mod tally;

pub use postgres::{
    DEFAULT_TEST_DATABASE_URL, create_isolated_postgres, drop_isolated_postgres, test_database_url,
};

/// Polls `probe` every 20 ms until it returns `Some`, for at most `timeout`. Returns that value, or
/// `None` when the time is up (the probe runs at least once).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `case` on a task of its own (so that its panic is caught), then `cleanup`, then lets the case's
/// panic go on: what a test made is removed even when it fails.
///
/// # Panics
/// When `case` panicked (with its panic), or its task failed otherwise.
pub async fn run_isolated<Case, Cleanup>(case: Case, cleanup: Cleanup)
where
    Case: Future<Output = ()> + Send + 'static,
    Cleanup: Future<Output = ()>,
{
    let outcome = tokio::spawn(case).await;
    cleanup.await;
    resume_panic(outcome);
}

/// Lets the panic of a test's task go on in the test (nothing when the task ended well).
///
/// # Panics
/// With the task's panic, or when the task failed otherwise (cancelled).
pub fn resume_panic(outcome: Result<(), tokio::task::JoinError>) {
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("test task failed: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_some_or_gives_up() {
        let mut calls = 0;
        let found = eventually(Duration::from_secs(1), || {
            calls += 1;
            let value = (calls >= 3).then_some(calls);
            async move { value }
        })
        .await;
        assert_eq!(found, Some(3));
        let never: Option<()> = eventually(Duration::from_millis(50), || async { None }).await;
        assert_eq!(never, None);
    }
}
