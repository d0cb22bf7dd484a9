//! NATS JetStream: the transport between the event store and everything that follows it.
//!
//! The store is the truth, NATS the transport. The [`relay`] tails the global log and publishes each event
//! to the stream `<prefix>EDICT_EVENTS`; [`projector`] consumers apply them to read models and fall back to
//! the store whenever the transport lost or reordered something; [`rulesets`] carries the team rule sets
//! to gateways through the KV bucket `<prefix>rulesets`.
//!
//! Every name on the server carries the deployment's [`NatsPrefix`] (`EDICT_NATS_PREFIX`, empty by
//! default), so several deployments, and tests running in parallel, share one server without seeing
//! each other:
//!
//! | what | name |
//! |---|---|
//! | events stream | `<prefix>EDICT_EVENTS` |
//! | event subjects | `<prefix>edict.events.<aggregate_type>.<aggregate_id>` |
//! | projection consumers | `<prefix>projection_<name>` |
//! | rule set bucket | `<prefix>rulesets` (its stream `KV_<prefix>rulesets`) |
//! | relay checkpoint (`relay_state.name`) | `relay:<prefix>` |
//!
//! Layout:
//! - this module: settings and names ([`NatsSettings`], [`NatsPrefix`]), connecting ([`connect`]) and the
//!   streams ([`Nats::ensure_streams`]);
//! - [`relay`]: [`NatsRelay`], the one active publisher per deployment (PostgreSQL advisory lock);
//! - [`projector`]: [`run_projector`], a durable pull consumer driving one projection;
//! - [`rulesets`]: [`KvRulesetPublisher`], [`watch_rulesets`] and the gateways' [`NatsFeed`].
//!
//! Credentials ([`NatsAuth`]: user and password, token, nkey seed or a `.creds` file) and TLS ([`NatsTls`]: a CA
//! file, a client certificate) are set through [`NatsSettings`]; secrets stay inside [`Secret`] and never
//! reach a log or an error message. async-nats ignores credentials written into the URL
//! (`nats://user:password@host`), so [`NatsSettings::new`] takes them out of it and passes them on as options.
//!
//! nats-server 2.9 (Debian 12's) cannot answer async-nats 0.51's account-info request in a form it
//! parses, so nothing here calls it: the KV bucket's stream is created by hand (see
//! [`Nats::ensure_streams`]) instead of through `create_key_value`.
//!
//! Size: the settings (prefix, credentials, TLS), connecting and the stream configs share one [`NatsError`]
//! and the [`NatsSettings`] value they read; their split into settings and connection is the change now
//! editing this file (its unit tests are in `tests.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::settings::Secret;

pub mod headers;
pub mod projector;
pub mod relay;
pub mod rulesets;

pub(crate) mod backoff;

pub use projector::{ProjectorError, ProjectorSettings, run_projector};
pub use relay::{NatsRelay, RelaySettings, RelayState, RelayStatus, relay_checkpoint};
pub use rulesets::{KvRulesetPublisher, NatsFeed, watch_rulesets};

