//! The relay (role `relay`): tails the global log and publishes every event to JetStream, once, in order.
//!
//! Never publish from a cqrs-es `Query`: a crash between the commit and the dispatch would lose the event.
//! The relay reads what is committed instead, so nothing is lost, and publishes it with a deterministic
//! `Nats-Msg-Id`, so nothing is stored twice.
//!
//! As leader (one per deployment: a PostgreSQL session advisory lock, see `leadership.rs`) the relay
//! loops:
//!
//! 1. read up to a page (512) of events after its checkpoint (`relay_state`, name `relay:<prefix>`);
//! 2. publish the page *pipelined*: send every message (subject
//!    `<prefix>edict.events.<aggregate_type>.<aggregate_id>`, header
//!    `Nats-Msg-Id: <aggregate_type>:<aggregate_id>:<sequence>`, payload the JSON of a
//!    [`RelayedEvent`] whose `previous` is the checkpoint of the event before it), then await every
//!    PubAck in order;
//!    Each message also carries the event's trace context (`traceparent`) and request id
//!    (`Edict-Request-Id`), see `nats::headers`; each publication has its span (`relay publish`, with the
//!    event's `request_id`) under the trace of the command that committed the event;
//! 3. only then store the new checkpoint. A crash before that republishes the page, and the server drops
//!    what it already has (the duplicate window is 10 minutes).
//!
//! A failed publish or store advances nothing: the relay backs off (jittered, at most 2 s) and retries
//! from its checkpoint. An empty page waits a short poll interval before reading again: 2 ms while events
//! flow (one was published in the last second), 10 ms when the log is idle.
//!
//! If the connection breaks in the middle of a page, the server may have stored a later message of the
//! page but not an earlier one; the retry then appends the earlier one after it. Consumers never rely on
//! stream order alone: each message names its predecessor (`previous`), and a consumer that sees a gap
//! catches up from the store.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent, RelayedEvent};
use edict_application::metrics::names;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::headers::{HeaderInjector, REQUEST_ID_HEADER};
use super::{Nats, NatsError, NatsPrefix, backoff, message_id};
use crate::store::Database;
use crate::telemetry;

pub(crate) mod leadership;

use leadership::{Candidate, lock_key};

/// How often a leading relay logs its progress at `info`.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Events read and published per page (default 512).
    pub page_size: usize,
    /// The pause after a read that found nothing new while the log is idle (default 10 ms).
    pub poll_interval: Duration,
    /// The same pause while events flow, i.e. within a second of the last publish (default 2 ms: the
    /// event → read model lag goal is a p99 of 50 ms at 500 commands/s, and a busy log makes these
    /// reads productive).
    pub busy_poll_interval: Duration,
    /// How often a standby tries the leadership lock (default 1 s).
    pub standby_retry: Duration,
    /// How often a leader checks its lock connection (default 500 ms).
    pub lock_check_interval: Duration,
    /// The longest pause between retries after a failure (default 2 s).
    pub max_backoff: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            page_size: 512,
            poll_interval: Duration::from_millis(10),
            busy_poll_interval: Duration::from_millis(2),
            standby_retry: Duration::from_secs(1),
            lock_check_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// The relay's stored progress (`relay_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayState {
    /// The last event published and acknowledged ([`Checkpoint::START`] before the first).
    pub checkpoint: Checkpoint,
    /// How many events have been published in total, by every leader so far.
    pub published: u64,
}

/// What one relay process is doing, as [`NatsRelay::status`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// Whether this relay holds the lock (and publishes).
    pub leading: bool,
    /// The stored progress as this relay last saw it.
    pub state: RelayState,
    /// Events this relay published itself (pages it stored a checkpoint for).
    pub published_here: u64,
    /// Of those, how many the server already had (republished after a crash or a failed page).
    pub duplicates_here: u64,
}

