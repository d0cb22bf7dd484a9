//! `edict events export`: streams a range of the global log, with each event's chain hashes, to a file
//! or stdout as NDJSON (one `RecordedEvent` JSON per line plus `chain_index`, `previous_hash`, `hash`;
//! what `edict audit verify --file` checks) or CSV (the same fields, payload and metadata as JSON).
//!
//! The log is read a page at a time (never whole) from the store (`--database-url` or the embedded
//! `--data-dir`, like `edict projections`); a blocking writer thread encodes and writes each page while
//! the next one is read. A progress bar runs on stderr when it is a terminal; the summary (events,
//! seconds, events/s) ends on stderr.

use crate::audit_cli::{StoreArgs, open_store};
use crate::output;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use edict_application::audit::{ExportRange, ExportReader, ExportedEvent};
use edict_infrastructure::audit::AuditStore;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The format of an export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line (verifiable with `edict audit verify --file`).
    #[default]
    Ndjson,
    /// Comma-separated values with a header row; payload and metadata are JSON text.
    Csv,
}

/// Arguments of `edict events export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only events recorded at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Only events recorded at or before this time (RFC 3339).
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// `ndjson` (default) or `csv`.
    #[arg(long, default_value = "ndjson")]
    format: ExportFormat,
    /// Write to this file instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportSummary {
    /// Events written.
    pub events: u64,
    /// Of those, events with chain hashes.
    pub hashed: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl ExportSummary {
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// The CSV columns, in order.
const CSV_HEADER: &str = "global_position,transaction_id,aggregate_type,aggregate_id,sequence,event_type,\
event_version,recorded_at,payload,metadata,chain_index,previous_hash,hash";

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(text: &str, out: &mut Vec<u8>) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Appends one event to `out` in `format`.
///
/// # Errors
/// When the event cannot be encoded as JSON.
pub fn encode(event: &ExportedEvent, format: ExportFormat, out: &mut Vec<u8>) -> Result<()> {
    match format {
        ExportFormat::Ndjson => {
            serde_json::to_writer(&mut *out, event)?;
            out.push(b'\n');
        }
        ExportFormat::Csv => {
            let e = &event.event;
            let fields = [
                e.global_position.to_string(),
                e.transaction_id.to_string(),
                e.aggregate_type.clone(),
                e.aggregate_id.clone(),
                e.sequence.to_string(),
                e.event_type.clone(),
                e.event_version.clone(),
                e.recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                serde_json::to_string(&e.payload)?,
                serde_json::to_string(&e.metadata)?,
                event.chain_index.map(|i| i.to_string()).unwrap_or_default(),
                event.previous_hash.clone().unwrap_or_default(),
                event.hash.clone().unwrap_or_default(),
            ];
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                csv_field(field, out);
            }
            out.push(b'\n');
        }
    }
    Ok(())
}

