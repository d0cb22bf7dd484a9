//! What the agent sends after `hello`: `applied` (recorded as convergence), `report` (recorded
//! through the `record_report` use case, then acknowledged) and `refused` (logged).
//!
//! Reports are rate-limited per agent ([`ReportRate`], across all its connections to this gateway).
//! A report past the limit is neither recorded nor acknowledged, and the connection stays open: the
//! protocol says the agent drops a report from its outbox only on its `report_ack`, so the agent
//! keeps it and sends it again on its next connection, when the budget has refilled. (An `error`
//! frame would close the connection, and the agent would reconnect at once and resend its whole
//! outbox: more load, not less.)

use super::connection::{Flow, Session, encoded};
use super::recorder::Applied;
use crate::protocol::{AgentMessage, GatewayMessage, Holding, Report, ReportKind};
use edict_application::RequestContext;
use edict_application::error::AppError;
use edict_application::gateway::{AgentReport, IntegrityReport, ReportKind as AppReportKind};
use edict_application::metrics::names;
use edict_application::principal::Principal;
use edict_domain::AgentId;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How many reports one agent may send per window (`EDICT_RATE_REPORTS_PER_AGENT` per
/// `EDICT_RATE_WINDOW_SECS`; default 120 a minute): a burst of `per_window`, then one more every
/// `window / per_window`. `per_window` 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRate {
    /// Reports per window.
    pub per_window: u32,
    /// The window.
    pub window: Duration,
}

impl Default for ReportRate {
    fn default() -> Self {
        Self {
            per_window: 120,
            window: Duration::from_secs(60),
        }
    }
}

/// The gateway's report limiter, keyed by agent.
pub(crate) struct ReportLimiter {
    limiter: Option<DefaultKeyedRateLimiter<AgentId>>,
    checks: AtomicU32,
}

impl ReportLimiter {
    pub(crate) fn new(rate: ReportRate) -> Self {
        let limiter = NonZeroU32::new(rate.per_window).and_then(|count| {
            let period = (rate.window / count.get()).max(Duration::from_nanos(1));
            Quota::with_period(period).map(|quota| RateLimiter::keyed(quota.allow_burst(count)))
        });
        Self {
            limiter,
            checks: AtomicU32::new(0),
        }
    }

    /// Takes one report of `agent` from its budget; how long until the next one fits when none is
    /// left.
    fn check(&self, agent: AgentId) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // The agents whose budget is full again are forgotten now and then (keys are agents, so
        // the map is bounded by the fleet anyway).
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&agent)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

impl Session {
    pub(super) async fn on_applied(&mut self, holding: Holding) -> Flow {
        if !self.teams.contains(&holding.team) {
            tracing::debug!(
                team = holding.team,
                "applied for a team the agent does not receive; ignored"
            );
            return Flow::Continue;
        }
        metrics::counter!(names::GATEWAY_ACKS, "outcome" => "applied").increment(1);
        // Recorded by the gateway's recorder task, in batches, so that this connection is free for
        // the next push at once (see `recorder`).
        self.shared.recorder.record(Applied {
            agent: self.agent.id,
            team: holding.team,
            revision: holding.revision,
            hash: holding.hash,
            at: chrono::Utc::now(),
        });
        Flow::Continue
    }

    /// The agent did not store a rule set this gateway sent: it holds a newer one. Nothing to record
    /// (the agent's convergence stays at what it applied); logged at warn because it means a carrier
    /// offered a stale revision (a KV entry written out of order, or a stale gateway cache).
    pub(super) fn on_refused(&mut self, refused: &AgentMessage) -> Flow {
        if let AgentMessage::Refused {
            team,
            revision,
            hash,
            held_revision,
            held_hash,
        } = refused
        {
            tracing::warn!(
                agent = %self.agent.id,
                team,
                offered_revision = revision,
                offered_hash = hash,
                held_revision,
                held_hash,
                "the agent refused a rule set older than the one it holds"
            );
        }
        Flow::Continue
    }

