//! What Edict measures, through the `metrics` facade (the composition root installs the Prometheus
//! exporter; without one every call here is a no-op). [`names`] lists every metric, [`describe`] gives
//! each its help text and unit, and the emitting code (the command executor here, the relay, the
//! projectors, the gateway, the HTTP layer) uses those names only.
//!
//! Labels carry no user data and no secret: command and aggregate names, projection and role names,
//! route templates (operation ids), status codes, team ids (UUIDs, never team names).
//!
//! [`Edict::sample_gauges`] sets the gauges that are read from the store rather than counted as they
//! happen: each projection's lag and failure, each team's convergence. The composition root calls it
//! on a timer.

use crate::Edict;
use crate::queries::names as projections;
use crate::read_models::DocFilter;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use std::collections::{BTreeMap, BTreeSet};

/// Every metric's name.
pub mod names {
    /// Commands decided, by `aggregate`, `command` and `outcome` (`ok`, `refused`, `conflict`,
    /// `error`).
    pub const COMMANDS: &str = "edict_commands_total";
    /// Time to decide and commit a command, by `aggregate`, `command` and `outcome`.
    pub const COMMAND_DURATION: &str = "edict_command_duration_seconds";
    /// Events appended to the log, by `aggregate`.
    pub const EVENTS_APPENDED: &str = "edict_events_appended_total";
    /// The last position of the global log.
    pub const LOG_HEAD: &str = "edict_log_head_position";
    /// Events committed and not yet published to NATS by the relay (positions).
    pub const RELAY_LAG_POSITIONS: &str = "edict_relay_lag_positions";
    /// Age of the oldest event the relay has not published (0 when it is caught up).
    pub const RELAY_LAG_SECONDS: &str = "edict_relay_lag_seconds";
    /// Events the relay published.
    pub const RELAY_PUBLISHED: &str = "edict_relay_published_total";
    /// Pages the relay failed to publish (it retries them).
    pub const RELAY_PUBLISH_ERRORS: &str = "edict_relay_publish_errors_total";
    /// Events committed after a projection's checkpoint, by `projection`.
    pub const PROJECTION_LAG: &str = "edict_projection_lag_events";
    /// 1 when a projection stopped at an event it cannot apply (rebuild it), by `projection`.
    pub const PROJECTION_FAILED: &str = "edict_projection_failed";
    /// Events applied by this process's projectors, by `projection`.
    pub const PROJECTION_APPLIED: &str = "edict_projection_events_applied_total";
    /// Errors of this process's projectors (each ends a run; the supervisor starts it again), by
    /// `projection`.
    pub const PROJECTION_ERRORS: &str = "edict_projection_errors_total";
    /// 1 while a supervised role of this process runs, 0 while it waits to be started again, by
    /// `role`.
    pub const ROLE_UP: &str = "edict_role_up";
    /// Restarts of a supervised role after it ended or failed, by `role`.
    pub const ROLE_RESTARTS: &str = "edict_role_restarts_total";
    /// Agents connected to this gateway.
    pub const GATEWAY_CONNECTIONS: &str = "edict_gateway_connections";
    /// Rule sets pushed to agents.
    pub const GATEWAY_PUSHES: &str = "edict_gateway_pushes_total";
    /// Time to hand one rule set update to every connection that follows its team.
    pub const GATEWAY_FANOUT: &str = "edict_gateway_fanout_seconds";
    /// Connections closed because they did not take messages fast enough (`too_slow`).
    pub const GATEWAY_TOO_SLOW: &str = "edict_gateway_too_slow_closes_total";
    /// Acknowledgements from agents, by `outcome` (`applied`, `refused`).
    pub const GATEWAY_ACKS: &str = "edict_gateway_acks_total";
    /// Upgrade requests refused, by HTTP `status`.
    pub const GATEWAY_REFUSED: &str = "edict_gateway_upgrades_refused_total";
    /// Agents by the revision of a team's rule set they enforce, by `team` (id) and `state`
    /// (`current`, `behind`, `integrity_failed`: an agent that reported refusing an untrusted rule
    /// set).
    pub const CONVERGENCE_AGENTS: &str = "edict_convergence_agents";
    /// Positions of the log not chained into the audit hash chain yet.
    pub const AUDIT_CHAIN_LAG: &str = "edict_audit_chain_lag_positions";
    /// HTTP requests served, by `route` (the operation, or `unmatched`), `method` and `status`.
    pub const HTTP_REQUESTS: &str = "edict_http_requests_total";
    /// Time to serve an HTTP request, by `route` and `method`.
    pub const HTTP_DURATION: &str = "edict_http_request_duration_seconds";
}

