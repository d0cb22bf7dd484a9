//! The projector (role `projector`): feeds one projection from JetStream.
//!
//! The [`ProjectionRunner`] applies events and knows exactly where its projection stands; this module is
//! only the transport. On start it catches up from the store (the truth) and republishes the rule sets,
//! then consumes the durable pull consumer `<prefix>projection_<name>` (explicit ack, every message from
//! the stream's start when first created, ack wait 30 s, unlimited redeliveries, at most 1,000 unacked):
//!
//! - each message is decoded as a [`RelayedEvent`] and handed to [`ProjectionRunner::handle`], which
//!   applies it, recognises a redelivery, or catches up from the store when the message's predecessor
//!   is not the projection's checkpoint (a lost or reordered message, a consumer behind retention);
//!   messages that have arrived together are handled as a batch: only the latest event goes to the
//!   runner, which then catches up from the store in batched transactions (see `Projector::process`);
//! - each message's event is handled in a span (`project`, with the event's `request_id`) under the
//!   trace context of the message's `traceparent` header (see `nats::headers`);
//! - the messages are acked once the runner returned `Ok` (applied, duplicate or caught up all mean
//!   done);
//! - a transient store failure naks it with a delay and pauses the consumer for as long (jittered
//!   backoff), so a database outage is not hammered;
//! - a projection that stopped (an event it cannot apply) ends the consumer: the message stays unacked,
//!   the error is logged and in the projection's status, until the projection is rebuilt;
//! - a message that is not a `RelayedEvent` is terminated (never redelivered); the gap it leaves is
//!   found with the next message and filled from the store;
//! - when the message stream fails (server restart, consumer deleted) the consumer is opened again
//!   with jittered backoff; meanwhile, and whenever no message came for a while, the projection catches
//!   up from the store directly, so it advances even while NATS or the relay is down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use edict_application::event_log::RelayedEvent;
use futures::{FutureExt, StreamExt};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Nats, NatsError, backoff, headers};
use crate::projection::{ProjectionRunner, RunnerError};

/// How the projector consumes.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// Messages asked for per pull request, and the most handled as one batch (default 200).
    pub batch: usize,
    /// Unacknowledged messages the server lets the consumer have (default 1,000).
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before redelivering (default 30 s).
    pub ack_wait: Duration,
    /// The idle heartbeat of pull requests: a missed one means the connection or the consumer is gone
    /// (default 5 s).
    pub heartbeat: Duration,
    /// With no message for this long, catch up from the store anyway (default 30 s).
    pub idle_catch_up: Duration,
    /// The longest pause between retries (default 2 s).
    pub max_backoff: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        ProjectorSettings {
            batch: 200,
            max_ack_pending: 1_000,
            ack_wait: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            idle_catch_up: Duration::from_secs(30),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Why a projector ended before its shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The projection cannot apply an event and stopped there (it never skips one); rebuild it.
    #[error("projection {projection} stopped at position {position}: {reason}")]
    Stopped {
        /// The projection.
        projection: &'static str,
        /// The global position of the event it could not apply.
        position: i64,
        /// Why.
        reason: String,
    },
}

/// What to do after one step.
enum Next {
    Continue,
    Pause,
    Reopen,
}

/// Runs `runner`'s projection from the stream until `shutdown` resolves (then `Ok`). Transient failures
/// of NATS or the database are logged and retried for ever.
///
/// # Errors
/// [`ProjectorError::Stopped`] when the projection stopped at an event it cannot apply.
#[tracing::instrument(skip_all, fields(projection = runner.name(), prefix = nats.prefix().as_str()))]
pub async fn run_projector(
    nats: Nats,
    runner: Arc<ProjectionRunner>,
    settings: ProjectorSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectorError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let projector = Projector {
        nats,
        runner,
        settings,
    };
    tokio::select! {
        () = &mut shutdown => Ok(()),
        result = projector.run() => result,
    }
}

struct Projector {
    nats: Nats,
    runner: Arc<ProjectionRunner>,
    settings: ProjectorSettings,
}

impl Projector {
    async fn run(&self) -> Result<(), ProjectorError> {
        self.start().await?;
        let mut failures = 0;
        loop {
            match self.open().await {
                Ok(consumer) => {
                    let (handled, error) = self.consume(&consumer).await?;
                    if handled > 0 {
                        failures = 0;
                    }
                    tracing::warn!(%error, handled, "message stream failed; reopening the consumer");
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot open the consumer");
                }
            }
            // Meanwhile the store is still there: keep the projection moving without the transport.
            self.catch_up().await?;
            tokio::time::sleep(backoff::jittered(failures, self.settings.max_backoff)).await;
            failures += 1;
        }
    }

