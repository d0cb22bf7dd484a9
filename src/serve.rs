//! `edict serve`: runs the roles of Edict in this process — the HTTP API, the relay to NATS, the
//! projectors (and their timeout scheduler), the agents' WebSocket gateway, the audit chain writer — on
//! the embedded default or on PostgreSQL (+ NATS), with graceful shutdown.

use crate::app;

mod args;
use anyhow::{Context, Result, bail};
pub use args::{Role, ServeArgs};
use edict_api::gateway::{Gateway, GatewaySettings, ReportRate};
use edict_api::server::rate_limit::{RateLimitSettings, RateLimits};
use edict_application::delivery::{ConvergenceRecords, RulesetFeed};
use edict_infrastructure::audit::{self, ChainWriter, ChainWriterSettings};
use edict_infrastructure::metrics::{self, MetricsAccess};
use edict_infrastructure::nats::{
    self, NatsAuth, NatsFeed, NatsRelay, NatsSettings, NatsTls, RelaySettings,
};
use edict_infrastructure::projection::WatchFeed;
use edict_infrastructure::settings::{Limits, Settings};
use edict_infrastructure::store::ConvergenceStore;
use edict_infrastructure::supervisor::{Supervisor, SupervisorSettings};
use poem::Server;
use poem::listener::{AcceptorExt, Listener, TcpListener};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Runs the roles until SIGTERM or Ctrl-C, then lets in-flight work finish.
pub async fn run(args: ServeArgs) -> Result<()> {
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let mut settings = args.settings()?;
    let roles = args.roles();
    // Rate limits (EDICT_RATE_*, EDICT_TRUSTED_PROXIES): the API's and the gateway's.
    let rate_settings = RateLimitSettings::from_vars(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)?;
    let report_rate = ReportRate {
        per_window: rate_settings.reports_per_agent,
        window: rate_settings.window,
    };
    settings.holds_ruleset_key = roles
        .iter()
        .any(|role| matches!(role, Role::Api | Role::Projector));
    let nats = match &args.nats_url {
        Some(url) => {
            // Credentials and TLS from the environment only (EDICT_NATS_USER/_PASSWORD, _TOKEN, _NKEY,
            // _CREDS, _CA, _TLS_CERT/_KEY, _TLS): secrets must not show in `ps`.
            let nats_settings = NatsSettings::new(url.clone(), &args.nats_prefix)
                .and_then(|settings| {
                    settings.with_security(NatsAuth::from_env()?, NatsTls::from_env()?)
                })
                .context("invalid NATS settings")?;
            let nats = nats::connect(nats_settings)
                .await
                .context("cannot connect to NATS")?;
            nats.ensure_streams()
                .await
                .context("cannot create the NATS streams")?;
            Some(nats)
        }
        None => None,
    };
    let metrics_access = MetricsAccess::parse(&args.metrics_allow).map_err(anyhow::Error::msg)?;
    let metrics_handle = metrics::install().map_err(anyhow::Error::msg)?;
    let built = app::build(&settings, nats.as_ref()).await?;
    if roles.contains(&Role::Gateway) && nats.is_none() && !roles.contains(&Role::Projector) {
        bail!(
            "without NATS the gateway role runs beside the projector role (rule sets travel in-process)"
        );
    }
    if roles.contains(&Role::Relay) && (nats.is_none() || built.store_kind != "postgres") {
        bail!("the relay role needs PostgreSQL (EDICT_DATABASE_URL) and NATS (EDICT_NATS_URL)");
    }
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let supervisor = Supervisor::new(
        built.roles.clone(),
        SupervisorSettings {
            max_backoff: Duration::from_millis(args.supervisor_max_backoff_ms.max(10)),
            ..SupervisorSettings::default()
        },
        stopped.clone(),
    );
    {
        // Every process samples the gauges read from the store: a stalled relay or audit writer shows
        // in the metrics of the processes that still run.
        let sources = metrics::Sources {
            database: built.database.clone(),
            relay: nats
                .as_ref()
                .filter(|_| built.store_kind == "postgres")
                .map(|nats| nats.prefix().clone()),
        };
        let (edict, handle) = (built.edict.clone(), metrics_handle.clone());
        let interval = Duration::from_millis(args.metrics_sample_ms.max(100));
        supervisor.spawn(&mut tasks, "metrics", move |stopped| {
            let (edict, handle, sources) = (edict.clone(), handle.clone(), sources.clone());
            async move {
                metrics::sample(edict, handle, sources, interval, stopping(stopped)).await;
                Ok::<(), String>(())
            }
        });
    }
    if roles.contains(&Role::Relay)
        && let Some(nats) = nats.clone()
    {
        // Made here, so that a bad setting fails the start instead of a restart loop.
        let mut first = Some(
            NatsRelay::new(
                built.database.clone(),
                nats.clone(),
                RelaySettings::default(),
            )
            .context("cannot start the relay")?,
        );
        let database = built.database.clone();
        supervisor.spawn(&mut tasks, "relay", move |stopped| {
            let relay = match first.take() {
                Some(relay) => Ok(relay),
                None => NatsRelay::new(database.clone(), nats.clone(), RelaySettings::default()),
            };
            async move {
                relay?.run(stopping(stopped)).await;
                Ok::<(), nats::NatsError>(())
            }
        });
    }
    if roles.contains(&Role::Audit) {
        // Made here, so that a bad key fails the start; a restart makes it again.
        let mut first = Some(audit_writer(&settings, &built.database).await?);
        let settings = settings.clone();
        let database = built.database.clone();
        supervisor.spawn(&mut tasks, "audit", move |stopped| {
            let made = first.take();
            let settings = settings.clone();
            let database = database.clone();
            async move {
                let writer = match made {
                    Some(writer) => writer,
                    None => audit_writer(&settings, &database)
                        .await
                        .map_err(|error| format!("{error:#}"))?,
                };
                writer.run(stopping(stopped)).await;
                Ok::<(), String>(())
            }
        });
    }
    if let Some(ring) = built.key_ring.clone() {
        // Advances key rotations (ADR 0021); after the active key changed, every rule set is signed
        // again with it (re-published: same revisions, the new key's signature).
        let projections = built.projections.clone();
        supervisor.spawn(&mut tasks, "keys", move |stopped| {
            let ring = ring.clone();
            let projections = projections.clone();
            async move {
                edict_infrastructure::signing::keep(
                    ring,
                    || {
                        let projections = projections.clone();
                        async move {
                            for runner in projections.runners() {
                                if let Err(error) = runner.republish_all().await {
                                    tracing::warn!(%error, projection = runner.name(), "re-signing rule sets; the publication loop retries");
                                }
                            }
                        }
                    },
                    stopping(stopped),
                )
                .await;
                Ok::<(), String>(())
            }
        });
    }
    if roles.contains(&Role::Projector) {
        for (runner, notify) in built
            .projections
            .runners()
            .into_iter()
            .zip(built.notifies.iter().cloned())
        {
            let projection = runner.name();
            let name = format!("projector:{projection}");
            let projections = built.projections.clone();
            // Each start gets a fresh runner (nothing cached from the run that ended).
            let mut first = Some(runner);
            let mut fresh = move || {
                first
                    .take()
                    .or_else(|| projections.runner(projection))
                    .ok_or_else(|| format!("no projection {projection}"))
            };
            match nats.clone() {
                Some(nats) => {
                    // A projection that stops at an event it cannot apply ends its projector; started
                    // again, it ends again (with a growing pause) until the projection is rebuilt,
                    // then goes on from the rebuilt generation.
                    supervisor.spawn(&mut tasks, name, move |stopped| {
                        let runner = fresh();
                        let nats = nats.clone();
                        async move {
                            nats::run_projector(
                                nats,
                                std::sync::Arc::new(runner?),
                                nats::ProjectorSettings::default(),
                                stopping(stopped),
                            )
                            .await
                            .map_err(|error| error.to_string())
                        }
                    });
                }
                None => {
                    supervisor.spawn(&mut tasks, name, move |stopped| {
                        let runner = fresh();
                        let notify = notify.clone();
                        async move {
                            runner?
                                .run_polling(notify, stopped, Duration::from_millis(250))
                                .await;
                            Ok::<(), String>(())
                        }
                    });
                }
            }
        }
        let edict = built.edict.clone();
        let interval = Duration::from_millis(args.scheduler_interval_ms.max(50));
        supervisor.spawn(&mut tasks, "scheduler", move |mut stopped| {
            let edict = edict.clone();
            async move {
                loop {
                    if let Err(error) = edict.auto_revert_due().await {
                        tracing::warn!(%error, "the timeout scheduler failed; retrying");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(interval) => {}
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                }
                Ok::<(), String>(())
            }
        });
    }
    // Loaded here, so that a bad certificate fails the start; reloads keep the last good one.
    let tls = match args.tls() {
        Some(tls) => Some(
            crate::tls::reloading(tls, stopped.clone())
                .context("cannot load the TLS certificate")?,
        ),
        None => None,
    };
    let mut gateway_urls = args.gateway_public_urls.clone();
    let limits = settings.limits;
    if roles.contains(&Role::Gateway) {
        let feed: std::sync::Arc<dyn RulesetFeed> = match (&nats, &built.watch) {
            (Some(nats), _) => std::sync::Arc::new(NatsFeed(nats.clone())),
            (None, Some(watch)) => std::sync::Arc::new(WatchFeed(watch.clone())),
            (None, None) => bail!("no rule set feed for the gateway"),
        };
        // With TLS the gateway listens on loopback only, behind the TLS bridge on the public address.
        let (gateway_bind, bridge) = match &tls {
            Some(config) => {
                let listener = tokio::net::TcpListener::bind(args.gateway_listen)
                    .await
                    .with_context(|| {
                        format!("cannot listen for agents on {}", args.gateway_listen)
                    })?;
                (
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    Some((listener, config.clone())),
                )
            }
            None => (args.gateway_listen, None),
        };
        let gateway_access = if bridge.is_some() {
            metrics_access.behind_relay()
        } else {
            metrics_access.clone()
        };
        let gateway_settings = GatewaySettings {
            decision_interval: Duration::from_millis(args.gateway_poll_ms.max(100)),
            report_rate,
            metrics: Some(metrics::exposition(metrics_handle.clone(), gateway_access)),
            ..gateway_settings(&limits)
        };
        let convergence: Arc<dyn ConvergenceRecords> =
            Arc::new(ConvergenceStore::new(built.database.clone()));
        let (gateway, address) = Gateway::bind(
            gateway_bind,
            built.edict.clone(),
            feed.clone(),
            Arc::clone(&convergence),
            gateway_settings.clone(),
        )
        .await
        .with_context(|| format!("cannot listen for agents on {}", args.gateway_listen))?;
        match bridge {
            Some((listener, config)) => {
                let public = listener.local_addr().unwrap_or(args.gateway_listen);
                tracing::info!(%public, "edict gateway for agents on wss://{public}/ws");
                if gateway_urls.is_empty() {
                    gateway_urls.push(format!("wss://{public}/ws"));
                }
                let mut first = Some(listener);
                supervisor.spawn(&mut tasks, "gateway-tls", move |stopped| {
                    let bound = first.take();
                    let config = config.clone();
                    async move {
                        let listener = match bound {
                            Some(listener) => listener,
                            None => tokio::net::TcpListener::bind(public).await?,
                        };
                        crate::tls::bridge(listener, address, config, stopping(stopped)).await;
                        Ok::<(), std::io::Error>(())
                    }
                });
            }
            None => {
                tracing::info!(%address, "edict gateway for agents on ws://{address}/ws");
                if gateway_urls.is_empty() {
                    gateway_urls.push(format!("ws://{address}/ws"));
                }
            }
        }
        let mut first = Some(gateway);
        let edict = built.edict.clone();
        supervisor.spawn(&mut tasks, "gateway", move |stopped| {
            let bound = first.take();
            let (edict, convergence, feed) = (edict.clone(), convergence.clone(), feed.clone());
            let gateway_settings = gateway_settings.clone();
            async move {
                let gateway = match bound {
                    Some(gateway) => gateway,
                    // Started again: on the same address, which agents were told.
                    None => {
                        Gateway::bind(address, edict, feed, convergence, gateway_settings.clone())
                            .await?
                            .0
                    }
                };
                gateway.run(stopping(stopped)).await;
                Ok::<(), std::io::Error>(())
            }
        });
    }
    if roles.contains(&Role::Api) {
        // Bound here, so that an address that cannot be bound fails the start; a restart binds again.
        let acceptor = TcpListener::bind(settings.listen)
            .into_acceptor()
            .await
            .with_context(|| format!("cannot serve on {}", settings.listen))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(listen = %settings.listen, "edict API on {scheme}://{} (docs at /docs)", settings.listen);
        let mut first = Some(acceptor);
        let edict = built.edict.clone();
        let listen = settings.listen;
        let public_url = edict_api::server::PublicUrl(args.public_url());
        let rate_limits = Arc::new(RateLimits::new(&rate_settings));
        let exposition = metrics::exposition(metrics_handle.clone(), metrics_access.clone());
        spawn_housekeeping(
            &supervisor,
            &mut tasks,
            edict.clone(),
            rate_limits.clone(),
            rate_settings.window,
        );
        supervisor.spawn(&mut tasks, "api", move |stopped| {
            let bound = first.take();
            let endpoint = poem::EndpointExt::data(
                poem::EndpointExt::data(
                    edict_api::server::app_with_limits(
                        edict.clone(),
                        edict_api::server::GatewayUrls(gateway_urls.clone()),
                        rate_limits.clone(),
                    ),
                    public_url.clone(),
                ),
                edict_api::server::middleware::BodyLimit(limits.max_body_bytes),
            );
            let endpoint = poem::EndpointExt::data(endpoint, exposition.clone());
            let tls = tls.clone();
            async move {
                let acceptor = match bound {
                    Some(acceptor) => acceptor,
                    None => TcpListener::bind(listen).into_acceptor().await?,
                };
                let acceptor = match tls {
                    Some(config) => crate::tls::TlsAcceptor::new(acceptor, config).boxed(),
                    None => acceptor.boxed(),
                };
                Server::new_with_acceptor(acceptor)
                    .run_with_graceful_shutdown(endpoint, stopping(stopped), Some(grace))
                    .await
            }
        });
    }
    if !roles.contains(&Role::Api) {
        // No API here: the listen address serves the probes and the metrics only.
        let listener = TcpListener::bind(settings.listen)
            .into_acceptor()
            .await
            .with_context(|| format!("cannot serve the probes on {}", settings.listen))?;
        tracing::info!(listen = %settings.listen, "edict probes and metrics on http://{}", settings.listen);
        let mut first = Some(listener);
        let (edict, listen) = (built.edict.clone(), settings.listen);
        let exposition = metrics::exposition(metrics_handle.clone(), metrics_access.clone());
        supervisor.spawn(&mut tasks, "probes", move |stopped| {
            let bound = first.take();
            let endpoint = poem::EndpointExt::data(
                edict_api::server::probes_app(edict.clone()),
                exposition.clone(),
            );
            async move {
                let acceptor = match bound {
                    Some(acceptor) => acceptor,
                    None => TcpListener::bind(listen).into_acceptor().await?,
                };
                Server::new_with_acceptor(acceptor)
                    .run_with_graceful_shutdown(endpoint, stopping(stopped), Some(grace))
                    .await
            }
        });
    }
    tracing::info!(
        roles = ?roles,
        store = built.store_kind,
        nats = nats.is_some(),
        "edict started"
    );
    shutdown_signal().await;
    let _ = stop.send(true);
    // The API lets in-flight requests finish within the grace; the other roles stop meanwhile.
    let drained = tokio::time::timeout(grace + grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some roles did not stop in time");
        tasks.abort_all();
    }
    built.database.close().await;
    tracing::info!("edict stopped");
    Ok(())
}

/// The API's periodic chores: trims the rate limiters' idle keys and purges expired idempotency keys
/// (once a window, at least once a minute).
fn spawn_housekeeping(
    supervisor: &Supervisor,
    tasks: &mut JoinSet<()>,
    edict: Arc<edict_application::Edict>,
    limits: Arc<RateLimits>,
    window: Duration,
) {
    let every = window.clamp(Duration::from_secs(1), Duration::from_secs(60));
    supervisor.spawn(tasks, "housekeeping", move |mut stopped| {
        let (edict, limits) = (edict.clone(), limits.clone());
        async move {
            loop {
                limits.retain_recent();
                match edict.idempotency().purge_expired().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired idempotency keys purged"),
                    Err(error) => tracing::warn!(%error, "cannot purge expired idempotency keys"),
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
            }
            Ok::<(), String>(())
        }
    });
}

/// Resolves once `stopped` turns `true` (or its sender is gone).
/// The gateway's defaults with the bounds of `limits` (`EDICT_WS_*`).
fn gateway_settings(limits: &Limits) -> GatewaySettings {
    GatewaySettings {
        max_message_size: limits.ws_max_message_bytes,
        max_unauthenticated: limits.ws_max_unauthenticated,
        max_sockets_per_agent: limits.ws_max_sockets_per_agent,
        host: host_name().unwrap_or_else(|| "gateway".to_owned()),
        ..GatewaySettings::default()
    }
}

/// This machine's host name, which names its gateway in the fleet.
fn host_name() -> Option<String> {
    #[cfg(unix)]
    return nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty());
    #[cfg(not(unix))]
    return None;
}

async fn stopping(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// The chain writer of the `audit` role, with its signing key (configured, or kept in the store).
async fn audit_writer(
    settings: &Settings,
    database: &edict_infrastructure::store::Database,
) -> Result<ChainWriter> {
    let (key, origin) = audit::signing_key(database, settings.audit.signing_key.as_ref())
        .await
        .context("cannot load the audit signing key")?;
    let public_key = hex::encode(key.verifying_key().to_bytes());
    match origin {
        audit::KeyOrigin::Configured => {
            tracing::info!(%public_key, "audit checkpoints signed with EDICT_AUDIT_SIGNING_KEY");
        }
        audit::KeyOrigin::Stored => tracing::warn!(
            %public_key,
            "EDICT_AUDIT_SIGNING_KEY is not set: audit checkpoints are signed with a key kept in the \
             database, which anyone who can rewrite the database can use too; set it for real tamper evidence"
        ),
    }
    Ok(ChainWriter::new(
        database.clone(),
        key,
        ChainWriterSettings {
            checkpoint_every: settings.audit.checkpoint_every,
            checkpoint_interval: Duration::from_secs(settings.audit.checkpoint_secs),
            ..ChainWriterSettings::default()
        },
    ))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight work");
}
