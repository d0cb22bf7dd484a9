//! The composition root: connects the store (and NATS when configured), runs migrations, builds the
//! adapters and hands them to the use cases. `serve`, `projections` and the benches all start Edict
//! through [`build`].

use anyhow::{Context, Result};
use async_trait::async_trait;
use cqrs_es::persist::PersistedEventStore;
use edict_application::clock::SystemClock;
use edict_application::command::CommandService;
use edict_application::event_log::LogBound;
use edict_application::read_models::{
    PastDocument, ProjectionControl, ReadModelError, RebuildSummary,
};
use edict_application::service::Ports;
use edict_application::supervision::{Probe, RoleRegistry};
use edict_application::{CommitHook, Edict, NoHook};
use edict_domain::rule::ApprovalQuorum;
use edict_infrastructure::auth::{AgentTokenLifetime, AuthStore, LocalAuthenticator, TokenKeys};
use edict_infrastructure::idempotency::IdempotencyStore;
use edict_infrastructure::nats::{KvRulesetPublisher, Nats};
use edict_infrastructure::projection::{
    DecisionSigner, ProjectionRunner, SigningPublisher, SqlReadModels, WatchPublisher,
};
use edict_infrastructure::settings::Settings;
use edict_infrastructure::signing::KeyRing;
use edict_infrastructure::store::{Database, EventRepository};
use edict_infrastructure::supervisor::NatsProbe;
use edict_projections::RulesetPublisher;
use std::sync::Arc;
use tokio::sync::Notify;

/// A started Edict: the use cases, the store they run on, and what the projector role needs.
pub struct Built {
    /// The use cases.
    pub edict: Arc<Edict>,
    /// The store (`postgres` or `sqlite`).
    pub store_kind: &'static str,
    /// The store itself.
    pub database: Database,
    /// The projections.
    pub projections: Arc<Projections>,
    /// One wake-up per projection, fired after each commit of this process (the in-process bus).
    pub notifies: Vec<Arc<Notify>>,
    /// The in-process rule set channel (embedded mode), for gateways in this process.
    pub watch: Option<WatchPublisher>,
    /// The states of this process's roles (written by `serve`'s supervisor, read by readiness and
    /// the projections' admin view).
    pub roles: RoleRegistry,
    /// The organization's key ring with the private keys this process holds (`None` in a process
    /// that holds none: a gateway-only one). `serve` runs its keeper (`signing::keep`).
    pub key_ring: Option<Arc<KeyRing>>,
}

/// The cqrs-es store of one aggregate type, in event-store mode (its snapshot and aggregate stores apply
/// events twice in cqrs-es 0.5.0).
fn event_store<A: cqrs_es::Aggregate>(
    database: &Database,
) -> PersistedEventStore<EventRepository, A> {
    PersistedEventStore::new_event_store(database.event_repository())
}

/// Every projection over one store, with the publisher their rule sets go to.
pub struct Projections {
    database: Database,
    publisher: Arc<dyn RulesetPublisher>,
    /// Signs decisions as the change inbox commits them (a process that holds the keys).
    decisions: Option<Arc<dyn DecisionSigner>>,
}

impl Projections {
    /// A runner of each projection.
    pub fn runners(&self) -> Vec<ProjectionRunner> {
        edict_projections::all()
            .into_iter()
            .map(|projection| self.runner_of(projection))
            .collect()
    }

    /// The runner of the projection `name`.
    pub fn runner(&self, name: &str) -> Option<ProjectionRunner> {
        edict_projections::by_name(name).map(|projection| self.runner_of(projection))
    }

    fn runner_of(&self, projection: Arc<dyn edict_projections::Projection>) -> ProjectionRunner {
        let runner = ProjectionRunner::new(
            self.database.clone(),
            projection,
            Some(self.publisher.clone()),
        );
        match &self.decisions {
            Some(signer) => runner.with_decision_signer(signer.clone()),
            None => runner,
        }
    }
}

#[async_trait]
impl ProjectionControl for Projections {
    fn names(&self) -> Vec<String> {
        edict_projections::all()
            .iter()
            .map(|p| p.name().to_owned())
            .collect()
    }

    async fn rebuild(&self, name: &str) -> Result<RebuildSummary, ReadModelError> {
        let runner = self
            .runner(name)
            .ok_or_else(|| ReadModelError::UnknownProjection(name.to_owned()))?;
        let report = runner
            .rebuild(&|_| {})
            .await
            .map_err(|e| ReadModelError::Unavailable(e.to_string()))?;
        Ok(summary(name, report))
    }