/// Gives every metric of [`names`] its help text and unit (once, after the recorder is installed).
pub fn describe() {
    use names::*;
    describe_counter!(
        COMMANDS,
        "Commands decided, by aggregate, command and outcome."
    );
    describe_histogram!(
        COMMAND_DURATION,
        Unit::Seconds,
        "Time to decide and commit a command."
    );
    describe_counter!(EVENTS_APPENDED, "Events appended to the log, by aggregate.");
    describe_gauge!(LOG_HEAD, "The last position of the global log.");
    describe_gauge!(
        RELAY_LAG_POSITIONS,
        "Log positions committed and not yet published by the relay."
    );
    describe_gauge!(
        RELAY_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest event not yet published by the relay."
    );
    describe_counter!(RELAY_PUBLISHED, "Events the relay published.");
    describe_counter!(
        RELAY_PUBLISH_ERRORS,
        "Pages the relay failed to publish (retried)."
    );
    describe_gauge!(
        PROJECTION_LAG,
        "Events committed after a projection's checkpoint."
    );
    describe_gauge!(
        PROJECTION_FAILED,
        "1 when a projection stopped at an event it cannot apply."
    );
    describe_counter!(
        PROJECTION_APPLIED,
        "Events applied by this process's projectors."
    );
    describe_counter!(PROJECTION_ERRORS, "Errors that ended a projector's run.");
    describe_gauge!(
        ROLE_UP,
        "1 while a supervised role runs, 0 while it waits to restart."
    );
    describe_counter!(ROLE_RESTARTS, "Restarts of a supervised role.");
    describe_gauge!(GATEWAY_CONNECTIONS, "Agents connected to this gateway.");
    describe_counter!(GATEWAY_PUSHES, "Rule sets pushed to agents.");
    describe_histogram!(
        GATEWAY_FANOUT,
        Unit::Seconds,
        "Time to hand one rule set update to every connection of its team."
    );
    describe_counter!(
        GATEWAY_TOO_SLOW,
        "Connections closed for not taking messages fast enough."
    );
    describe_counter!(GATEWAY_ACKS, "Acknowledgements from agents, by outcome.");
    describe_counter!(GATEWAY_REFUSED, "Upgrade requests refused, by status.");
    describe_gauge!(
        CONVERGENCE_AGENTS,
        "Agents by team and state: current, behind, integrity_failed."
    );
    describe_gauge!(
        AUDIT_CHAIN_LAG,
        "Log positions not chained into the audit hash chain yet."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by route, method and status.");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to serve an HTTP request, by route and method."
    );
    // The counters without labels exist from the start (at 0), so that a rate over them is defined
    // before their first event.
    for counter in [
        RELAY_PUBLISHED,
        RELAY_PUBLISH_ERRORS,
        GATEWAY_PUSHES,
        GATEWAY_TOO_SLOW,
    ] {
        metrics::counter!(counter).absolute(0);
    }
}

/// The outcome label of a command's result.
pub(crate) fn outcome<T, E: std::error::Error>(
    result: &Result<T, crate::command::CommandError<E>>,
) -> &'static str {
    use crate::command::CommandError;
    match result {
        Ok(_) => "ok",
        Err(CommandError::Domain(_)) => "refused",
        Err(CommandError::Conflict { .. }) => "conflict",
        Err(CommandError::Store(_)) => "error",
    }
}

/// The most teams [`Edict::sample_gauges`] reads per sample.
const MAX_SAMPLED_TEAMS: usize = 10_000;