    /// Creates the state row, catches up from the store and republishes the rule sets, retrying
    /// transient failures.
    async fn start(&self) -> Result<(), ProjectorError> {
        let mut failures = 0;
        loop {
            let started = async {
                self.runner.ensure().await?;
                self.runner.catch_up().await
            }
            .await;
            match started {
                Ok(events) => {
                    tracing::info!(events, "projection caught up from the store");
                    break;
                }
                Err(error) => self.transient(error)?,
            }
            tokio::time::sleep(backoff::jittered(failures, self.settings.max_backoff)).await;
            failures += 1;
        }
        match self.runner.republish_all().await {
            Ok(published) => tracing::debug!(published, "rule sets republished"),
            Err(error) => tracing::warn!(%error, "cannot republish every rule set"),
        }
        Ok(())
    }

    /// The durable consumer, created (and the streams with it) when missing.
    async fn open(&self) -> Result<PullConsumer, NatsError> {
        let prefix = self.nats.prefix();
        let name = prefix.projection_consumer(self.runner.name());
        let stream_name = prefix.events_stream();
        let stream = match self.nats.jetstream().get_stream(&stream_name).await {
            Ok(stream) => stream,
            Err(_) => {
                self.nats.ensure_streams().await?;
                self.nats
                    .jetstream()
                    .get_stream(&stream_name)
                    .await
                    .map_err(|error| {
                        NatsError::jetstream(format!("open stream {stream_name}"), error)
                    })?
            }
        };
        stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("Edict projection {}", self.runner.name())),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: self.settings.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: self.settings.max_ack_pending,
                    filter_subject: prefix.events_filter(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| NatsError::jetstream(format!("open consumer {name}"), error))
    }

    /// Consumes until the message stream fails: returns how many messages it handled and why it ended.
    /// Ends early (`Err`) only when the projection stops.
    async fn consume(
        &self,
        consumer: &PullConsumer,
    ) -> Result<(u64, async_nats::Error), ProjectorError> {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(self.settings.batch)
            .heartbeat(self.settings.heartbeat)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(error) => return Ok((0, error.into())),
        };
        tracing::info!("consuming");
        let mut handled = 0;
        let mut failures = 0;
        loop {
            let next = tokio::time::timeout(self.settings.idle_catch_up, messages.next()).await;
            let first = match next {
                Err(_idle) => {
                    self.catch_up().await?;
                    continue;
                }
                Ok(None) => return Ok((handled, "message stream ended".into())),
                Ok(Some(Err(error))) => return Ok((handled, error.into())),
                Ok(Some(Ok(message))) => message,
            };
            // Whatever else has arrived already joins the batch (one message at a low rate, up to a
            // pull's worth under load), without waiting for more.
            let mut batch = vec![first];
            let mut ended: Option<async_nats::Error> = None;
            while batch.len() < self.settings.batch {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    Some(Some(Err(error))) => {
                        ended = Some(error.into());
                        break;
                    }
                    Some(None) => {
                        ended = Some("message stream ended".into());
                        break;
                    }
                    None => break,
                }
            }
            match self.process(&batch, failures).await? {
                Next::Continue => {
                    handled += batch.len() as u64;
                    failures = 0;
                }
                Next::Pause => {
                    tokio::time::sleep(backoff::jittered(failures, self.settings.max_backoff))
                        .await;
                    failures += 1;
                }
                Next::Reopen => return Ok((handled, "a message could not be acknowledged".into())),
            }
            if let Some(error) = ended {
                return Ok((handled, error));
            }
        }
    }

    /// Hands a batch of messages to the runner and acks, naks or terminates them.
    ///
    /// Only the message with the latest event is handed over: once the runner returns `Ok` for it, the
    /// projection is at or past that event, and since it applies the log in order without gaps, every
    /// earlier event of the batch is applied too. When the projection is exactly one event behind that
    /// is one apply; when it is further behind, the runner catches up from the store in batched
    /// transactions, which is what lets a projector that fell behind (or runs at a high rate) keep up.
    async fn process(
        &self,
        batch: &[async_nats::jetstream::Message],
        failures: usize,
    ) -> Result<Next, ProjectorError> {
        let mut decoded = Vec::with_capacity(batch.len());
        for message in batch {
            match serde_json::from_slice::<RelayedEvent>(&message.payload) {
                Ok(relayed) => decoded.push((message, relayed)),
                Err(error) => {
                    tracing::error!(
                        subject = %message.subject,
                        %error,
                        "message is not a relayed event; terminated (the store fills the gap)"
                    );
                    if let Next::Reopen = acked(message.ack_with(AckKind::Term).await) {
                        return Ok(Next::Reopen);
                    }
                }
            }
        }
        let Some((latest_message, latest)) = decoded
            .iter()
            .max_by_key(|(_, relayed)| relayed.event.checkpoint())
        else {
            return Ok(Next::Continue);
        };
        // Each message's event gets its span under the trace it came with; the batch runs in the span
        // of its latest event.
        for (message, relayed) in &decoded {
            if relayed.event.checkpoint() != latest.event.checkpoint() {
                message_span(message, relayed)
                    .in_scope(|| tracing::debug!("event projected in a batch"));
            }
        }
        let span = message_span(latest_message, latest);
        async {
            match self.runner.handle(latest).await {
                Ok(handled) => {
                    tracing::trace!(
                        ?handled,
                        messages = decoded.len(),
                        position = latest.event.global_position,
                        "handled"
                    );
                    for (message, _) in &decoded {
                        if let Next::Reopen = acked(message.ack().await) {
                            return Ok(Next::Reopen);
                        }
                    }
                    Ok(Next::Continue)
                }
                Err(RunnerError::Store(reason)) => {
                    let delay = backoff::jittered(failures, self.settings.max_backoff);
                    tracing::warn!(
                        %reason,
                        position = latest.event.global_position,
                        retry_in = ?delay,
                        "store unavailable; messages will be redelivered"
                    );
                    // If a nak is lost the server redelivers after the ack wait anyway.
                    for (message, _) in &decoded {
                        let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                    }
                    Ok(Next::Pause)
                }
                Err(RunnerError::Stopped { position, reason }) => {
                    Err(self.stopped(position, reason))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Catches up from the store; only a stopped projection is an error (a transient failure is logged).
    async fn catch_up(&self) -> Result<(), ProjectorError> {
        match self.runner.catch_up().await {
            Ok(0) => Ok(()),
            Ok(events) => {
                tracing::info!(events, "caught up from the store");
                Ok(())
            }
            Err(error) => self.transient(error),
        }
    }

    /// Logs a transient runner error; turns `Stopped` into the projector's error.
    fn transient(&self, error: RunnerError) -> Result<(), ProjectorError> {
        match error {
            RunnerError::Store(reason) => {
                tracing::warn!(%reason, "projection store unavailable; retrying");
                Ok(())
            }
            RunnerError::Stopped { position, reason } => Err(self.stopped(position, reason)),
        }
    }

    fn stopped(&self, position: i64, reason: String) -> ProjectorError {
        tracing::error!(
            position,
            %reason,
            "projection stopped at an event it cannot apply; consumer ended (rebuild the projection)"
        );
        ProjectorError::Stopped {
            projection: self.runner.name(),
            position,
            reason,
        }
    }
}

/// The span of one message's event: a child of the trace context in its headers (the relay's
/// publication), with the event's request id (its metadata's, else the `Edict-Request-Id` header).
fn message_span(message: &async_nats::jetstream::Message, relayed: &RelayedEvent) -> tracing::Span {
    let headers = message.headers.as_ref();
    let request_id = relayed
        .event
        .metadata
        .get("request_id")
        .and_then(|id| id.as_str())
        .or_else(|| headers::request_id(headers))
        .unwrap_or("");
    let span = tracing::info_span!(
        "project",
        request_id,
        event_type = relayed.event.event_type.as_str(),
        aggregate_id = relayed.event.aggregate_id.as_str(),
        position = relayed.event.global_position,
    );
    if let Some(parent) = headers::trace_context(headers) {
        // Fails only without an OpenTelemetry layer (traces off).
        let _ = span.set_parent(parent);
    }
    span
}

/// Whether an ack went out. A lost ack only means a redelivery, which the runner recognises; a failed
/// one means the connection is in trouble, so the consumer is reopened.
fn acked(result: Result<(), async_nats::Error>) -> Next {
    match result {
        Ok(()) => Next::Continue,
        Err(error) => {
            tracing::warn!(%error, "cannot acknowledge a message");
            Next::Reopen
        }
    }
}