/// The server used when `EDICT_NATS_URL` is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// How long the events stream keeps a message by default. A projection further behind than this
/// catches up from the store, so it only bounds the server's disk, never correctness.
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The window in which the server drops a republished `Nats-Msg-Id`: a relay that crashed after
/// publishing a page but before storing its checkpoint republishes it well within this.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The longest prefix accepted (stream names end up in file names on the server).
const MAX_PREFIX_LEN: usize = 64;
/// How long the first connection is retried while the server is not reachable yet.
const INITIAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound on JetStream API requests and publish acknowledgements.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a NATS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The prefix contains something NATS names cannot.
    #[error(
        "invalid NATS prefix {0:?}: use at most 64 letters, digits, '_' or '-' (no dots, spaces or wildcards)"
    )]
    InvalidPrefix(String),
    /// The server could not be reached within the initial connect timeout.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The server URL.
        url: String,
        /// The last connection error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A JetStream request (stream, consumer or bucket management, publish) failed.
    #[error("jetstream {operation} failed")]
    JetStream {
        /// What was attempted, for example `create stream EDICT_EVENTS`.
        operation: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
    /// The server refused the credentials (or asked for some and got none).
    #[error(
        "NATS authorization failed at {url}: the server refused {method} (check EDICT_NATS_USER/EDICT_NATS_PASSWORD, \
         EDICT_NATS_TOKEN, EDICT_NATS_NKEY or EDICT_NATS_CREDS)"
    )]
    Authorization {
        /// The server URL, without credentials.
        url: String,
        /// What was offered, for example `user and password (user \"edict\")`; never a secret.
        method: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The TLS connection to the server could not be set up (unknown CA, wrong host name, bad files).
    #[error("TLS with NATS at {url} failed: {reason}")]
    Tls {
        /// The server URL, without credentials.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The NATS credentials or TLS settings are inconsistent or their files unreadable.
    #[error("invalid NATS settings: {0}")]
    Settings(String),
    /// The relay needs PostgreSQL (the embedded SQLite deployment has no NATS).
    #[error("the relay needs PostgreSQL, not {0}")]
    NotPostgres(&'static str),
    /// The relay's database statements failed.
    #[error("relay state query failed")]
    Store(#[source] sqlx::Error),
    /// A stored checkpoint or count does not fit its type.
    #[error("corrupt relay state: {0}")]
    CorruptState(String),
}

impl NatsError {
    fn jetstream(operation: impl Into<String>, source: impl Into<async_nats::Error>) -> NatsError {
        NatsError::JetStream {
            operation: operation.into(),
            source: source.into(),
        }
    }
}

/// The deployment's name prefix: letters, digits, `_` and `-` only, possibly empty.
///
/// It is put in front of stream, subject, consumer and bucket names unchanged, so choose one that reads
/// well in front of `EDICT_EVENTS` and `edict.events` (tests use `t<uuid>_`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NatsPrefix(String);

impl NatsPrefix {
    /// Accepts `prefix` when NATS can carry it in every kind of name.
    ///
    /// # Errors
    /// [`NatsError::InvalidPrefix`] for dots, spaces, wildcards or anything else but ASCII letters,
    /// digits, `_` and `-`, or for more than 64 characters.
    pub fn parse(prefix: &str) -> Result<NatsPrefix, NatsError> {
        let valid = prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            Ok(NatsPrefix(prefix.to_owned()))
        } else {
            Err(NatsError::InvalidPrefix(prefix.to_owned()))
        }
    }

    /// The prefix itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The events stream: `<prefix>EDICT_EVENTS`.
    pub fn events_stream(&self) -> String {
        format!("{}EDICT_EVENTS", self.0)
    }

    /// Every event subject: `<prefix>edict.events.>`.
    pub fn events_filter(&self) -> String {
        format!("{}edict.events.>", self.0)
    }

    /// The subject of one aggregate's events: `<prefix>edict.events.<aggregate_type>.<aggregate_id>`.
    ///
    /// Characters a subject token cannot hold (`.`, `*`, `>`, whitespace) become `_`, so any aggregate id
    /// maps to one token; the `Nats-Msg-Id` keeps the exact id.
    pub fn event_subject(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        format!(
            "{}edict.events.{}.{}",
            self.0,
            subject_token(aggregate_type),
            subject_token(aggregate_id)
        )
    }

    /// The durable consumer of a projection: `<prefix>projection_<name>`.
    pub fn projection_consumer(&self, projection: &str) -> String {
        format!("{}projection_{}", self.0, projection)
    }

    /// The team rule set KV bucket: `<prefix>rulesets`.
    pub fn rulesets_bucket(&self) -> String {
        format!("{}rulesets", self.0)
    }

    /// The relay's row in `relay_state`: `relay:<prefix>`.
    pub fn relay_name(&self) -> String {
        format!("relay:{}", self.0)
    }
}

/// `value` as one subject token.
fn subject_token(value: &str) -> String {
    if value.is_empty() {
        return "_".to_owned();
    }
    value
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// The `Nats-Msg-Id` of an event: `<aggregate_type>:<aggregate_id>:<sequence>`, unique per event, so a
/// republished event is dropped by the server within [`DUPLICATE_WINDOW`].
pub fn message_id(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    format!("{aggregate_type}:{aggregate_id}:{sequence}")
}

/// How Edict proves who it is to the NATS server. Secrets stay wrapped in [`Secret`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (a server without authorization).
    #[default]
    None,
    /// `EDICT_NATS_USER` and `EDICT_NATS_PASSWORD`.
    UserPassword {
        /// The user name (not a secret; named in errors).
        user: String,
        /// The password.
        password: Secret<String>,
    },
    /// `EDICT_NATS_TOKEN`.
    Token(Secret<String>),
    /// `EDICT_NATS_NKEY`: a user nkey seed (`SU…`); the server knows its public key.
    Nkey(Secret<String>),
    /// `EDICT_NATS_CREDS`: a `.creds` file (user JWT and seed) of a server in operator mode.
    CredsFile(PathBuf),
}

impl NatsAuth {
    /// What is offered, for logs and errors: the method and the user or file, never a secret.
    pub fn describe(&self) -> String {
        match self {
            NatsAuth::None => "no credentials".to_owned(),
            NatsAuth::UserPassword { user, .. } => format!("user and password (user {user:?})"),
            NatsAuth::Token(_) => "a token".to_owned(),
            NatsAuth::Nkey(_) => "an nkey".to_owned(),
            NatsAuth::CredsFile(path) => format!("the credentials file {}", path.display()),
        }
    }

    /// The credentials from the environment: `EDICT_NATS_USER` + `EDICT_NATS_PASSWORD`, `EDICT_NATS_TOKEN`,
    /// `EDICT_NATS_NKEY` (a seed) or `EDICT_NATS_CREDS` (a file path); at most one of them.
    ///
    /// # Errors
    /// [`NatsError::Settings`] when more than one kind is set, or a user without a password (or the other
    /// way round).
    pub fn from_env() -> Result<NatsAuth, NatsError> {
        NatsAuth::from_vars(|name| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        })
    }

    /// [`NatsAuth::from_env`] over any source of variables (tests pass a map).
    ///
    /// # Errors
    /// As [`NatsAuth::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<NatsAuth, NatsError> {
        let mut found = Vec::new();
        match (var("EDICT_NATS_USER"), var("EDICT_NATS_PASSWORD")) {
            (Some(user), Some(password)) => found.push(NatsAuth::UserPassword {
                user: user.trim().to_owned(),
                password: Secret::new(password),
            }),
            (None, None) => {}
            _ => {
                return Err(NatsError::Settings(
                    "set both EDICT_NATS_USER and EDICT_NATS_PASSWORD, or neither".to_owned(),
                ));
            }
        }
        if let Some(token) = var("EDICT_NATS_TOKEN") {
            found.push(NatsAuth::Token(Secret::new(token.trim().to_owned())));
        }
        if let Some(seed) = var("EDICT_NATS_NKEY") {
            found.push(NatsAuth::Nkey(Secret::new(seed.trim().to_owned())));
        }
        if let Some(path) = var("EDICT_NATS_CREDS") {
            found.push(NatsAuth::CredsFile(PathBuf::from(path.trim())));
        }
        match found.len() {
            0 => Ok(NatsAuth::None),
            1 => Ok(found.remove(0)),
            _ => Err(NatsError::Settings(
                "set one of EDICT_NATS_USER/EDICT_NATS_PASSWORD, EDICT_NATS_TOKEN, EDICT_NATS_NKEY and \
                 EDICT_NATS_CREDS, not several"
                    .to_owned(),
            )),
        }
    }
}

