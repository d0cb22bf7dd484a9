//! `edict serve`'s configuration: the roles, and every flag and variable with its default; secrets are
//! read from the environment only, never from flags (which `ps` shows).

use anyhow::{Context, Result, bail};
use clap::Args;
use edict_infrastructure::settings::{
    AuditSettings, BootstrapAdmin, Limits, QuorumSettings, Secret, Settings, TlsSettings,
};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A role `edict serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API.
    Api,
    /// Publishes the event log to NATS JetStream (needs PostgreSQL and NATS; one active at a time).
    Relay,
    /// Keeps the read models up to date and reverts timed-out change requests.
    Projector,
    /// The WebSocket gateway agents connect to (`/ws` on `--gateway-listen`).
    Gateway,
    /// Chains every event into the tamper-evident hash chain and signs checkpoints (one active at a
    /// time per database).
    Audit,
}

/// How `edict serve` is configured (flags or environment; secrets only from the environment).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "EDICT_LISTEN", default_value = crate::DEFAULT_LISTEN, value_parser = crate::parse_listen)]
    pub(super) listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "EDICT_DATA_DIR", default_value_os_t = crate::default_data_dir())]
    pub(super) data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of the embedded SQLite store.
    #[arg(long, env = "EDICT_DATABASE_URL")]
    pub(super) database_url: Option<String>,
    /// Address of the agents' WebSocket gateway (`ws://ADDR/ws`).
    #[arg(long, env = "EDICT_GATEWAY_LISTEN", default_value = "127.0.0.1:8081", value_parser = crate::parse_listen)]
    pub(super) gateway_listen: SocketAddr,
    /// The gateway URLs agents are told to connect to at enrollment, in order (comma-separated
    /// `ws(s)://host:port/ws`; default: this process's gateway when it runs one).
    #[arg(long, value_delimiter = ',', env = "EDICT_GATEWAY_PUBLIC_URLS")]
    pub(super) gateway_public_urls: Vec<String>,
    /// `nats://…` to carry events through NATS JetStream (otherwise an in-process bus). Credentials and
    /// TLS come from `EDICT_NATS_USER`/`EDICT_NATS_PASSWORD`, `EDICT_NATS_TOKEN`, `EDICT_NATS_NKEY`,
    /// `EDICT_NATS_CREDS`, `EDICT_NATS_CA`, `EDICT_NATS_TLS_CERT`/`EDICT_NATS_TLS_KEY` and `EDICT_NATS_TLS`.
    #[arg(long, env = "EDICT_NATS_URL")]
    pub(super) nats_url: Option<String>,
    /// Prefix of every NATS stream, subject, consumer and bucket name of this deployment.
    #[arg(long, env = "EDICT_NATS_PREFIX", default_value = "")]
    pub(super) nats_prefix: String,
    /// Roles to run (default: every role that applies: the relay only with NATS).
    #[arg(long, value_delimiter = ',', env = "EDICT_ROLES")]
    pub(super) roles: Vec<Role>,
    /// Email of the first org_admin, created on a start that finds no user (its password comes from
    /// `EDICT_ADMIN_PASSWORD`).
    #[arg(long, env = "EDICT_ADMIN_EMAIL")]
    pub(super) admin_email: Option<String>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "EDICT_ACCESS_TTL_SECS", default_value_t = 900)]
    pub(super) access_ttl_secs: u64,
    /// Lifetime of a sign-in session, in seconds (refreshes do not extend it; its access tokens stop
    /// working with it).
    #[arg(long, env = "EDICT_SESSION_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub(super) session_ttl_secs: u64,
    /// Lifetime of a new agent token, in seconds: agents renew theirs past half of it
    /// (`POST /api/v1/agent/token`); one not renewed in time stops working and its machine logs in
    /// again.
    #[arg(long, env = "EDICT_AGENT_TOKEN_TTL_SECS", default_value_t = 90 * 24 * 3600)]
    pub(super) agent_token_ttl_secs: u64,
    /// How long an agent token keeps working after the agent renewed it, in seconds (so a lost
    /// answer does not strand the machine).
    #[arg(
        long,
        env = "EDICT_AGENT_TOKEN_RENEWAL_GRACE_SECS",
        default_value_t = 600
    )]
    pub(super) agent_token_renewal_grace_secs: u64,
    /// Approvals an organization-layer rule revision needs.
    #[arg(long, env = "EDICT_QUORUM_ORGANIZATION", default_value_t = 2)]
    pub(super) quorum_organization: u32,
    /// Approvals a team-layer rule revision needs.
    #[arg(long, env = "EDICT_QUORUM_TEAM", default_value_t = 1)]
    pub(super) quorum_team: u32,
    /// Approvals a project-layer rule revision needs.
    #[arg(long, env = "EDICT_QUORUM_PROJECT", default_value_t = 1)]
    pub(super) quorum_project: u32,
    /// Seconds an org_admin whom another admin created, granted org_admin, reactivated or gave a new
    /// password does not count towards a quorum (0: no probation; docs/adr/0023).
    #[arg(long, env = "EDICT_QUORUM_PROBATION_SECS", default_value_t = 7 * 24 * 3600)]
    pub(super) quorum_probation_secs: u64,
    /// How often the scheduler looks for change requests past their timeout, in milliseconds.
    #[arg(long, env = "EDICT_SCHEDULER_INTERVAL_MS", default_value_t = 5000)]
    pub(super) scheduler_interval_ms: u64,
    /// How often each gateway connection looks for decisions on its agent's change requests and for
    /// new organization key sets, in milliseconds.
    #[arg(long, env = "EDICT_GATEWAY_POLL_MS", default_value_t = 5000)]
    pub(super) gateway_poll_ms: u64,
    /// Sign an audit checkpoint every this many chained events.
    #[arg(long, env = "EDICT_AUDIT_CHECKPOINT_EVERY", default_value_t = 1000)]
    pub(super) audit_checkpoint_every: u64,
    /// Sign an audit checkpoint at least this often (seconds) while the chain moves.
    #[arg(long, env = "EDICT_AUDIT_CHECKPOINT_SECS", default_value_t = 60)]
    pub(super) audit_checkpoint_secs: u64,
    /// The longest pause, in milliseconds, before a role that ended or failed is started again (the
    /// pauses grow exponentially up to it).
    #[arg(
        long,
        env = "EDICT_SUPERVISOR_MAX_BACKOFF_MS",
        default_value_t = 30_000
    )]
    pub(super) supervisor_max_backoff_ms: u64,
    /// PEM certificate chain: with `--tls-key`, the API is served over HTTPS only (reloaded on SIGHUP
    /// and when the files change).
    #[arg(long, env = "EDICT_TLS_CERT", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "EDICT_TLS_KEY", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// The API's URL as people and agents reach it (e.g. `https://edict.example.com`): the device
    /// approval page is named from it, never from a request's Host header (default: this listener).
    #[arg(long, env = "EDICT_PUBLIC_URL")]
    pub(super) public_url: Option<String>,
    /// The largest HTTP request body in bytes, on every transport (413 past it).
    #[arg(long, env = "EDICT_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub(super) max_body_bytes: usize,
    /// The largest WebSocket message the gateway reads from an agent, in bytes.
    #[arg(long, env = "EDICT_WS_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub(super) ws_max_message_bytes: usize,
    /// Gateway sockets not yet authenticated at once (more are answered 503).
    #[arg(long, env = "EDICT_WS_MAX_UNAUTHENTICATED", default_value_t = 256)]
    pub(super) ws_max_unauthenticated: usize,
    /// Gateway sockets one agent token may hold at once (more are answered 429).
    #[arg(long, env = "EDICT_WS_MAX_SOCKETS_PER_AGENT", default_value_t = 4)]
    pub(super) ws_max_sockets_per_agent: usize,
    /// Enrolled agents one user may own.
    #[arg(long, env = "EDICT_MAX_AGENTS_PER_USER", default_value_t = 20)]
    pub(super) max_agents_per_user: usize,
    /// How long a time-travel read (`as_of`) may replay the log, in milliseconds.
    #[arg(long, env = "EDICT_AS_OF_BUDGET_MS", default_value_t = 2000)]
    pub(super) as_of_budget_ms: u64,
    /// Who may read `/metrics` on the API and gateway ports: `loopback` (default), `any`, or
    /// comma-separated addresses and networks (beside loopback). Behind the gateway's TLS bridge the
    /// gateway port serves them only with `any`.
    #[arg(long, env = "EDICT_METRICS_ALLOW", default_value = "loopback")]
    pub(super) metrics_allow: String,
    /// How often the gauges read from the store (lags, convergence) are sampled, in milliseconds.
    #[arg(long, env = "EDICT_METRICS_SAMPLE_MS", default_value_t = 5000)]
    pub(super) metrics_sample_ms: u64,
    /// Seconds to let in-flight requests finish after SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub(super) shutdown_grace_secs: u64,
}

