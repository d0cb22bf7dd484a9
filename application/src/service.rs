//! [`Edict`]: the use cases, one `impl` block per aggregate (`rules.rs`, `teams.rs`, …), over the ports
//! handed in by the composition root.
//!
//! Every use case follows one shape: authorize the principal, parse nothing (values arrive parsed),
//! resolve the outside facts the aggregate needs (the time, a quorum, another aggregate's state), run
//! one command, and answer with the new version and global position.

use crate::auth::{Authenticator, IdempotencyKeys};
use crate::clock::Clock;
use crate::command::{Commands, Committed};
use crate::error::AppError;
use crate::event_log::EventLog;
use crate::metadata::{Metadata, Source};
use crate::principal::Principal;
use crate::read_models::{ConvergenceReads, ProjectionControl, ReadModels};
use crate::supervision::{Check, Probe, Readiness, RoleRegistry, RoleState};
use cqrs_es::Aggregate;
use edict_domain::agent::Agent;
use edict_domain::change_request::ChangeRequest;
use edict_domain::rule::{ApprovalQuorum, Rule};
use edict_domain::team::Team;
use edict_domain::user::User;
use std::sync::Arc;
use std::time::Duration;

/// How long readiness waits for each dependency to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Told after every commit that appended events: the in-process bus that wakes the projectors of the
/// embedded deployment (with NATS, the relay carries events instead and this does nothing).
pub trait CommitHook: Send + Sync {
    /// Events were committed.
    fn committed(&self);
}

/// A hook that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl CommitHook for NoHook {
    fn committed(&self) {}
}

/// The adapters Edict runs on.
pub struct Ports {
    /// Rule commands.
    pub rules: Arc<dyn Commands<Rule>>,
    /// Team commands.
    pub teams: Arc<dyn Commands<Team>>,
    /// Change-request commands.
    pub change_requests: Arc<dyn Commands<ChangeRequest>>,
    /// User commands.
    pub users: Arc<dyn Commands<User>>,
    /// Agent commands.
    pub agents: Arc<dyn Commands<Agent>>,
    /// Credentials, sessions, tokens.
    pub auth: Arc<dyn Authenticator>,
    /// Remembered responses for idempotent retries.
    pub idempotency: Arc<dyn IdempotencyKeys>,
    /// The global log.
    pub log: Arc<dyn EventLog>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Approvals per layer.
    pub quorum: ApprovalQuorum,
    /// The read models.
    pub read_models: Arc<dyn ReadModels>,
    /// Rebuilding projections.
    pub projections: Arc<dyn ProjectionControl>,
    /// Told after each commit.
    pub on_commit: Arc<dyn CommitHook>,
    /// Which revision each agent enforces.
    pub convergence: Arc<dyn ConvergenceReads>,
}

/// The use cases of Edict.
pub struct Edict {
    pub(crate) rules: Arc<dyn Commands<Rule>>,
    pub(crate) teams: Arc<dyn Commands<Team>>,
    pub(crate) change_requests: Arc<dyn Commands<ChangeRequest>>,
    pub(crate) users: Arc<dyn Commands<User>>,
    pub(crate) agents: Arc<dyn Commands<Agent>>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) idempotency: Arc<dyn IdempotencyKeys>,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) quorum: ApprovalQuorum,
    pub(crate) read_models: Arc<dyn ReadModels>,
    pub(crate) projections: Arc<dyn ProjectionControl>,
    pub(crate) on_commit: Arc<dyn CommitHook>,
    pub(crate) convergence: Arc<dyn ConvergenceReads>,
    /// The hash chain and its checkpoints (attached with [`Edict::with_audit_trail`]).
    pub(crate) audit: Option<Arc<dyn crate::audit::AuditTrail>>,
    /// The organization's signing keys (attached with [`Edict::with_org_keys`]).
    pub(crate) org_keys: Option<Arc<dyn crate::signing::OrgKeys>>,
    /// The states of this process's roles (attached with [`Edict::with_supervision`]).
    pub(crate) roles: RoleRegistry,
    /// The dependencies readiness checks besides the store.
    pub(crate) probes: Vec<Arc<dyn Probe>>,
    /// Bounds on the work a request may cause (attached with [`Edict::with_limits`]).
    pub(crate) limits: crate::queries::WorkLimits,
    /// How long a new or restored org_admin does not count towards a quorum (attached with
    /// [`Edict::with_probation`]).
    pub(crate) probation: crate::probation::Probation,
}

