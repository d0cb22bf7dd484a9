//! The append micro-benchmark of `edict-bench commands` and the raw PostgreSQL ceiling it is compared
//! with.
//!
//! [`bench_appends`] drives the real write path below the aggregate: `EventRepository::persist`, one event
//! per transaction, exactly the statements postgres-es / sqlite-es issue for a one-event command. It writes
//! rows of aggregate type [`BENCH_AGGREGATE_TYPE`] into the events table it is given, so run it against a
//! scratch database ([`edict_test_kit::create_isolated_postgres`]).
//!
//! [`pgbench_ceiling`] runs PostgreSQL's own `pgbench` with the same transaction shape (BEGIN, one INSERT
//! into a table shaped like ours, COMMIT) to show how far the store is from what the server can do.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use anyhow::{Context, Result, bail};
use edict_infrastructure::store::{Database, EventRepository};
use edict_test_kit::{create_isolated_postgres, drop_isolated_postgres};

/// The aggregate type of the rows [`bench_appends`] writes.
pub const BENCH_AGGREGATE_TYPE: &str = "BenchCounter";

/// What one append benchmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendStats {
    /// Appends that committed.
    pub appends: u64,
    /// Appends that failed (counted, not retried, not in the latencies).
    pub failures: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Committed appends per second.
    pub per_sec: f64,
    /// Median latency of a committed append.
    pub p50: Duration,
    /// 99th-percentile latency of a committed append.
    pub p99: Duration,
}

/// The aggregate the benchmark appends to: only its type name is used by the repository.
#[derive(Debug, Default, Serialize, Deserialize)]
struct BenchCounter;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum BenchEvent {
    Bumped { client: usize },
}

impl DomainEvent for BenchEvent {
    fn event_type(&self) -> String {
        "Bumped".to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

impl Aggregate for BenchCounter {
    const TYPE: &'static str = BENCH_AGGREGATE_TYPE;
    type Command = ();
    type Event = BenchEvent;
    type Error = Infallible;
    type Services = ();

    async fn handle(
        &mut self,
        _command: Self::Command,
        _service: &Self::Services,
        _sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn apply(&mut self, _event: Self::Event) {}
}

/// Runs `clients` concurrent appenders for `duration`. Each appends single-event transactions through
/// [`EventRepository::persist`] to its own aggregate (a fresh id per client and run, sequence 1, 2, …), so
/// appends never conflict and every one is a real commit.
#[tracing::instrument(skip(db), fields(kind = db.kind()))]
pub async fn bench_appends(db: &Database, clients: usize, duration: Duration) -> AppendStats {
    let repo = Arc::new(db.event_repository());
    let clients = clients.max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| tokio::spawn(append_until(Arc::clone(&repo), client, deadline)))
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        match task.await {
            Ok((client_latencies, client_failures)) => {
                latencies.extend(client_latencies);
                failures += client_failures;
            }
            Err(error) => {
                tracing::warn!(%error, "append client task failed");
                failures += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let appends = latencies.len() as u64;
    AppendStats {
        appends,
        failures,
        elapsed,
        per_sec: appends as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
    }
}

async fn append_until(
    repo: Arc<EventRepository>,
    client: usize,
    deadline: Instant,
) -> (Vec<Duration>, u64) {
    let payload = serde_json::to_value(BenchEvent::Bumped { client }).unwrap_or_default();
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut aggregate_id = uuid::Uuid::new_v4().to_string();
    let mut sequence = 0;
    while Instant::now() < deadline {
        sequence += 1;
        let event = SerializedEvent::new(
            aggregate_id.clone(),
            sequence,
            BENCH_AGGREGATE_TYPE.to_owned(),
            "Bumped".to_owned(),
            "1.0".to_owned(),
            payload.clone(),
            serde_json::json!({ "source": "bench" }),
        );
        let started = Instant::now();
        match repo.persist::<BenchCounter>(&[event], None).await {
            Ok(()) => latencies.push(started.elapsed()),
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, client, "append failed");
                // Whether the failed sequence was taken is unknown: go on with a fresh aggregate.
                aggregate_id = uuid::Uuid::new_v4().to_string();
                sequence = 0;
            }
        }
    }
    (latencies, failures)
}

/// The `p`th percentile (nearest rank) of sorted values; zero when there are none.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// The script pgbench runs per transaction: the shape of a one-event postgres-es commit.
const PGBENCH_SCRIPT: &str = "BEGIN;
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('PgbenchCeiling', gen_random_uuid()::text, 1, 'Bumped', '1.0', '{\"Bumped\":{\"client\":0}}', '{\"source\":\"bench\"}');
END;
";

/// Measures what the PostgreSQL server at `url` can do with our transaction shape: creates a scratch
/// database with our schema, runs `pgbench -n -M prepared -c <clients> -j 2 -T <seconds>` with one
/// single-row INSERT transaction per script run (unique random aggregate ids), drops the database and
/// returns pgbench's transactions per second.
///
/// `url` needs the right to create databases. The `pgbench` binary is `/usr/bin/pgbench` when present,
/// else whatever `pgbench` is on `PATH`.
///
/// # Errors
/// When the scratch database cannot be created, or pgbench cannot be run, fails, or prints no `tps = …`
/// line.
#[tracing::instrument(skip(url), err)]
pub async fn pgbench_ceiling(url: &str, clients: usize, seconds: u64) -> Result<f64> {
    let (database, scratch_url) = create_isolated_postgres(url, "edict_pgbench").await?;
    database.close().await;
    let result = run_pgbench(&scratch_url, clients.max(1), seconds.max(1)).await;
    if let Err(error) = drop_isolated_postgres(url, &scratch_url).await {
        tracing::warn!(%error, "cannot drop the pgbench scratch database");
    }
    result
}

async fn run_pgbench(url: &str, clients: usize, seconds: u64) -> Result<f64> {
    let script = std::env::temp_dir().join(format!(
        "edict-pgbench-{}.sql",
        uuid::Uuid::new_v4().simple()
    ));
    tokio::fs::write(&script, PGBENCH_SCRIPT)
        .await
        .with_context(|| format!("pgbench failed: cannot write {}", script.display()))?;
    let binary = if std::path::Path::new("/usr/bin/pgbench").exists() {
        "/usr/bin/pgbench"
    } else {
        "pgbench"
    };
    let output = tokio::process::Command::new(binary)
        .arg("-n")
        .args(["-M", "prepared"])
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-f")
        .arg(&script)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await;
    let _ = tokio::fs::remove_file(&script).await;
    let output = output.with_context(|| format!("pgbench failed: cannot run {binary}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "pgbench failed: {binary} exited with {}: {}",
            output.status,
            stderr.trim()
        );
    }
    parse_tps(&stdout).with_context(|| format!("pgbench failed: no tps line in: {stdout}"))
}

/// The value of pgbench's `tps = 1234.5 (without initial connection time)` line.
fn parse_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("tps = "))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99), Duration::from_millis(99));
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 99),
            Duration::from_millis(7)
        );
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn the_tps_line_of_pgbench_is_parsed() {
        let out = "number of transactions actually processed: 1000\n\
                   latency average = 3.2 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 9876.543210 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(9876.543210));
        assert_eq!(parse_tps("nothing here"), None);
    }
}