    async fn document_as_of(
        &self,
        name: &str,
        kind: &str,
        key: &str,
        bound: LogBound,
    ) -> Result<PastDocument, ReadModelError> {
        let projection = edict_projections::by_name(name)
            .ok_or_else(|| ReadModelError::UnknownProjection(name.to_owned()))?;
        let past = edict_projections::as_of::document_as_of(
            &self.database,
            projection.as_ref(),
            kind,
            key,
            bound,
        )
        .await
        .map_err(|e| ReadModelError::Unavailable(e.to_string()))?;
        Ok(PastDocument {
            doc: past.doc,
            through: past.through,
            events: past.events,
        })
    }

    async fn content_hash(&self, name: &str) -> Result<String, ReadModelError> {
        let runner = self
            .runner(name)
            .ok_or_else(|| ReadModelError::UnknownProjection(name.to_owned()))?;
        runner
            .content_hash(None)
            .await
            .map_err(|e| ReadModelError::Unavailable(e.to_string()))
    }
}

/// Wakes every projection of this process after a commit (`notify_one` keeps a permit, so a commit
/// during a catch-up is never missed).
struct WakeProjections(Vec<Arc<Notify>>);

impl CommitHook for WakeProjections {
    fn committed(&self) {
        for notify in &self.0 {
            notify.notify_one();
        }
    }
}