/// Publishes the global log to JetStream; one active instance per deployment (PostgreSQL only).
#[derive(Debug)]
pub struct NatsRelay {
    db: Database,
    pool: PgPool,
    nats: Nats,
    settings: RelaySettings,
    status: watch::Sender<RelayStatus>,
}

/// Why leading stopped.
enum Outcome {
    Shutdown,
    LockLost(String),
}

impl NatsRelay {
    /// A relay over `db`'s log publishing through `nats`.
    ///
    /// # Errors
    /// [`NatsError::NotPostgres`] for an SQLite database.
    pub fn new(db: Database, nats: Nats, settings: RelaySettings) -> Result<NatsRelay, NatsError> {
        let pool = match &db {
            Database::Postgres(pool) => pool.clone(),
            Database::Sqlite(_) => return Err(NatsError::NotPostgres(db.kind())),
        };
        Ok(NatsRelay {
            db,
            pool,
            nats,
            settings,
            status: watch::channel(RelayStatus::default()).0,
        })
    }

    /// Follows what the relay is doing (for health endpoints and tests).
    pub fn status(&self) -> watch::Receiver<RelayStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` resolves: stands by until it wins the lock, then publishes until it loses
    /// the lock or shuts down. Every failure is logged and retried; on shutdown a leader gives the lock
    /// back at once.
    #[tracing::instrument(skip_all, fields(prefix = self.nats.prefix().as_str()))]
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let key = lock_key(self.nats.prefix());
        let options = (*self.pool.connect_options()).clone();
        let mut candidate = Candidate::new(options, key);
        loop {
            let mut leadership = tokio::select! {
                () = &mut shutdown => return,
                leadership = candidate.acquire(self.settings.standby_retry) => leadership,
            };
            tracing::info!(key, "relay lock acquired; leading");
            self.status.send_modify(|status| status.leading = true);
            let outcome = tokio::select! {
                () = &mut shutdown => Outcome::Shutdown,
                reason = leadership.lost(self.settings.lock_check_interval) => Outcome::LockLost(reason),
                never = self.lead() => match never {},
            };
            self.status.send_modify(|status| status.leading = false);
            match outcome {
                Outcome::Shutdown => {
                    leadership.release().await;
                    tracing::info!("relay stopped; lock released");
                    return;
                }
                Outcome::LockLost(reason) => {
                    tracing::error!(%reason, "relay lock connection lost; stopped publishing, standing by");
                }
            }
        }
    }

    /// Publishes page after page, forever (the caller stops it by dropping the future).
    async fn lead(&self) -> Infallible {
        let mut state: Option<RelayState> = None;
        let mut streams_ready = false;
        let mut failures = 0;
        let mut last_log = Instant::now();
        let mut last_logged = None;
        let mut last_published = Instant::now();
        loop {
            match self.step(&mut state, &mut streams_ready).await {
                Ok(published) => {
                    failures = 0;
                    metrics::counter!(names::RELAY_PUBLISHED).increment(published as u64);
                    if published > 0 {
                        last_published = Instant::now();
                    }
                    if last_log.elapsed() >= PROGRESS_LOG_INTERVAL
                        && let Some(state) = state
                        && last_logged != Some(state)
                    {
                        last_logged = Some(state);
                        let status = *self.status.borrow();
                        tracing::info!(
                            published = state.published,
                            published_here = status.published_here,
                            duplicates_here = status.duplicates_here,
                            checkpoint.transaction_id = state.checkpoint.transaction_id,
                            checkpoint.position = state.checkpoint.position,
                            "relay progress"
                        );
                        last_log = Instant::now();
                    }
                    if published == 0 {
                        let pause = if last_published.elapsed() < Duration::from_secs(1) {
                            self.settings.busy_poll_interval
                        } else {
                            self.settings.poll_interval
                        };
                        tokio::time::sleep(pause).await;
                    }
                }
                Err(error) => {
                    metrics::counter!(names::RELAY_PUBLISH_ERRORS).increment(1);
                    let delay = backoff::jittered(failures, self.settings.max_backoff);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in = ?delay,
                        "relay page failed; retrying from the stored checkpoint"
                    );
                    failures += 1;
                    state = None;
                    streams_ready = false;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Publishes one page; returns how many events it published (0 when the log had nothing new).
    async fn step(
        &self,
        state: &mut Option<RelayState>,
        streams_ready: &mut bool,
    ) -> anyhow::Result<usize> {
        use anyhow::Context as _;
        if !*streams_ready {
            self.nats.ensure_streams().await?;
            *streams_ready = true;
        }
        let current = match *state {
            Some(current) => current,
            None => {
                let loaded = load_state(&self.pool, self.nats.prefix()).await?;
                self.status.send_modify(|status| status.state = loaded);
                *state = Some(loaded);
                loaded
            }
        };
        let page = self
            .db
            .read_all(current.checkpoint, self.settings.page_size)
            .await
            .context("read the global log")?;
        if page.is_empty() {
            return Ok(0);
        }
        let count = page.len();
        let (checkpoint, duplicates) = self.publish(current.checkpoint, page).await?;
        let next = RelayState {
            checkpoint,
            published: current.published + count as u64,
        };
        if store_state(&self.pool, self.nats.prefix(), next).await? {
            *state = Some(next);
            self.status.send_modify(|status| {
                status.state = next;
                status.published_here += count as u64;
                status.duplicates_here += duplicates;
            });
            tracing::debug!(
                count,
                duplicates,
                checkpoint.transaction_id = checkpoint.transaction_id,
                checkpoint.position = checkpoint.position,
                "page published"
            );
        } else {
            // Another relay stored a later checkpoint: this one is no longer the only leader (its lock
            // connection is about to be found dead). Reload and let the lock check decide.
            tracing::warn!("relay checkpoint moved by another relay; reloading");
            *state = None;
        }
        Ok(count)
    }

    /// Sends every event of `page` without waiting, then awaits the PubAcks in order. Returns the
    /// checkpoint of the last event and how many the server reported as duplicates.
    async fn publish(
        &self,
        after: Checkpoint,
        page: Vec<RecordedEvent>,
    ) -> anyhow::Result<(Checkpoint, u64)> {
        use anyhow::Context as _;
        let jetstream = self.nats.jetstream();
        let prefix = self.nats.prefix();
        let mut previous = after;
        let mut acks = Vec::with_capacity(page.len());
        for event in page {
            let subject = prefix.event_subject(&event.aggregate_type, &event.aggregate_id);
            let id = message_id(&event.aggregate_type, &event.aggregate_id, event.sequence);
            let checkpoint = event.checkpoint();
            let span = publish_span(&event);
            let headers = trace_headers(&span, &event.metadata);
            let relayed = RelayedEvent { previous, event };
            let payload = serde_json::to_vec(&relayed).context("encode a relayed event")?;
            let ack = jetstream
                .send_publish(
                    subject,
                    PublishMessage::build()
                        .headers(headers)
                        .payload(payload.into())
                        .message_id(id.as_str()),
                )
                .instrument(span.clone())
                .await
                .with_context(|| format!("publish {id}"))?;
            span.in_scope(|| tracing::debug!(message_id = id.as_str(), "event published"));
            acks.push((id, ack));
            previous = checkpoint;
        }
        let mut duplicates = 0;
        for (id, ack) in acks {
            let ack = ack
                .await
                .with_context(|| format!("acknowledgement of {id}"))?;
            if ack.duplicate {
                duplicates += 1;
            }
        }
        Ok((previous, duplicates))
    }
}

/// The span of one event's publication: under the trace of the command that committed it (its
/// metadata's `traceparent`), with its request id on every log line.
fn publish_span(event: &RecordedEvent) -> tracing::Span {
    let field = |name: &str| event.metadata.get(name).and_then(|value| value.as_str());
    let span = tracing::info_span!(
        "relay publish",
        request_id = field("request_id").unwrap_or(""),
        aggregate_type = event.aggregate_type.as_str(),
        aggregate_id = event.aggregate_id.as_str(),
        sequence = event.sequence,
        position = event.global_position,
    );
    telemetry::set_remote_parent(&span, field(telemetry::TRACEPARENT));
    span
}

/// The headers of an event's message: `traceparent` (the publication span's context when traces are
/// exported, else the stored one, passed on) and `Edict-Request-Id`.
fn trace_headers(span: &tracing::Span, metadata: &serde_json::Value) -> HeaderMap {
    let field = |name: &str| metadata.get(name).and_then(|value| value.as_str());
    let mut headers = HeaderMap::new();
    telemetry::inject(span, &mut HeaderInjector(&mut headers));
    if headers.get(telemetry::TRACEPARENT).is_none()
        && let Some(traceparent) = field(telemetry::TRACEPARENT)
    {
        headers.insert(telemetry::TRACEPARENT, traceparent);
    }
    if let Some(request_id) = field("request_id").filter(|id| !id.is_empty()) {
        headers.insert(REQUEST_ID_HEADER, request_id);
    }
    headers
}

/// The stored progress of the relay of `prefix` ([`RelayState::default`] before its first page).
///
/// # Errors
/// [`NatsError::NotPostgres`] for SQLite, [`NatsError::Store`] when the query fails,
/// [`NatsError::CorruptState`] for negative stored values.
pub async fn relay_checkpoint(db: &Database, prefix: &NatsPrefix) -> Result<RelayState, NatsError> {
    match db {
        Database::Postgres(pool) => load_state(pool, prefix).await,
        Database::Sqlite(_) => Err(NatsError::NotPostgres(db.kind())),
    }
}

async fn load_state(pool: &PgPool, prefix: &NatsPrefix) -> Result<RelayState, NatsError> {
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT transaction_id, position, published FROM relay_state WHERE name = $1",
    )
    .bind(prefix.relay_name())
    .fetch_optional(pool)
    .await
    .map_err(NatsError::Store)?;
    let Some((transaction_id, position, published)) = row else {
        return Ok(RelayState::default());
    };
    let transaction_id = u64::try_from(transaction_id)
        .map_err(|_| NatsError::CorruptState(format!("transaction id {transaction_id}")))?;
    let published = u64::try_from(published)
        .map_err(|_| NatsError::CorruptState(format!("published count {published}")))?;
    Ok(RelayState {
        checkpoint: Checkpoint {
            transaction_id,
            position,
        },
        published,
    })
}

/// Stores `state` unless a later checkpoint is stored already (a checkpoint never moves back). Returns
/// whether it was stored.
async fn store_state(
    pool: &PgPool,
    prefix: &NatsPrefix,
    state: RelayState,
) -> Result<bool, NatsError> {
    // xid8 values stay far below 2^63 (an epoch would have to wrap 2^31 times).
    let transaction_id = i64::try_from(state.checkpoint.transaction_id).map_err(|_| {
        NatsError::CorruptState(format!(
            "transaction id {}",
            state.checkpoint.transaction_id
        ))
    })?;
    let published = i64::try_from(state.published).unwrap_or(i64::MAX);
    let stored = sqlx::query(
        "INSERT INTO relay_state (name, transaction_id, position, published, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE
            SET transaction_id = EXCLUDED.transaction_id, position = EXCLUDED.position,
                published = EXCLUDED.published, updated_at = EXCLUDED.updated_at
          WHERE (relay_state.transaction_id, relay_state.position)
              < (EXCLUDED.transaction_id, EXCLUDED.position)",
    )
    .bind(prefix.relay_name())
    .bind(transaction_id)
    .bind(state.checkpoint.position)
    .bind(published)
    .bind(chrono::Utc::now().timestamp())
    .execute(pool)
    .await
    .map_err(NatsError::Store)?;
    Ok(stored.rows_affected() == 1)
}
