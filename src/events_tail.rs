//! `edict events tail`: follows the global log and prints every event as it is committed, one line per
//! event (`--output text`) or one JSON object per line (`--output json`, NDJSON), until interrupted
//! (Ctrl-C or SIGTERM end it with status 0).
//!
//! It reads from one of two sources:
//! - the event store itself (the default, like `edict projections`: `--database-url`, or the embedded
//!   store in `--data-dir`), through the commit-ordered reader the projections use;
//! - a running API (`--server URL --token TOKEN`, an auditor's or org_admin's access token), polling
//!   `GET /api/v1/events`.
//!
//! Either way it resumes strictly after the last event it printed, so no event is skipped or printed
//! twice. It starts after the last event committed when it starts (only new events; through the API,
//! after the last readable one) unless `--from <position>` (0: the whole log) or `--since <time>` (from
//! the first event recorded then) says otherwise. Filters are those of the API. A read that fails once
//! the tail has started is logged and retried.

use crate::output::{self, OutputFormat};
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use edict_application::event_log::{Checkpoint, EventLog, LogFilter, RecordedEvent};
use edict_infrastructure::store::Database;
use std::path::PathBuf;
use std::time::Duration;

/// Events read per poll.
const PAGE: usize = 500;

/// Arguments of `edict events tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "EDICT_DATA_DIR", default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// `postgres://…` to read PostgreSQL instead of the embedded SQLite store.
    #[arg(long, env = "EDICT_DATABASE_URL")]
    database_url: Option<String>,
    /// Follow a running Edict API (e.g. `http://127.0.0.1:8080`) instead of reading the store.
    #[arg(long, requires = "token")]
    server: Option<String>,
    /// An auditor's or org_admin's access token, for `--server`.
    #[arg(long, env = "EDICT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: crate::api_client::ServerArgs,
    /// Start after this global position (0: the whole log). Default: the end of the log, or the
    /// beginning with `--since`.
    #[arg(long)]
    from: Option<i64>,
    /// Only events recorded at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Only events recorded at or before this RFC 3339 time.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Only events of these aggregate types (`Rule`, `Team`, `ChangeRequest`, `User`, `Agent`;
    /// comma-separated).
    #[arg(long, value_delimiter = ',')]
    aggregate_type: Vec<String>,
    /// Only events of this aggregate.
    #[arg(long)]
    aggregate_id: Option<String>,
    /// Only events of this actor (`user:<id>`, `agent:<id>`, `system:<reason>`).
    #[arg(long)]
    actor: Option<String>,
    /// Only events of these types (comma-separated).
    #[arg(long, value_delimiter = ',')]
    event_type: Vec<String>,
    /// `text` (one line per event) or `json` (NDJSON).
    #[arg(long, default_value = "text")]
    output: OutputFormat,
    /// How often to look for new events, in milliseconds.
    #[arg(long, default_value_t = 250)]
    interval_ms: u64,
}

