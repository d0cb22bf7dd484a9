//! `edict-bench verify`: how fast the tamper-evidence chain is written, verified and exported.
//!
//! Seeds `--events` events shaped like Edict's (rule payloads of a few hundred bytes, full metadata)
//! straight into a scratch store, chains them with the `audit` role's writer (a signed checkpoint every
//! 1,000 events), then times `edict audit verify`'s check over the whole chain (goal: 1,000,000 events
//! in at most 10 s) and an NDJSON export of the whole log to a sink (events/s).

use crate::ScratchPostgres;
use anyhow::{Context, Result, bail};
use clap::Args;
use ed25519_dalek::SigningKey;
use edict::events_export::{ExportFormat, export_to};
use edict::output::{self, OutputFormat};
use edict_application::audit::{ExportRange, ExportReader};
use edict_infrastructure::audit::{
    AuditStore, ChainWriter, ChainWriterSettings, VerifyOptions, verify_database,
};
use edict_infrastructure::store::Database;
use edict_test_kit::seed::{SeedEvent, seed_events};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// The goal: this many seconds for a million events.
const GOAL_SECONDS_PER_MILLION: f64 = 10.0;

/// Options of `edict-bench verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Events to seed, chain, verify and export.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Which stores to measure (`postgres`, `sqlite`).
    #[arg(long, value_delimiter = ',', default_value = "postgres")]
    stores: Vec<String>,
    /// Where the scratch databases go.
    #[command(flatten)]
    scratch: ScratchPostgres,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
    /// Keep the scratch database (its URL is logged), to profile `edict audit verify` on it.
    #[arg(long)]
    keep: bool,
}

/// One store's figures.
#[derive(Debug, Clone, Serialize)]
struct VerifyBench {
    store: String,
    events: u64,
    seed_seconds: f64,
    chain_seconds: f64,
    chain_events_per_sec: f64,
    verify_seconds: f64,
    verify_events_per_sec: f64,
    checkpoints_verified: u64,
    verify_goal_seconds: f64,
    verify_goal_met: bool,
    export_seconds: f64,
    export_events_per_sec: f64,
    export_megabytes: f64,
}

/// An event like Edict's: a rule drafted, submitted or approved, with full metadata.
fn event(i: u64) -> SeedEvent {
    let rule = uuid::Uuid::from_u64_pair(0xed1c7, i / 8);
    let actor = format!("user:{}", uuid::Uuid::from_u64_pair(0xad, i % 50));
    let request = uuid::Uuid::from_u64_pair(0x7e9, i);
    let (event_type, payload) = match i % 8 {
        0 => (
            "RuleDrafted",
            json!({"RuleDrafted": {
                "rule_id": rule, "by": actor, "at": "2026-11-22T02:52:12.123456789Z",
                "spec": {
                    "name": format!("Rule number {i}"),
                    "description": "Keep the build green: run the whole test suite before every push.",
                    "layer": "team", "category": "testing", "priority": i % 5,
                    "content": "- Run `cargo test` before pushing.\n- Never commit secrets.\n",
                    "tags": ["testing", "ci"], "triggers": [],
                }
            }}),
        ),
        1 | 3 | 5 => (
            "RuleSubmitted",
            json!({"RuleSubmitted": {"rule_id": rule, "by": actor, "at": "2026-11-22T02:52:13Z", "revision": i % 8}}),
        ),
        _ => (
            "RuleApproved",
            json!({"RuleApproved": {"rule_id": rule, "by": actor, "at": "2026-11-22T02:52:14Z", "approvals": 1, "quorum": 1}}),
        ),
    };
    SeedEvent {
        aggregate_type: "Rule".into(),
        aggregate_id: rule.to_string(),
        event_type: event_type.into(),
        event_version: "1.0".into(),
        payload,
        metadata: json!({
            "actor": actor, "request_id": request, "correlation_id": request, "source": "api",
        }),
    }
}