impl Edict {
    /// Sets the gauges read from the store: the log's head, each projection's lag and failure, and
    /// each team's convergence (agents at the team's latest revision, behind it, and those that
    /// reported an integrity failure). What cannot be read keeps its last value (and is logged).
    pub async fn sample_gauges(&self) {
        match self.log.last_position().await {
            Ok(head) => gauge!(names::LOG_HEAD).set(head.unwrap_or(0) as f64),
            Err(error) => tracing::debug!(%error, "metrics: cannot read the log's head"),
        }
        for name in self.projections.names() {
            // Exists from the start, so that a rate over it is defined before the first error.
            metrics::counter!(names::PROJECTION_ERRORS, "projection" => name.clone()).increment(0);
            match self.read_models.status(&name).await {
                Ok(status) => {
                    gauge!(names::PROJECTION_LAG, "projection" => name.clone())
                        .set(status.lag as f64);
                    gauge!(names::PROJECTION_FAILED, "projection" => name)
                        .set(if status.error.is_some() { 1.0 } else { 0.0 });
                }
                Err(error) => tracing::debug!(%error, projection = name, "metrics: no status"),
            }
        }
        if let Err(error) = self.sample_convergence().await {
            tracing::debug!(%error, "metrics: cannot read convergence");
        }
    }

    async fn sample_convergence(&self) -> Result<(), crate::read_models::ReadModelError> {
        let failing = self.agents_with_integrity_failures().await?;
        let mut after: Option<String> = None;
        let mut teams = 0;
        loop {
            let page = self
                .read_models
                .list(
                    projections::TEAM_RULESETS,
                    "ruleset",
                    &DocFilter::default(),
                    after.as_deref(),
                    crate::queries::MAX_PAGE,
                )
                .await?;
            for listed in &page.docs {
                let doc = &listed.doc;
                let Some(team) = doc["team_id"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| Some(listed.sort_key.clone()))
                else {
                    continue;
                };
                let (revision, hash) = (doc["revision"].as_u64(), doc["hash"].as_str());
                let mut counts: BTreeMap<&str, u64> =
                    [("current", 0), ("behind", 0), ("integrity_failed", 0)].into();
                for enforced in self.convergence.by_team(&team).await? {
                    let current =
                        Some(enforced.revision) == revision && Some(enforced.hash.as_str()) == hash;
                    *counts
                        .entry(if current { "current" } else { "behind" })
                        .or_default() += 1;
                    if failing.contains(&enforced.agent_id) {
                        *counts.entry("integrity_failed").or_default() += 1;
                    }
                }
                for (state, count) in counts {
                    gauge!(names::CONVERGENCE_AGENTS, "team" => team.clone(), "state" => state)
                        .set(count as f64);
                }
                teams += 1;
            }
            match page.next {
                Some(next) if teams < MAX_SAMPLED_TEAMS => after = Some(next),
                _ => return Ok(()),
            }
        }
    }

    /// The agents (not revoked) that reported refusing an untrusted rule set.
    async fn agents_with_integrity_failures(
        &self,
    ) -> Result<BTreeSet<String>, crate::read_models::ReadModelError> {
        let mut failing = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .read_models
                .list(
                    projections::AGENT_FLEET,
                    "agent",
                    &DocFilter::default(),
                    after.as_deref(),
                    crate::queries::MAX_PAGE,
                )
                .await?;
            for listed in &page.docs {
                let doc = &listed.doc;
                if doc["integrity_failures"].as_u64().unwrap_or(0) > 0
                    && !doc["revoked"].as_bool().unwrap_or(false)
                    && let Some(id) = doc["id"].as_str()
                {
                    failing.insert(id.to_owned());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(failing),
            }
        }
    }
}

/// The metrics page (`GET /metrics` on the API and gateway ports): renders the exposition and
/// decides which clients may read it (loopback only unless configured otherwise).
#[derive(Clone)]
pub struct Exposition {
    render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
    allowed: std::sync::Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition").finish_non_exhaustive()
    }
}

impl Exposition {
    /// The page `render` writes, readable by the clients `allowed` accepts.
    pub fn new(
        render: impl Fn() -> String + Send + Sync + 'static,
        allowed: impl Fn(std::net::IpAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        Exposition {
            render: std::sync::Arc::new(render),
            allowed: std::sync::Arc::new(allowed),
        }
    }

    /// The page, in the Prometheus text format.
    pub fn render(&self) -> String {
        (self.render)()
    }

    /// Whether `client` may read the page.
    pub fn allows(&self, client: std::net::IpAddr) -> bool {
        (self.allowed)(client.to_canonical())
    }
}