impl TailArgs {
    fn filter(&self) -> LogFilter {
        LogFilter {
            aggregate_types: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            actor: self.actor.clone(),
            event_types: self.event_type.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

/// Follows the log until interrupted.
///
/// # Errors
/// When the source cannot be opened or the start position does not exist.
pub async fn run(args: TailArgs) -> Result<()> {
    if args.from.is_some_and(|from| from < 0) {
        bail!("--from must be 0 or more");
    }
    let follow = async {
        match &args.server {
            Some(server) => {
                let token = args.token.clone().unwrap_or_default();
                follow_api(&args, server.trim_end_matches('/'), &token).await
            }
            None => follow_store(&args).await,
        }
    };
    tokio::select! {
        result = follow => result,
        () = interrupted() => Ok(()),
    }
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Prints one event; `Ok(false)` once nobody reads stdout any more (then the tail ends).
fn print(event: &RecordedEvent, format: OutputFormat) -> Result<bool> {
    let line = match format {
        OutputFormat::Json => serde_json::to_string(event)?,
        OutputFormat::Text => {
            let meta = |name: &str| event.metadata[name].as_str().unwrap_or("-").to_owned();
            format!(
                "{:>8}  {}  {}/{} #{}  {}  by {} ({}, request {})",
                event.global_position,
                event
                    .recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                event.aggregate_type,
                event.aggregate_id,
                event.sequence,
                event.event_type,
                meta("actor"),
                meta("source"),
                meta("request_id"),
            )
        }
    };
    output::stream_line(&line).context("cannot write to stdout")
}

async fn follow_store(args: &TailArgs) -> Result<()> {
    let database = crate::open_store_at(&args.data_dir, args.database_url.as_deref()).await?;
    let filter = args.filter();
    let mut after = match args.from {
        Some(0) => Checkpoint::START,
        Some(position) => {
            let event = database
                .event_at(position)
                .await
                .context("cannot read the event log")?
                .with_context(|| format!("no event has global position {position}"))?;
            readable(&database, &event).await?
        }
        None if args.since.is_some() => Checkpoint::START,
        None => end_of_log(&database).await?,
    };
    let interval = Duration::from_millis(args.interval_ms.max(10));
    loop {
        match database.read_filtered(after, &filter, PAGE).await {
            Ok(events) => {
                for event in &events {
                    if !print(event, args.output)? {
                        return Ok(());
                    }
                    after = event.checkpoint();
                }
                if events.len() == PAGE {
                    continue;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the event log; retrying"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits until `event` is readable in the global log (below its horizon) and answers its checkpoint:
/// from then on, nothing can still commit before it in the log's order, so following the log after it
/// skips nothing.
async fn readable(database: &Database, event: &RecordedEvent) -> Result<Checkpoint> {
    let checkpoint = event.checkpoint();
    let just_before = Checkpoint {
        transaction_id: checkpoint.transaction_id,
        position: checkpoint.position - 1,
    };
    let only_it = LogFilter {
        aggregate_types: vec![event.aggregate_type.clone()],
        aggregate_id: Some(event.aggregate_id.clone()),
        ..LogFilter::default()
    };
    loop {
        let found = database
            .read_filtered(just_before, &only_it, 1)
            .await
            .context("cannot read the event log")?;
        if found.first().map(RecordedEvent::checkpoint) == Some(checkpoint) {
            return Ok(checkpoint);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The checkpoint of the last event committed so far, once it is readable: every event committed
/// before the tail started is behind it.
async fn end_of_log(database: &Database) -> Result<Checkpoint> {
    let last = database
        .last_position()
        .await
        .context("cannot read the event log")?;
    let Some(position) = last else {
        return Ok(Checkpoint::START);
    };
    let event = database
        .event_at(position)
        .await
        .context("cannot read the event log")?
        .context("the last event vanished")?;
    readable(database, &event).await
}

/// A page of `GET /api/v1/events`: the events and the cursor after each.
#[derive(serde::Deserialize)]
struct ApiPage {
    items: Vec<ApiEvent>,
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct ApiEvent {
    cursor: String,
    #[serde(flatten)]
    event: RecordedEvent,
}

/// The API's answer to one poll.
async fn poll(
    client: &reqwest::Client,
    server: &str,
    token: &str,
    query: &[(&str, String)],
) -> Result<ApiPage> {
    let response = client
        .get(format!("{server}/api/v1/events"))
        .bearer_auth(token)
        .query(query)
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("GET /api/v1/events answered {status}: {body}");
    }
    response
        .json()
        .await
        .context("GET /api/v1/events answered something else than a page of events")
}

async fn follow_api(args: &TailArgs, server: &str, token: &str) -> Result<()> {
    let client = crate::api_client::client(server, &args.tls)?;
    let mut filters: Vec<(&str, String)> = vec![("limit", PAGE.to_string())];
    if !args.aggregate_type.is_empty() {
        filters.push(("aggregate_type", args.aggregate_type.join(",")));
    }
    if let Some(id) = &args.aggregate_id {
        filters.push(("aggregate_id", id.clone()));
    }
    if let Some(actor) = &args.actor {
        filters.push(("actor", actor.clone()));
    }
    if !args.event_type.is_empty() {
        filters.push(("event_type", args.event_type.join(",")));
    }
    if let Some(since) = args.since {
        filters.push(("since", since.to_rfc3339()));
    }
    if let Some(until) = args.until {
        filters.push(("until", until.to_rfc3339()));
    }
    // Where to resume: after a cursor the API gave, or (before the first event) after a position.
    let mut cursor: Option<String> = None;
    let mut from = args.from;
    if from.is_none() && args.since.is_none() {
        // The end of the log: page through it without filters, keeping the last cursor.
        let mut query = vec![("limit", "1000".to_owned())];
        loop {
            let page = poll(&client, server, token, &query).await?;
            if let Some(last) = page.items.last() {
                cursor = Some(last.cursor.clone());
            }
            match page.next {
                Some(next) => query = vec![("limit", "1000".to_owned()), ("after", next)],
                None => break,
            }
        }
        from = cursor.is_none().then_some(0);
    }
    let interval = Duration::from_millis(args.interval_ms.max(10));
    let mut started = false;
    loop {
        let mut query = filters.clone();
        match (&cursor, from) {
            (Some(cursor), _) => query.push(("after", cursor.clone())),
            (None, Some(position)) => query.push(("after_position", position.to_string())),
            (None, None) => {}
        }
        match poll(&client, server, token, &query).await {
            Ok(page) => {
                started = true;
                for item in &page.items {
                    if !print(&item.event, args.output)? {
                        return Ok(());
                    }
                    cursor = Some(item.cursor.clone());
                }
                if page.next.is_some() {
                    continue;
                }
            }
            // The first answer decides whether the arguments are right; later failures are retried.
            Err(error) if !started => return Err(error),
            Err(error) => tracing::warn!(%error, "cannot read the event log; retrying"),
        }
        tokio::time::sleep(interval).await;
    }
}