/// TLS towards the NATS server. With neither a CA nor a client certificate nor `required`, TLS is used
/// only when the URL says `tls://` or the server asks for it, against the system's roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM file of the CA(s) the server's certificate must chain to (`EDICT_NATS_CA`); replaces the
    /// system's roots (a private PKI).
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate, for servers that verify clients (`EDICT_NATS_TLS_CERT`).
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's key (`EDICT_NATS_TLS_KEY`).
    pub client_key: Option<PathBuf>,
    /// Refuse a connection without TLS even when the server does not ask for it (`EDICT_NATS_TLS=true`;
    /// implied by a CA or a client certificate).
    pub required: bool,
}

impl NatsTls {
    /// `EDICT_NATS_CA`, `EDICT_NATS_TLS_CERT`, `EDICT_NATS_TLS_KEY` and `EDICT_NATS_TLS` (`true`/`1`).
    ///
    /// # Errors
    /// [`NatsError::Settings`] when only one of the client certificate and its key is set.
    pub fn from_env() -> Result<NatsTls, NatsError> {
        NatsTls::from_vars(|name| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        })
    }

    /// [`NatsTls::from_env`] over any source of variables.
    ///
    /// # Errors
    /// As [`NatsTls::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<NatsTls, NatsError> {
        let path = |name: &str| var(name).map(|value| PathBuf::from(value.trim()));
        let tls = NatsTls {
            ca: path("EDICT_NATS_CA"),
            client_cert: path("EDICT_NATS_TLS_CERT"),
            client_key: path("EDICT_NATS_TLS_KEY"),
            required: var("EDICT_NATS_TLS")
                .is_some_and(|value| matches!(value.trim(), "1" | "true" | "yes" | "on")),
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(NatsError::Settings(
                "set both EDICT_NATS_TLS_CERT and EDICT_NATS_TLS_KEY, or neither".to_owned(),
            ));
        }
        Ok(tls)
    }

    /// Whether this asks for TLS at all.
    fn configured(&self) -> bool {
        self.required || self.ca.is_some() || self.client_cert.is_some()
    }
}