/// The append benchmark and the pgbench ceiling run end to end (briefly) against real stores.
#[cfg(test)]
mod end_to_end {
    use super::*;
    use edict_application::event_log::{Checkpoint, EventLog};
    use edict_test_kit::test_database_url;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_appends_commits_single_event_transactions_on_postgres() {
        let admin_url = test_database_url();
        let (db, url) = create_isolated_postgres(&admin_url, "edict_test_bench")
            .await
            .unwrap();
        let stats = bench_appends(&db, 4, Duration::from_millis(500)).await;
        let log = db.read_all(Checkpoint::START, 1_000_000).await;
        db.close().await;
        let _ = drop_isolated_postgres(&admin_url, &url).await;

        assert_eq!(stats.failures, 0, "{stats:?}");
        assert!(stats.appends > 0, "{stats:?}");
        assert!(stats.per_sec > 0.0 && stats.p50 <= stats.p99, "{stats:?}");
        let log = log.unwrap();
        // Every committed append is one event (some may still be below the read horizon: at most).
        assert!(log.len() as u64 <= stats.appends);
        assert!(log.iter().all(|e| e.aggregate_type == BENCH_AGGREGATE_TYPE));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_appends_commits_single_event_transactions_on_sqlite() {
        let dir = std::env::temp_dir().join(format!(
            "edict-bench-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let db = Database::connect(&format!("sqlite://{}/events.db", dir.display()))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let stats = bench_appends(&db, 4, Duration::from_millis(500)).await;
        let log = db.read_all(Checkpoint::START, 1_000_000).await;
        db.close().await;
        let _ = tokio::fs::remove_dir_all(&dir).await;

        assert_eq!(stats.failures, 0, "{stats:?}");
        assert!(stats.appends > 0, "{stats:?}");
        assert_eq!(log.unwrap().len() as u64, stats.appends);
    }

    #[tokio::test]
    async fn pgbench_ceiling_reports_transactions_per_second() {
        let tps = pgbench_ceiling(&test_database_url(), 2, 1).await.unwrap();
        assert!(tps > 0.0, "{tps}");
    }
}