/// Streams every page of `reader` into `sink` in `format`, calling `progress` with the events written
/// so far after each page. Pages are encoded and written on a blocking thread while the next is read.
///
/// # Errors
/// When the store cannot be read or the sink cannot be written.
pub async fn export_to(
    mut reader: ExportReader,
    format: ExportFormat,
    sink: Box<dyn Write + Send>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ExportSummary> {
    let started = Instant::now();
    let (pages, receive) = std::sync::mpsc::sync_channel::<Vec<ExportedEvent>>(4);
    let writer = tokio::task::spawn_blocking(move || -> Result<(u64, u64, u64)> {
        let mut sink = std::io::BufWriter::with_capacity(1 << 20, sink);
        let (mut events, mut hashed, mut bytes) = (0_u64, 0_u64, 0_u64);
        let mut buffer = Vec::with_capacity(1 << 20);
        if format == ExportFormat::Csv {
            writeln!(sink, "{CSV_HEADER}").context("cannot write the export")?;
        }
        for page in receive {
            buffer.clear();
            for event in &page {
                encode(event, format, &mut buffer)?;
                hashed += u64::from(event.hash.is_some());
            }
            events += page.len() as u64;
            bytes += buffer.len() as u64;
            sink.write_all(&buffer).context("cannot write the export")?;
        }
        sink.flush().context("cannot write the export")?;
        Ok((events, hashed, bytes))
    });
    let mut read = 0_u64;
    let mut failed = None;
    loop {
        match reader.next_page().await {
            Ok(None) => break,
            Ok(Some(page)) => {
                read += page.len() as u64;
                if pages.send(page).is_err() {
                    // The writer stopped: its error is the one to report.
                    break;
                }
                progress(read);
            }
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    drop(pages);
    let (events, hashed, bytes) = writer.await.context("the export writer stopped")??;
    if let Some(error) = failed {
        return Err(error).context("cannot read the event log");
    }
    Ok(ExportSummary {
        events,
        hashed,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Exports a range of the log.
pub async fn run(args: ExportArgs) -> Result<()> {
    let database = open_store(&args.store).await?;
    let total = estimate(&database).await;
    let reader = ExportReader::new(
        Arc::new(database.clone()),
        Arc::new(AuditStore::new(database.clone())),
        ExportRange {
            since: args.since,
            until: args.until,
        },
    );
    let sink: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(output::raw_stdout()),
    };
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "exporting [{bar:30}] {pos}/{len} events ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let summary = export_to(reader, args.format, sink, &|n| bar.set_position(n)).await;
    bar.finish_and_clear();
    database.close().await;
    let summary = summary?;
    output::note(&format!(
        "exported {} events ({} with chain hashes, {:.1} MB) in {:.2} s ({:.0} events/s){}",
        summary.events,
        summary.hashed,
        summary.bytes as f64 / 1e6,
        summary.seconds,
        summary.events_per_sec(),
        args.output
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    ));
    Ok(())
}

/// How many events the log holds (for the progress bar; 0 when unknown).
pub async fn estimate(database: &edict_infrastructure::store::Database) -> u64 {
    let count: Result<i64, sqlx::Error> = match database {
        edict_infrastructure::store::Database::Postgres(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(pool)
                .await
        }
        edict_infrastructure::store::Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(pool)
                .await
        }
    };
    count.ok().and_then(|c| u64::try_from(c).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edict_application::event_log::RecordedEvent;
    use serde_json::json;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let event = ExportedEvent {
            event: RecordedEvent {
                global_position: 1,
                transaction_id: 2,
                aggregate_type: "Rule".into(),
                aggregate_id: "a,b".into(),
                sequence: 3,
                event_type: "RuleDrafted".into(),
                event_version: "1.0".into(),
                payload: json!({"text": "say \"hi\""}),
                metadata: json!({}),
                recorded_at: DateTime::from_timestamp_micros(1_700_000_000_000_001)
                    .unwrap_or_default(),
            },
            chain_index: Some(1),
            previous_hash: Some("00".into()),
            hash: Some("ff".into()),
        };
        let mut out = Vec::new();
        encode(&event, ExportFormat::Csv, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1,2,Rule,\"a,b\",3,RuleDrafted,1.0,2023-11-14T22:13:20.000001Z,\
             \"{\"\"text\"\":\"\"say \\\"\"hi\\\"\"\"\"}\",{},1,00,ff\n"
        );
    }

    #[test]
    fn ndjson_lines_parse_back_to_the_event() {
        let event = ExportedEvent {
            event: RecordedEvent {
                global_position: 9,
                transaction_id: 0,
                aggregate_type: "Team".into(),
                aggregate_id: "t".into(),
                sequence: 1,
                event_type: "TeamCreated".into(),
                event_version: "1.0".into(),
                payload: json!({"n": 1}),
                metadata: json!({"actor": "user:1"}),
                recorded_at: Utc::now(),
            },
            chain_index: None,
            previous_hash: None,
            hash: None,
        };
        let mut out = Vec::new();
        encode(&event, ExportFormat::Ndjson, &mut out).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        let back: ExportedEvent = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, event);
    }
}
