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
//! - [`rulesets`]: [`KvRulesetPublisher`] and [`watch_rulesets`].
//!
//! nats-server 2.9 (Debian 12's) cannot answer async-nats 0.51's account-info request in a form it
//! parses, so nothing here calls it: the KV bucket's stream is created by hand (see
//! [`Nats::ensure_streams`]) instead of through `create_key_value`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

pub mod projector;
pub mod relay;
pub mod rulesets;

pub(crate) mod backoff;

pub use projector::{ProjectorError, ProjectorSettings, run_projector};
pub use relay::{NatsRelay, RelaySettings, RelayState, RelayStatus, relay_checkpoint};
pub use rulesets::{KvRulesetPublisher, watch_rulesets};

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

/// Where and under which names to use NATS.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The server, for example `nats://127.0.0.1:4222` (`EDICT_NATS_URL`).
    pub url: String,
    /// The name prefix (`EDICT_NATS_PREFIX`).
    pub prefix: NatsPrefix,
    /// How long the events stream keeps messages (default 7 days).
    pub events_max_age: Duration,
}

impl NatsSettings {
    /// Settings for `url` and `prefix`, with the default retention.
    ///
    /// # Errors
    /// [`NatsError::InvalidPrefix`] when `prefix` is not a valid [`NatsPrefix`].
    pub fn new(url: impl Into<String>, prefix: &str) -> Result<NatsSettings, NatsError> {
        Ok(NatsSettings {
            url: url.into(),
            prefix: NatsPrefix::parse(prefix)?,
            events_max_age: DEFAULT_EVENTS_MAX_AGE,
        })
    }

    /// `EDICT_NATS_URL` (default [`DEFAULT_NATS_URL`]) and `EDICT_NATS_PREFIX` (default empty).
    ///
    /// # Errors
    /// [`NatsError::InvalidPrefix`] when `EDICT_NATS_PREFIX` is not a valid [`NatsPrefix`].
    pub fn from_env() -> Result<NatsSettings, NatsError> {
        let url = std::env::var("EDICT_NATS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
        let prefix = std::env::var("EDICT_NATS_PREFIX").unwrap_or_default();
        NatsSettings::new(url, prefix.trim())
    }
}

/// An open connection: the client and its JetStream context. Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    settings: NatsSettings,
}

/// Connects to `settings.url`. While the server is not reachable yet, the first connection is retried
/// with backoff for up to 30 s; once connected, the client reconnects forever (jittered backoff capped
/// at 2 s) and logs every connection event.
///
/// # Errors
/// [`NatsError::Connect`] when no connection could be made within 30 s.
#[tracing::instrument(skip_all, fields(url = %settings.url, prefix = settings.prefix.as_str()), err)]
pub async fn connect(settings: NatsSettings) -> Result<Nats, NatsError> {
    let deadline = tokio::time::Instant::now() + INITIAL_CONNECT_TIMEOUT;
    let mut attempt = 0;
    let client = loop {
        match connect_options().connect(settings.url.as_str()).await {
            Ok(client) => break client,
            Err(source) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %source, attempt, "nats not reachable yet, retrying");
                tokio::time::sleep(backoff::jittered(attempt, Duration::from_secs(2))).await;
                attempt += 1;
            }
            Err(source) => {
                return Err(NatsError::Connect {
                    url: settings.url.clone(),
                    source,
                });
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

fn connect_options() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
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
        })
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
mod tests {
    use super::*;

    #[test]
    fn a_prefix_takes_letters_digits_underscores_and_dashes() {
        assert!(NatsPrefix::parse("").is_ok());
        assert!(NatsPrefix::parse("prod_").is_ok());
        assert!(NatsPrefix::parse("t0123abc-x_").is_ok());
    }

    #[test]
    fn a_prefix_with_dots_spaces_or_wildcards_is_rejected() {
        for bad in ["a.b", "a b", "a*", "a>", "ä", "a/b", &"x".repeat(65)] {
            assert!(
                matches!(NatsPrefix::parse(bad), Err(NatsError::InvalidPrefix(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_name_carries_the_prefix() {
        let prefix = NatsPrefix::parse("t1_").unwrap_or_default();
        assert_eq!(prefix.events_stream(), "t1_EDICT_EVENTS");
        assert_eq!(prefix.events_filter(), "t1_edict.events.>");
        assert_eq!(
            prefix.event_subject("Rule", "r1"),
            "t1_edict.events.Rule.r1"
        );
        assert_eq!(
            prefix.projection_consumer("rule_catalog"),
            "t1_projection_rule_catalog"
        );
        assert_eq!(prefix.rulesets_bucket(), "t1_rulesets");
        assert_eq!(prefix.relay_name(), "relay:t1_");
    }

    #[test]
    fn an_aggregate_id_becomes_one_subject_token() {
        let prefix = NatsPrefix::default();
        assert_eq!(
            prefix.event_subject("Rule", "a.b *>c"),
            "edict.events.Rule.a_b___c"
        );
        assert_eq!(prefix.event_subject("Rule", ""), "edict.events.Rule._");
        assert_eq!(message_id("Rule", "a.b", 3), "Rule:a.b:3");
    }
}
