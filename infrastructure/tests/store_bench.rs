//! The append benchmark and the pgbench ceiling run end to end (briefly) against real stores.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edict_application::event_log::{Checkpoint, EventLog};
use edict_infrastructure::store::Database;
use edict_infrastructure::store::bench::{BENCH_AGGREGATE_TYPE, bench_appends, pgbench_ceiling};
use edict_infrastructure::store::testing::{
    create_isolated_postgres, drop_isolated_postgres, test_database_url,
};

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