/// Where and under which names to use NATS, and how to authenticate.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The server, for example `nats://127.0.0.1:4222` (`EDICT_NATS_URL`), never with credentials in it
    /// (they are moved to [`NatsSettings::auth`]), so it can be logged.
    pub url: String,
    /// The name prefix (`EDICT_NATS_PREFIX`).
    pub prefix: NatsPrefix,
    /// How long the events stream keeps messages (default 7 days).
    pub events_max_age: Duration,
    /// The credentials.
    pub auth: NatsAuth,
    /// TLS towards the server.
    pub tls: NatsTls,
}

impl NatsSettings {
    /// Settings for `url` and `prefix`, with the default retention. Credentials written into the URL
    /// (`nats://user:password@host`, `nats://token@host`) are taken out of it into [`NatsSettings::auth`].
    ///
    /// # Errors
    /// [`NatsError::InvalidPrefix`] when `prefix` is not a valid [`NatsPrefix`].
    pub fn new(url: impl Into<String>, prefix: &str) -> Result<NatsSettings, NatsError> {
        let (url, auth) = split_url_credentials(&url.into());
        Ok(NatsSettings {
            url,
            prefix: NatsPrefix::parse(prefix)?,
            events_max_age: DEFAULT_EVENTS_MAX_AGE,
            auth,
            tls: NatsTls::default(),
        })
    }

    /// These settings with the credentials `auth` (when not [`NatsAuth::None`]) and TLS `tls`.
    ///
    /// # Errors
    /// [`NatsError::Settings`] when the URL carried credentials as well.
    pub fn with_security(
        mut self,
        auth: NatsAuth,
        tls: NatsTls,
    ) -> Result<NatsSettings, NatsError> {
        if auth != NatsAuth::None {
            if self.auth != NatsAuth::None {
                return Err(NatsError::Settings(
                    "credentials both in EDICT_NATS_URL and in EDICT_NATS_* variables: keep one"
                        .to_owned(),
                ));
            }
            self.auth = auth;
        }
        self.tls = tls;
        Ok(self)
    }

    /// `EDICT_NATS_URL` (default [`DEFAULT_NATS_URL`]), `EDICT_NATS_PREFIX` (default empty), and the
    /// credentials and TLS of [`NatsAuth::from_env`] and [`NatsTls::from_env`].
    ///
    /// # Errors
    /// [`NatsError::InvalidPrefix`] when `EDICT_NATS_PREFIX` is not a valid [`NatsPrefix`];
    /// [`NatsError::Settings`] for inconsistent credentials or TLS variables.
    pub fn from_env() -> Result<NatsSettings, NatsError> {
        let url = std::env::var("EDICT_NATS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
        let prefix = std::env::var("EDICT_NATS_PREFIX").unwrap_or_default();
        NatsSettings::new(url, prefix.trim())?
            .with_security(NatsAuth::from_env()?, NatsTls::from_env()?)
    }
}

/// `url` without the user information of each of its comma-separated servers, and the credentials found
/// there (async-nats would silently ignore them): `user:password@` or `token@`.
fn split_url_credentials(url: &str) -> (String, NatsAuth) {
    let mut auth = NatsAuth::None;
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            let server = server.trim();
            let (scheme, rest) = match server.find("://") {
                Some(at) => server.split_at(at + 3),
                None => ("", server),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return server.to_owned();
            };
            let userinfo = &rest[..at];
            if auth == NatsAuth::None && !userinfo.is_empty() {
                auth = match userinfo.split_once(':') {
                    Some((user, password)) => NatsAuth::UserPassword {
                        user: user.to_owned(),
                        password: Secret::new(password.to_owned()),
                    },
                    None => NatsAuth::Token(Secret::new(userinfo.to_owned())),
                };
            }
            format!("{scheme}{}", &rest[at + 1..])
        })
        .collect();
    (servers.join(","), auth)
}