/// A secret from the environment only (flags would show in `ps`).
fn secret_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

impl ServeArgs {
    pub(super) fn settings(&self) -> Result<Settings> {
        let mut settings = Settings::embedded(self.data_dir.clone(), self.listen);
        if let Some(url) = &self.database_url {
            settings.database_url.clone_from(url);
        }
        settings.admin = match (self.admin_email.clone(), secret_env("EDICT_ADMIN_PASSWORD")) {
            (Some(email), Some(password)) => Some(BootstrapAdmin {
                email,
                password: Secret::new(password),
            }),
            (None, None) => None,
            _ => bail!("set both EDICT_ADMIN_EMAIL and EDICT_ADMIN_PASSWORD, or neither"),
        };
        settings.jwt_secret = match secret_env("EDICT_JWT_SECRET") {
            Some(secret) if secret.len() < 32 => {
                bail!("EDICT_JWT_SECRET must be at least 32 bytes long")
            }
            other => other.map(Secret::new),
        };
        let signing_key = secret_env("EDICT_AUDIT_SIGNING_KEY");
        if let Some(key) = &signing_key {
            edict_infrastructure::audit::parse_seed(key)?;
        }
        settings.audit = AuditSettings {
            signing_key: signing_key.map(Secret::new),
            checkpoint_every: self.audit_checkpoint_every.max(1),
            checkpoint_secs: self.audit_checkpoint_secs.max(1),
        };
        settings.ruleset_signing_key = secret_env("EDICT_RULESET_SIGNING_KEY").map(Secret::new);
        if let Some(key) = &settings.ruleset_signing_key {
            edict_infrastructure::audit::ruleset_seed(key.expose())?;
        }
        settings.ruleset_signing_key_next =
            secret_env("EDICT_RULESET_SIGNING_KEY_NEXT").map(Secret::new);
        if let Some(key) = &settings.ruleset_signing_key_next {
            edict_infrastructure::audit::ruleset_seed(key.expose())
                .context("EDICT_RULESET_SIGNING_KEY_NEXT")?;
        }
        settings.access_ttl_secs = self.access_ttl_secs;
        settings.limits = Limits {
            max_body_bytes: self.max_body_bytes.max(1),
            ws_max_message_bytes: self.ws_max_message_bytes.max(1024),
            ws_max_unauthenticated: self.ws_max_unauthenticated.max(1),
            ws_max_sockets_per_agent: self.ws_max_sockets_per_agent.max(1),
            max_agents_per_user: self.max_agents_per_user.max(1),
            as_of_budget_ms: self.as_of_budget_ms,
        };
        settings.refresh_ttl_secs = self.session_ttl_secs.max(1);
        settings.agent_token_ttl_secs = self.agent_token_ttl_secs.max(1);
        settings.agent_token_grace_secs = self.agent_token_renewal_grace_secs;
        settings.quorum = QuorumSettings {
            organization: self.quorum_organization,
            team: self.quorum_team,
            project: self.quorum_project,
            probation_secs: self.quorum_probation_secs,
        };
        Ok(settings)
    }

    pub(super) fn tls(&self) -> Option<TlsSettings> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Where the device approval page is: the configured public URL, or this listener.
    pub(super) fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!(
                "{}://{}",
                if self.tls().is_some() {
                    "https"
                } else {
                    "http"
                },
                self.listen
            ),
        }
    }

    /// The roles to run: those `--roles` names, or every role the configuration allows.
    pub(crate) fn roles(&self) -> Vec<Role> {
        if self.roles.is_empty() {
            let mut roles = vec![Role::Api, Role::Projector, Role::Gateway, Role::Audit];
            if self.nats_url.is_some() {
                roles.push(Role::Relay);
            }
            roles
        } else {
            self.roles.clone()
        }
    }

    /// The roles as the traces' resource attribute names them (`api,projector,…`).
    pub(crate) fn role_names(&self) -> String {
        self.roles()
            .iter()
            .map(|role| format!("{role:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    }
}
