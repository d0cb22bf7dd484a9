//! Supervision of a process's roles: each role (relay, each projector, gateway, audit writer,
//! scheduler, API) runs as a task that is started again whenever it ends or fails before the process
//! is asked to stop (an error, a panic, or a return nobody asked for), after a jittered exponential
//! pause capped at [`SupervisorSettings::max_backoff`] (the shared [`crate::nats::backoff`]). The
//! pause starts over once a run lasted [`SupervisorSettings::healthy_after`].
//!
//! Every state change goes to the process's [`RoleRegistry`], which readiness and
//! `GET /api/v1/admin/projections` read. [`NatsProbe`] is readiness's check of the NATS connection.

use crate::nats::{Nats, backoff};
use async_trait::async_trait;
use edict_application::metrics::names;
use edict_application::supervision::{Probe, RoleRegistry};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How a [`Supervisor`] restarts its roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorSettings {
    /// The longest pause between two starts of a failing role.
    pub max_backoff: Duration,
    /// A run that lasted this long was healthy: the next pause starts from the shortest again.
    pub healthy_after: Duration,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            max_backoff: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// Starts roles and starts them again when they end before the process stops.
#[derive(Debug, Clone)]
pub struct Supervisor {
    registry: RoleRegistry,
    settings: SupervisorSettings,
    stopping: watch::Receiver<bool>,
}

/// Aborts a role's task when the supervisor is dropped (aborted at the end of the shutdown grace).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Supervisor {
    /// Supervises roles into `registry` until `stopping` turns `true`.
    pub fn new(
        registry: RoleRegistry,
        settings: SupervisorSettings,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Supervisor {
            registry,
            settings,
            stopping,
        }
    }

    /// The registry the roles' states go to.
    pub fn registry(&self) -> &RoleRegistry {
        &self.registry
    }

    /// Runs the role `name` on `tasks`: `start` is called for each run with a receiver that turns
    /// `true` when the process stops (the run should then end). A run that ends otherwise (an error,
    /// a panic, or `Ok` while the process is not stopping) is started again after a pause.
    pub fn spawn<F, Fut, E>(&self, tasks: &mut JoinSet<()>, name: impl Into<String>, start: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let name = name.into();
        metrics::counter!(names::ROLE_RESTARTS, "role" => name.clone()).increment(0);
        let supervisor = self.clone();
        self.registry.running(&name);
        tasks.spawn(async move { supervisor.supervise(name, start).await });
    }

    async fn supervise<F, Fut, E>(mut self, name: String, mut start: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let mut attempt = 0usize;
        loop {
            if *self.stopping.borrow() {
                break;
            }
            self.registry.running(&name);
            metrics::gauge!(names::ROLE_UP, "role" => name.clone()).set(1.0);
            let started = tokio::time::Instant::now();
            // Its own task: a panic of the role ends that task only, and is seen here.
            let mut run = AbortOnDrop(tokio::spawn(start(self.stopping.clone())));
            let outcome = (&mut run.0).await;
            if *self.stopping.borrow() {
                break;
            }
            let error = match outcome {
                Ok(Ok(())) => "it ended though the process is not stopping".to_owned(),
                Ok(Err(error)) => error.to_string(),
                Err(join) if join.is_panic() => "it panicked".to_owned(),
                Err(join) => join.to_string(),
            };
            if started.elapsed() >= self.settings.healthy_after {
                attempt = 0;
            }
            let pause = backoff::jittered(attempt, self.settings.max_backoff);
            attempt = attempt.saturating_add(1);
            let retry_at = chrono::Utc::now()
                + chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::zero());
            self.registry.restarting(&name, &error, retry_at);
            metrics::gauge!(names::ROLE_UP, "role" => name.clone()).set(0.0);
            metrics::counter!(names::ROLE_RESTARTS, "role" => name.clone()).increment(1);
            tracing::error!(role = name, %error, retry_in = ?pause, "role ended; starting it again");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = self.stopping.wait_for(|stop| *stop) => break,
            }
        }
        self.registry.stopped(&name);
        metrics::gauge!(names::ROLE_UP, "role" => name).set(0.0);
    }
}

/// Readiness's check of the NATS connection: connected now (the client reconnects by itself; while
/// it does, the process cannot relay, project or watch rule sets).
#[derive(Debug, Clone)]
pub struct NatsProbe(pub Nats);

#[async_trait]
impl Probe for NatsProbe {
    fn name(&self) -> &str {
        "nats"
    }

    async fn check(&self) -> Result<(), String> {
        match self.0.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("not connected to NATS ({state})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn settings() -> SupervisorSettings {
        SupervisorSettings {
            max_backoff: Duration::from_millis(20),
            healthy_after: Duration::from_secs(60),
        }
    }

    async fn until(registry: &RoleRegistry, name: &str, check: impl Fn(&str, u64) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = registry.get(name)
                && check(status.state.as_str(), status.restarts)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: {:?}",
                registry.get(name)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_role_that_fails_or_panics_is_started_again_until_the_process_stops() {
        let (stop, stopping) = watch::channel(false);
        let registry = RoleRegistry::new();
        let supervisor = Supervisor::new(registry.clone(), settings(), stopping);
        let mut tasks = JoinSet::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        supervisor.spawn(&mut tasks, "flaky", move |mut stopping| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => Err("poisoned".to_owned()),
                    1 => panic!("a bug"),
                    2 => Ok(()),
                    _ => {
                        let _ = stopping.wait_for(|stop| *stop).await;
                        Ok(())
                    }
                }
            }
        });
        until(&registry, "flaky", |state, restarts| {
            state == "running" && restarts == 3
        })
        .await;
        let status = registry.get("flaky").unwrap();
        assert_eq!(
            status.last_error.as_deref(),
            Some("it ended though the process is not stopping")
        );
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        stop.send(true).unwrap();
        while tasks.join_next().await.is_some() {}
        assert_eq!(registry.get("flaky").unwrap().state.as_str(), "stopped");
    }
}