/// An open connection: the client and its JetStream context. Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    settings: NatsSettings,
}

/// Connects to `settings.url` with `settings.auth` and `settings.tls`. While the server is not reachable
/// yet, the first connection is retried with backoff for up to 30 s; once connected, the client
/// reconnects forever (jittered backoff capped at 2 s) and logs every connection event. Refused
/// credentials and TLS failures are not retried: they will not fix themselves.
///
/// # Errors
/// [`NatsError::Authorization`] when the server refuses the credentials; [`NatsError::Tls`] when TLS
/// cannot be set up; [`NatsError::Settings`] when a credentials, CA or certificate file cannot be read;
/// [`NatsError::Connect`] when no connection could be made within 30 s.
#[tracing::instrument(skip_all, fields(url = %settings.url, prefix = settings.prefix.as_str(), auth = %settings.auth.describe()), err)]
pub async fn connect(settings: NatsSettings) -> Result<Nats, NatsError> {
    let deadline = tokio::time::Instant::now() + INITIAL_CONNECT_TIMEOUT;
    let mut attempt = 0;
    let client = loop {
        let options = connect_options(&settings).await?;
        match options.connect(settings.url.as_str()).await {
            Ok(client) => break client,
            Err(source) => {
                let source = permanent_failure(&settings, source)?;
                if tokio::time::Instant::now() >= deadline {
                    return Err(NatsError::Connect {
                        url: settings.url.clone(),
                        source,
                    });
                }
                tracing::warn!(error = %source, attempt, "nats not reachable yet, retrying");
                tokio::time::sleep(backoff::jittered(attempt, Duration::from_secs(2))).await;
                attempt += 1;
            }
        }
    };
    let jetstream = jetstream::context::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone());
    Ok(Nats {
        client,
        jetstream,
        settings,
    })
}

/// `source` back when retrying may help, or the error to give up with at once when it cannot.
fn permanent_failure(
    settings: &NatsSettings,
    source: async_nats::ConnectError,
) -> Result<async_nats::ConnectError, NatsError> {
    use async_nats::ConnectErrorKind;
    match source.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            Err(NatsError::Authorization {
                url: settings.url.clone(),
                method: settings.auth.describe(),
                source,
            })
        }
        // A failed handshake reaches us as an I/O error wrapping the rustls error.
        ConnectErrorKind::Tls => Err(NatsError::Tls {
            url: settings.url.clone(),
            reason: error_chain(&source),
        }),
        ConnectErrorKind::Io if is_tls_failure(&source) => Err(NatsError::Tls {
            url: settings.url.clone(),
            reason: error_chain(&source),
        }),
        _ => Ok(source),
    }
}

fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && inner.is::<async_nats::rustls::Error>()
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// `error` and its sources, for a message (none of them carries a secret: the server's errors name the
/// violation, rustls's the certificate problem).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(source) = current {
        let next = source.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        current = source.source();
    }
    text
}

async fn connect_options(settings: &NatsSettings) -> Result<async_nats::ConnectOptions, NatsError> {
    let options = async_nats::ConnectOptions::new()
        .name("edict")
        .connection_timeout(REQUEST_TIMEOUT)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| backoff::jittered(attempts, Duration::from_secs(2)))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("nats connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("nats disconnected, reconnecting")
                }
                async_nats::Event::Closed => tracing::info!("nats connection closed"),
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::warn!(subscription = sid, "nats slow consumer")
                }
                event => tracing::warn!(%event, "nats connection event"),
            }
        });
    let options = match &settings.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().clone())
        }
        NatsAuth::Token(token) => options.token(token.expose().clone()),
        NatsAuth::Nkey(seed) => {
            // async-nats only logs a bad seed and connects without signing; refuse it here instead.
            nkeys::KeyPair::from_seed(seed.expose()).map_err(|_| {
                NatsError::Settings("EDICT_NATS_NKEY is not a valid nkey seed".to_owned())
            })?;
            options.nkey(seed.expose().clone())
        }
        NatsAuth::CredsFile(path) => options.credentials_file(path).await.map_err(|error| {
            NatsError::Settings(format!(
                "cannot read the NATS credentials file {}: {error}",
                path.display()
            ))
        })?,
    };
    if !settings.tls.configured() {
        return Ok(options);
    }
    if settings.tls.ca.is_none() && settings.tls.client_cert.is_none() {
        // TLS against the system's roots: async-nats builds that configuration itself.
        return Ok(options.require_tls(true));
    }
    Ok(options
        .require_tls(true)
        .tls_client_config(tls_client_config(&settings.tls)?))
}