impl std::fmt::Debug for Edict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edict").finish_non_exhaustive()
    }
}

/// What the HTTP layer knows about the request a use case serves.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The request id (also the correlation id unless the client sent one).
    pub request_id: String,
    /// A correlation id the client sent (`X-Correlation-Id`).
    pub correlation_id: Option<String>,
    /// The version the client expects the aggregate at (`If-Match`).
    pub expected_version: Option<u64>,
    /// The W3C trace context of the request's span, when traces are exported (copied into the
    /// events' metadata so the trace follows them through the relay and projectors).
    pub traceparent: Option<String>,
}

impl RequestContext {
    /// The same request, for a command that runs whatever the aggregate's version.
    pub(crate) fn unversioned(&self) -> Self {
        Self {
            expected_version: None,
            ..self.clone()
        }
    }
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The aggregate the command addressed.
    pub id: String,
    /// Its version after the command.
    pub version: u64,
    /// The global position of its last event (`None` when the command changed nothing).
    pub position: Option<i64>,
}

impl Edict {
    /// Edict over `ports`.
    pub fn new(ports: Ports) -> Self {
        Edict {
            rules: ports.rules,
            teams: ports.teams,
            change_requests: ports.change_requests,
            users: ports.users,
            agents: ports.agents,
            auth: ports.auth,
            idempotency: ports.idempotency,
            log: ports.log,
            clock: ports.clock,
            quorum: ports.quorum,
            read_models: ports.read_models,
            projections: ports.projections,
            on_commit: ports.on_commit,
            convergence: ports.convergence,
            audit: None,
            org_keys: None,
            roles: RoleRegistry::new(),
            probes: Vec::new(),
            limits: crate::queries::WorkLimits::default(),
            probation: crate::probation::Probation::default(),
        }
    }

    /// Sets the bounds on the work a request may cause (agents per user, time-travel budget).
    #[must_use]
    pub fn with_limits(mut self, limits: crate::queries::WorkLimits) -> Edict {
        self.limits = limits;
        self
    }

    /// Attaches this process's role registry (written by its supervisor) and the probes of its
    /// dependencies besides the store; readiness checks both.
    #[must_use]
    pub fn with_supervision(mut self, roles: RoleRegistry, probes: Vec<Arc<dyn Probe>>) -> Edict {
        self.roles = roles;
        self.probes = probes;
        self
    }

    /// The states of this process's roles.
    pub fn roles(&self) -> &RoleRegistry {
        &self.roles
    }

    /// The idempotency port (used by the HTTP layer's `Idempotency-Key` handling).
    pub fn idempotency(&self) -> &dyn IdempotencyKeys {
        self.idempotency.as_ref()
    }

