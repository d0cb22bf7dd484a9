//! [`ProjectionRunner::run_polling`]: the embedded transport. With no NATS, the runner catches up from the
//! store itself whenever a commit is announced, and on a timer in case an announcement was missed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::RunnerError;
use super::runner::ProjectionRunner;

impl ProjectionRunner {
    /// The embedded transport: republishes every rule set, then catches up at once, whenever `notify`
    /// fires (call `notify_one` after each commit, so a commit during a catch-up is not missed) and
    /// every `poll_interval`, until `shutdown` turns true or its sender is dropped.
    ///
    /// A stopped projection is logged once and then waits (it never skips); transient failures are
    /// retried at the next wake-up.
    #[tracing::instrument(skip_all, fields(projection = self.name()))]
    pub async fn run_polling(
        self,
        notify: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        poll_interval: Duration,
    ) {
        if let Err(error) = self.republish_all().await {
            tracing::warn!(%error, "cannot republish rule sets at start");
        }
        let mut reported: Option<RunnerError> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.catch_up().await {
                Ok(_) => reported = None,
                Err(error) => {
                    if reported.as_ref() != Some(&error) {
                        tracing::warn!(%error, "projection is not catching up");
                        reported = Some(error);
                    }
                }
            }
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(poll_interval) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::debug!("projection polling stopped");
    }
}