/// Connects, migrates and wires Edict for `settings`; with `nats`, rule sets go to its KV bucket and
/// commits need no in-process wake-up (the relay carries them). Creates the first admin when configured
/// and no user exists yet.
///
/// # Errors
/// When the store cannot be reached or migrated, or the first admin cannot be created.
pub async fn build(settings: &Settings, nats: Option<&Nats>) -> Result<Built> {
    // The embedded store holds secrets: its directory and files are private (issue 16).
    edict_infrastructure::store::private::secure_data_dir(
        &settings.data_dir,
        &settings.database_url,
    )
    .with_context(|| format!("cannot secure {}", settings.data_dir.display()))?;
    let database = crate::open_database(&settings.database_url).await?;
    let auth_store = AuthStore::new(database.clone());
    let secret = match &settings.jwt_secret {
        Some(secret) => secret.expose().clone().into_bytes(),
        None => auth_store
            .signing_secret()
            .await
            .context("cannot read the token-signing secret")?,
    };
    let authenticator = LocalAuthenticator::new(
        auth_store,
        TokenKeys::from_secret(&secret),
        settings.access_ttl_secs,
        settings.refresh_ttl_secs,
    )
    .with_agent_tokens(AgentTokenLifetime {
        ttl_secs: i64::try_from(settings.agent_token_ttl_secs).unwrap_or(i64::MAX / 4),
        grace_secs: i64::try_from(settings.agent_token_grace_secs).unwrap_or(i64::MAX / 4),
    });
    let quorum = ApprovalQuorum::parse(
        settings.quorum.organization,
        settings.quorum.team,
        settings.quorum.project,
    )
    .context("invalid approval quorum")?;
    let (unsigned, watch): (Arc<dyn RulesetPublisher>, Option<WatchPublisher>) = match nats {
        Some(nats) => (
            Arc::new(
                KvRulesetPublisher::open(nats)
                    .await
                    .context("cannot open the rulesets KV bucket")?,
            ),
            None,
        ),
        None => {
            let watch = WatchPublisher::new();
            (Arc::new(watch.clone()), Some(watch))
        }
    };
    // Rule sets are signed where they are published (ADR 0018), with the active key of the
    // organization's key ring (ADR 0021); a gateway-only process never loads a private key (it never
    // publishes, and answers no login): it reads the public key sets only.
    let (publisher, key_ring): (Arc<dyn RulesetPublisher>, Option<Arc<KeyRing>>) = if settings
        .holds_ruleset_key
    {
        let (ring, origin) = KeyRing::holding(
            database.clone(),
            settings.ruleset_signing_key.as_ref(),
            settings.ruleset_signing_key_next.as_ref(),
        )
        .await
        .context("cannot load the rule set signing key")?;
        let ring = Arc::new(ring);
        let key_id = ring.active_key_id().unwrap_or_default();
        match origin {
            edict_infrastructure::audit::KeyOrigin::Configured => {
                tracing::info!(key_id, "rule sets signed with EDICT_RULESET_SIGNING_KEY")
            }
            edict_infrastructure::audit::KeyOrigin::Stored => tracing::warn!(
                key_id,
                "EDICT_RULESET_SIGNING_KEY is not set: rule sets are signed with a key kept in the \
                 database, which anyone who can read the database can use too; set it so that only \
                 the processes that publish rule sets hold it"
            ),
        }
        (
            Arc::new(SigningPublisher::new(unsigned, ring.clone())),
            Some(ring),
        )
    } else {
        (unsigned, None)
    };
    let org_keys: Arc<dyn edict_application::signing::OrgKeys> = match &key_ring {
        Some(ring) => ring.clone(),
        None => Arc::new(KeyRing::public(database.clone())),
    };
    let read_models = database
        .for_read_models(&settings.database_url)
        .await
        .context("cannot open the read-model store")?;
    let projections = Arc::new(Projections {
        database: read_models,
        publisher,
        decisions: key_ring.clone().map(|ring| ring as Arc<dyn DecisionSigner>),
    });
    for runner in projections.runners() {
        runner
            .ensure()
            .await
            .with_context(|| format!("cannot prepare the {} projection", runner.name()))?;
    }
    let notifies: Vec<Arc<Notify>> = edict_projections::all()
        .iter()
        .map(|_| Arc::new(Notify::new()))
        .collect();
    let on_commit: Arc<dyn CommitHook> = if nats.is_some() {
        Arc::new(NoHook)
    } else {
        Arc::new(WakeProjections(notifies.clone()))
    };
    let ports = Ports {
        rules: Arc::new(CommandService::new(event_store(&database), ())),
        teams: Arc::new(CommandService::new(event_store(&database), ())),
        change_requests: Arc::new(CommandService::new(event_store(&database), ())),
        users: Arc::new(CommandService::new(event_store(&database), ())),
        agents: Arc::new(CommandService::new(event_store(&database), ())),
        auth: Arc::new(authenticator),
        idempotency: Arc::new(IdempotencyStore::new(database.clone())),
        log: Arc::new(database.clone()),
        clock: Arc::new(SystemClock),
        quorum,
        read_models: Arc::new(SqlReadModels::new(database.clone())),
        projections: projections.clone(),
        on_commit,
        convergence: Arc::new(edict_infrastructure::store::ConvergenceStore::new(
            database.clone(),
        )),
    };
    let roles = RoleRegistry::new();
    let probes: Vec<Arc<dyn Probe>> = match nats {
        Some(nats) => vec![Arc::new(NatsProbe(nats.clone()))],
        None => Vec::new(),
    };
    let edict = Arc::new(
        Edict::new(ports)
            .with_audit_trail(Arc::new(edict_infrastructure::audit::AuditStore::new(
                database.clone(),
            )))
            .with_supervision(roles.clone(), probes)
            .with_limits(edict_application::queries::WorkLimits {
                max_agents_per_user: settings.limits.max_agents_per_user,
                as_of_budget: std::time::Duration::from_millis(settings.limits.as_of_budget_ms),
            })
            .with_org_keys(org_keys)
            .with_probation(edict_application::probation::Probation::from_secs(
                settings.quorum.probation_secs,
            )),
    );
    if let Some(admin) = &settings.admin {
        let created = edict
            .bootstrap_admin(&admin.email, admin.password.expose())
            .await
            .context("cannot create the first org_admin")?;
        if created {
            tracing::info!(email = %admin.email, "created the first org_admin");
        }
    } else if !edict.has_users().await.context("cannot read users")? {
        tracing::warn!(
            "no user exists yet: set EDICT_ADMIN_EMAIL and EDICT_ADMIN_PASSWORD to create the first org_admin"
        );
    }
    Ok(Built {
        edict,
        store_kind: database.kind(),
        database,
        projections,
        notifies,
        watch,
        roles,
        key_ring,
    })
}

/// What the rebuild of projection `name` did, as its `report` says.
pub(crate) fn summary(
    name: &str,
    report: edict_infrastructure::projection::RebuildReport,
) -> RebuildSummary {
    RebuildSummary {
        name: name.to_owned(),
        generation: report.generation,
        events: report.events,
        docs: report.docs,
        seconds: report.elapsed.as_secs_f64(),
        events_per_sec: report.events_per_sec,
        content_hash: report.content_hash,
    }
}