    /// Whether this process can do its work (readiness): the store answers a real query, each probe
    /// (NATS when configured) passes, and every role of the process runs (a projector whose projection
    /// is stopped does not count as running). Each dependency gets
    /// [`PROBE_TIMEOUT`] to answer (a store that does not answer within it is not ready).
    pub async fn readiness(&self) -> Readiness {
        let mut checks = Vec::with_capacity(1 + self.probes.len());
        let store = match tokio::time::timeout(PROBE_TIMEOUT, self.log.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        };
        checks.push(Check {
            name: "store".to_owned(),
            failure: store,
        });
        for probe in &self.probes {
            let failure = match tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
            };
            checks.push(Check {
                name: probe.name().to_owned(),
                failure,
            });
        }
        for role in self.roles.all() {
            let failure = match &role.state {
                RoleState::Running => self.stopped_projection(&role.name).await,
                RoleState::Restarting { retry_at } => Some(format!(
                    "restarting (next start at {}): {}",
                    retry_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    role.last_error.as_deref().unwrap_or("it ended")
                )),
                RoleState::Stopped => Some("stopped".to_owned()),
            };
            checks.push(Check {
                name: format!("role:{}", role.name),
                failure,
            });
        }
        Readiness { checks }
    }

    /// Why the projection a running `projector:<name>` role serves is stopped, if it is: a projector
    /// that runs again after a restart meets the stop at its next event, so the stop itself (kept with
    /// the projection until a rebuild) is what makes the process not ready, not the moment's state.
    async fn stopped_projection(&self, role: &str) -> Option<String> {
        let projection = role.strip_prefix("projector:")?;
        match tokio::time::timeout(PROBE_TIMEOUT, self.read_models.status(projection)).await {
            Ok(Ok(status)) => status.error.map(|error| {
                format!(
                    "projection stopped after position {}: {error} (rebuild it)",
                    status.checkpoint.position
                )
            }),
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        }
    }

    /// Whether this process is ready ([`Edict::readiness`]).
    ///
    /// # Errors
    /// [`AppError::Unavailable`] naming every check that failed.
    pub async fn ready(&self) -> Result<(), AppError> {
        let readiness = self.readiness().await;
        if readiness.is_ready() {
            return Ok(());
        }
        let failed: Vec<String> = readiness
            .failed()
            .map(|check| format!("{}: {}", check.name, check.failure.as_deref().unwrap_or("")))
            .collect();
        Err(AppError::Unavailable(failed.join("; ")))
    }

    /// The metadata of a command from `principal` in `request`.
    pub(crate) fn metadata(principal: &Principal, request: &RequestContext) -> Metadata {
        Metadata {
            actor: principal.actor(),
            request_id: request.request_id.clone(),
            correlation_id: request
                .correlation_id
                .clone()
                .unwrap_or_else(|| request.request_id.clone()),
            source: match principal {
                Principal::User { .. } => Source::Api,
                Principal::Agent { .. } => Source::Agent,
            },
            traceparent: request.traceparent.clone(),
        }
    }

    /// [`Self::run`] with `principal`'s metadata in `request` and its `If-Match` version (none for
    /// [`RequestContext::unversioned`]).
    pub(crate) async fn run_as<A>(
        &self,
        principal: &Principal,
        request: &RequestContext,
        commands: &dyn Commands<A>,
        id: impl ToString,
        command: A::Command,
    ) -> Result<Outcome, AppError>
    where
        A: Aggregate,
        A::Error: crate::error::DomainFailure,
    {
        let metadata = Self::metadata(principal, request);
        let expected = request.expected_version;
        self.run(commands, id.to_string(), command, expected, &metadata)
            .await
    }

    /// Runs `command` on aggregate `id` and answers with its version and position.
    pub(crate) async fn run<A>(
        &self,
        commands: &dyn Commands<A>,
        id: String,
        command: A::Command,
        expected_version: Option<u64>,
        metadata: &Metadata,
    ) -> Result<Outcome, AppError>
    where
        A: Aggregate,
        A::Error: crate::error::DomainFailure,
    {
        let Committed { version, events } = commands
            .execute(&id, command, expected_version, metadata)
            .await?;
        let position = if events == 0 {
            None
        } else {
            self.on_commit.committed();
            self.position_of(A::TYPE, &id, version).await
        };
        Ok(Outcome {
            id,
            version,
            position,
        })
    }

    /// The global position of an aggregate's event at `version`. The command committed already, so a
    /// failed lookup is logged and answered as unknown, never as a failed command (a retry would repeat
    /// a write that happened).
    pub(crate) async fn position_of(
        &self,
        aggregate_type: &str,
        id: &str,
        version: u64,
    ) -> Option<i64> {
        let sequence = i64::try_from(version).ok()?;
        match self.log.position_of(aggregate_type, id, sequence).await {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(aggregate_type, id, version, %error, "cannot look up the position of a committed event");
                None
            }
        }
    }

    /// Loads an aggregate that must exist (`exists` says whether it does).
    pub(crate) async fn existing<A>(
        commands: &dyn Commands<A>,
        id: impl ToString,
        what: &str,
        exists: impl Fn(&A) -> bool,
    ) -> Result<A, AppError>
    where
        A: Aggregate,
        A::Error: crate::error::DomainFailure,
    {
        let aggregate = commands.load(&id.to_string()).await?;
        if exists(&aggregate) {
            Ok(aggregate)
        } else {
            Err(AppError::NotFound(what.to_owned()))
        }
    }
}