/// The client's TLS configuration, built here rather than by async-nats so that the CA replaces the
/// system roots, a bad file is named in the error, and the crypto provider is ring explicitly (rustls
/// panics on its default when a second provider is linked in).
fn tls_client_config(tls: &NatsTls) -> Result<async_nats::rustls::ClientConfig, NatsError> {
    use async_nats::rustls::{self, RootCertStore, pki_types};
    use pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| NatsError::Settings(format!("TLS setup: {error}")))?;
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            let certs = read_certs(ca, "EDICT_NATS_CA")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(NatsError::Settings(format!(
                    "EDICT_NATS_CA {} holds no usable CA certificate",
                    ca.display()
                )));
            }
        }
        None => {
            return Err(NatsError::Settings(
                "a NATS client certificate needs EDICT_NATS_CA too (the CA of the server's certificate)"
                    .to_owned(),
            ));
        }
    }
    let builder = builder.with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "EDICT_NATS_TLS_CERT")?;
            let key = pki_types::PrivateKeyDer::from_pem_file(key).map_err(|error| {
                NatsError::Settings(format!("EDICT_NATS_TLS_KEY {}: {error}", key.display()))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|error| {
                NatsError::Settings(format!("the NATS client certificate and key: {error}"))
            })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(NatsError::Settings(
            "set both EDICT_NATS_TLS_CERT and EDICT_NATS_TLS_KEY, or neither".to_owned(),
        )),
    }
}

fn read_certs(
    path: &std::path::Path,
    variable: &str,
) -> Result<Vec<async_nats::rustls::pki_types::CertificateDer<'static>>, NatsError> {
    use async_nats::rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| NatsError::Settings(format!("{variable} {}: {error}", path.display())))?;
    if certs.is_empty() {
        return Err(NatsError::Settings(format!(
            "{variable} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl Nats {
    /// The core client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (requests time out after 5 s).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The settings this connection was opened with.
    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    /// The name prefix.
    pub fn prefix(&self) -> &NatsPrefix {
        &self.settings.prefix
    }

    /// Creates the events stream and the rule set bucket's stream, or brings their configuration up to
    /// date. Safe to run any number of times, also from several processes at once.
    ///
    /// The events stream keeps messages for [`NatsSettings::events_max_age`] in files, drops a repeated
    /// `Nats-Msg-Id` within [`DUPLICATE_WINDOW`] and answers direct gets. The bucket's stream is what
    /// `create_key_value` would create (one message per key, rollups, no deletes, direct gets, discard
    /// new), made by hand because `create_key_value` fails on nats-server 2.9.
    ///
    /// # Errors
    /// [`NatsError::JetStream`] when a stream cannot be created or updated.
    #[tracing::instrument(skip_all, fields(prefix = self.prefix().as_str()), err)]
    pub async fn ensure_streams(&self) -> Result<(), NatsError> {
        self.ensure_stream(self.events_stream_config()).await?;
        self.ensure_stream(self.rulesets_stream_config()).await
    }

    /// Creates `config`'s stream, or updates it when it exists. A concurrent creator can make the create
    /// fail with "already in use"; the update that follows then succeeds.
    async fn ensure_stream(&self, config: stream::Config) -> Result<(), NatsError> {
        let mut attempt = 0;
        loop {
            match self.jetstream.create_or_update_stream(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) if attempt < 3 => {
                    tracing::debug!(stream = %config.name, %error, "ensuring stream, retrying");
                    tokio::time::sleep(backoff::jittered(attempt, Duration::from_millis(500)))
                        .await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(NatsError::jetstream(
                        format!("ensure stream {}", config.name),
                        error,
                    ));
                }
            }
        }
    }

    fn events_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.prefix().events_stream(),
            description: Some("Edict domain events, relayed from the event store".to_owned()),
            subjects: vec![self.prefix().events_filter()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.settings.events_max_age,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        }
    }

    fn rulesets_stream_config(&self) -> stream::Config {
        let bucket = self.prefix().rulesets_bucket();
        stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("Edict team rule sets (KV bucket)".to_owned()),
            subjects: vec![format!("$KV.{bucket}.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