    /// The agent refused a rule set it could not trust (ADR 0018): someone between the publisher and
    /// the agent changed or forged it, or the agent's snapshot was edited. Logged at error and recorded
    /// as an event of the agent (the fleet API shows it); a failure to record is logged, not retried
    /// (the agent sends each failure once).
    pub(super) async fn on_integrity_failure(&mut self, failure: &AgentMessage) -> Flow {
        metrics::counter!(names::GATEWAY_ACKS, "outcome" => "refused").increment(1);
        let AgentMessage::IntegrityFailure {
            team,
            revision,
            hash,
            reason,
            detail,
        } = failure
        else {
            return Flow::Continue;
        };
        tracing::error!(
            agent = %self.agent.id,
            team,
            revision,
            hash,
            reason,
            detail,
            "the agent refused an untrusted rule set"
        );
        let principal = Principal::Agent {
            id: self.agent.id,
            user: self.agent.user,
        };
        let request = RequestContext {
            request_id: format!("ws-integrity-{}", uuid::Uuid::new_v4()),
            correlation_id: None,
            expected_version: None,
            traceparent: None,
        };
        let report = IntegrityReport {
            team: team.clone(),
            revision: *revision,
            reason: reason.clone(),
            detail: detail.clone(),
        };
        if let Err(error) = self
            .shared
            .edict
            .record_integrity_failure(&principal, report, &request)
            .await
        {
            tracing::warn!(%error, "cannot record an agent's integrity failure");
        }
        Flow::Continue
    }

    pub(super) async fn on_report(&mut self, report: Report) -> Flow {
        let report_id = report.report_id.clone();
        if let Err(wait) = self.shared.reports.check(self.agent.id) {
            // Not acknowledged: the agent keeps it in its outbox and sends it again on its next
            // connection (see the module's doc).
            tracing::warn!(
                agent = %self.agent.id,
                report_id,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "agent report over the rate limit: not recorded, not acknowledged"
            );
            return Flow::Continue;
        }
        let principal = Principal::Agent {
            id: self.agent.id,
            user: self.agent.user,
        };
        let request = RequestContext {
            request_id: format!("ws-report-{report_id}"),
            correlation_id: None,
            expected_version: None,
            traceparent: None,
        };
        let recorded = self
            .shared
            .edict
            .record_report(&principal, to_app(report), &request)
            .await;
        let change_request = match recorded {
            Ok(recorded) => recorded.change_request.map(|id| id.to_string()),
            Err(
                e @ (AppError::Unavailable(_) | AppError::Internal(_) | AppError::Conflict { .. }),
            ) => {
                // Not recorded: no ack, so the agent keeps it and sends it again after reconnecting.
                return self.unavailable(&e);
            }
            Err(e) => {
                // Refused for good (a malformed field, a team the user left, a rule no longer in
                // temporary mode): acknowledged so the agent stops resending it; the refusal is logged.
                tracing::warn!(report_id, error = %e, "agent report refused");
                None
            }
        };
        let ack = GatewayMessage::ReportAck {
            report_id,
            change_request,
        };
        self.reply(encoded(&ack)).await
    }
}

/// The protocol's report as the use case takes it.
fn to_app(report: Report) -> AgentReport {
    AgentReport {
        report_id: report.report_id,
        kind: match report.kind {
            ReportKind::BlockReverted => AppReportKind::BlockReverted,
            ReportKind::TemporaryChanged => AppReportKind::TemporaryChanged,
            ReportKind::WarningKept => AppReportKind::WarningKept,
            ReportKind::RevertLoop => AppReportKind::RevertLoop,
        },
        team: report.team,
        rule: report.rule,
        file: report.file,
        layer: report.layer,
        original_hash: report.original_hash,
        new_hash: report.new_hash,
        diff: report.diff,
        change_request: report.change_request,
    }
}