/// Runs `edict-bench verify`.
pub async fn verify(args: VerifyArgs) -> Result<()> {
    let mut reports = Vec::new();
    for store in &args.stores {
        let report = match store.as_str() {
            "postgres" => {
                let (database, url) = args.scratch.open("edict_bench_audit").await?;
                let report = measure("postgres", &database, args.events).await;
                database.close().await;
                if args.keep {
                    tracing::info!(%url, "kept the scratch database");
                } else {
                    args.scratch.drop(&url).await;
                }
                report?
            }
            "sqlite" => {
                let dir = std::env::temp_dir().join(format!(
                    "edict-bench-audit-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                let url = format!("sqlite://{}", dir.join("edict.db").display());
                let database = Database::connect(&url).await?;
                database.migrate().await?;
                let report = measure("sqlite", &database, args.events).await;
                database.close().await;
                if args.keep {
                    tracing::info!(%url, "kept the scratch database");
                } else {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                }
                report?
            }
            other => bail!("unknown store {other:?} (expected postgres or sqlite)"),
        };
        if args.output == OutputFormat::Text {
            print(&report);
        }
        reports.push(report);
    }
    if args.output == OutputFormat::Json {
        output::json(&reports)?;
    }
    Ok(())
}

async fn measure(kind: &str, database: &Database, events: u64) -> Result<VerifyBench> {
    tracing::info!(store = kind, events, "seeding");
    let started = Instant::now();
    seed_events(database, events, event)
        .await
        .context("cannot seed events")?;
    if let Database::Postgres(pool) = database {
        sqlx::query("VACUUM ANALYZE events").execute(pool).await?;
    }
    let seed_seconds = started.elapsed().as_secs_f64();

    tracing::info!(store = kind, "chaining");
    let key = SigningKey::from_bytes(&[0xb5; 32]);
    let writer = ChainWriter::new(
        database.clone(),
        key.clone(),
        ChainWriterSettings::default(),
    );
    let started = Instant::now();
    let chained = writer.catch_up().await.context("cannot chain the log")?;
    let chain_seconds = started.elapsed().as_secs_f64();
    if chained != events {
        bail!("chained {chained} events, seeded {events}");
    }
    if let Database::Postgres(pool) = database {
        sqlx::query("VACUUM ANALYZE audit_chain")
            .execute(pool)
            .await?;
    }

    tracing::info!(store = kind, "verifying");
    let report = verify_database(
        database,
        VerifyOptions {
            trusted_key: Some(key.verifying_key().to_bytes()),
            ..VerifyOptions::default()
        },
        Arc::new(|_| {}),
    )
    .await
    .context("cannot verify")?;
    if let Some(broken) = &report.broken {
        bail!("the fresh chain does not verify: {}", broken.message);
    }
    if report.events_verified != events {
        bail!(
            "verified {} events, chained {events}",
            report.events_verified
        );
    }

    tracing::info!(store = kind, "exporting");
    let reader = ExportReader::new(
        Arc::new(database.clone()),
        Arc::new(AuditStore::new(database.clone())),
        ExportRange::default(),
    );
    let exported = export_to(
        reader,
        ExportFormat::Ndjson,
        Box::new(std::io::sink()),
        &|_| {},
    )
    .await?;
    if exported.hashed != events {
        bail!("exported {} hashed events of {events}", exported.hashed);
    }
    let goal = GOAL_SECONDS_PER_MILLION * events as f64 / 1e6;
    Ok(VerifyBench {
        store: kind.to_owned(),
        events,
        seed_seconds,
        chain_seconds,
        chain_events_per_sec: events as f64 / chain_seconds.max(1e-9),
        verify_seconds: report.seconds,
        verify_events_per_sec: report.events_per_sec,
        checkpoints_verified: report.checkpoints_verified,
        verify_goal_seconds: goal,
        verify_goal_met: report.seconds <= goal,
        export_seconds: exported.seconds,
        export_events_per_sec: exported.events_per_sec(),
        export_megabytes: exported.bytes as f64 / 1e6,
    })
}

fn print(r: &VerifyBench) {
    output::line(&format!("store {} ({} events)", r.store, r.events));
    output::line(&format!(
        "  chain:  {:.1} s ({:.0} events/s, seeding took {:.1} s)",
        r.chain_seconds, r.chain_events_per_sec, r.seed_seconds
    ));
    output::line(&format!(
        "  verify: {:.2} s ({:.0} events/s, {} checkpoints) — goal {:.1} s: {}",
        r.verify_seconds,
        r.verify_events_per_sec,
        r.checkpoints_verified,
        r.verify_goal_seconds,
        if r.verify_goal_met { "met" } else { "MISSED" }
    ));
    output::line(&format!(
        "  export: {:.2} s ({:.0} events/s, {:.0} MB of NDJSON)",
        r.export_seconds, r.export_events_per_sec, r.export_megabytes
    ));
}
