//! PostgreSQL only: the global log never skips an event that commits late, and a tailing reader sees
//! every event exactly once while many writers append.
//!
//! Each test creates its own database on the shared server and drops it at the end. The read horizon is
//! cluster-wide, so transactions of tests running beside these can delay reads (never reorder or skip
//! them): every wait is a bounded poll.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent};
use edict_infrastructure::store::Database;
use edict_test_kit::{
    create_isolated_postgres, drop_isolated_postgres, run_isolated, test_database_url,
};
use serde_json::json;
use sqlx::PgPool;

use edict_test_kit::tally;
use tally::{TallyEvent, cqrs};

fn key(event: &RecordedEvent) -> (String, i64) {
    (event.aggregate_id.clone(), event.sequence)
}

fn keys(events: &[RecordedEvent]) -> Vec<(String, i64)> {
    events.iter().map(key).collect()
}

/// Runs `case` on a fresh PostgreSQL database and drops it afterwards, also when the case panics.
async fn with_postgres<F, Fut>(case: F)
where
    F: FnOnce(Database, PgPool) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url = test_database_url();
    let (db, url) = create_isolated_postgres(&admin_url, "edict_test_global_log")
        .await
        .expect("create an isolated PostgreSQL database");
    let Database::Postgres(pool) = db.clone() else {
        unreachable!("create_isolated_postgres opens PostgreSQL")
    };
    run_isolated(case(db.clone(), pool), async {
        db.close().await;
        let _ = drop_isolated_postgres(&admin_url, &url).await;
    })
    .await;
}

/// Reads from `from` until `count` events arrived (a bounded poll), then checks nothing more is there.
async fn resume_until(db: &Database, from: Checkpoint, count: usize) -> Vec<RecordedEvent> {
    let mut read = Vec::new();
    let mut checkpoint = from;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while read.len() < count {
        let page = db.read_all(checkpoint, 1000).await.unwrap();
        match page.last() {
            Some(last) => {
                checkpoint = last.checkpoint();
                read.extend(page);
            }
            None => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {} of {count} events became readable",
                    read.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let rest = db.read_all(checkpoint, 1000).await.unwrap();
    assert!(
        rest.is_empty(),
        "events beyond the expected ones: {rest:#?}"
    );
    read
}

/// The sessions whose transactions hold the cluster's read horizon back, for failure messages.
async fn horizon_holders(db: &Database) -> Vec<String> {
    let Database::Postgres(pool) = db else {
        return Vec::new();
    };
    sqlx::query_scalar(
        "SELECT format('%s pid=%s %s xid=%s xmin=%s since=%s app=%s query=%s', datname, pid, state, \
         backend_xid, backend_xmin, now() - xact_start, application_name, left(query, 120)) \
         FROM pg_stat_activity WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL \
         ORDER BY xact_start",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_else(|error| vec![error.to_string()])
}

/// Proof 1: an event whose transaction took an early position but commits late is neither returned
/// too early (which would let a reader's checkpoint pass it) nor lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committing_late_is_delivered_once_and_nothing_passes_it() {
    with_postgres(|db, pool| async move {
        let cqrs = cqrs(&db);
        cqrs.execute("early-1", 1).await.unwrap();
        cqrs.execute("early-2", 1).await.unwrap();
        let early = resume_until(&db, Checkpoint::START, 2).await;
        assert_eq!(
            keys(&early),
            vec![("early-1".to_owned(), 1), ("early-2".to_owned(), 1)]
        );
        let reader_checkpoint = early[1].checkpoint();

        // A transaction appends exactly as postgres-es does, then stays open.
        let mut held = pool.begin().await.unwrap();
        let held_position: i64 = sqlx::query_scalar(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING global_position",
        )
        .bind("Tally")
        .bind("held")
        .bind(1_i32)
        .bind("TallyCounted")
        .bind("1.0")
        .bind(serde_json::to_value(TallyEvent::Counted { n: 1 }).unwrap())
        .bind(json!({ "actor": "slow" }))
        .fetch_one(&mut *held)
        .await
        .unwrap();
        let held_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(&mut *held)
            .await
            .unwrap();
        let held_xid: u64 = held_xid.parse().unwrap();

        // Later appends commit through the repository while it is open.
        let later: Vec<String> = (1..=5).map(|i| format!("later-{i}")).collect();
        for id in &later {
            cqrs.execute(id, 1).await.unwrap();
        }

        // The trap: by position, the later events are visible past the held one, which is invisible.
        let naive: Vec<i64> = sqlx::query_scalar(
            "SELECT global_position FROM events WHERE global_position > $1 ORDER BY global_position",
        )
        .bind(reader_checkpoint.position)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(naive.len(), 5, "the later events are committed and visible");
        assert!(naive.iter().all(|position| *position > held_position));

        // The global log returns nothing at or after the held transaction, however often it is asked.
        for _ in 0..5 {
            assert!(db.read_all(reader_checkpoint, 100).await.unwrap().is_empty());
            let from_start = db.read_all(Checkpoint::START, 100).await.unwrap();
            assert_eq!(keys(&from_start), keys(&early));
            assert!(from_start.iter().all(|e| e.transaction_id < held_xid));
        }

        held.commit().await.unwrap();

        // Resuming from its checkpoint, the reader gets the held event first, then the later ones,
        // each exactly once.
        let resumed = resume_until(&db, reader_checkpoint, 6).await;
        let mut expected = vec![("held".to_owned(), 1)];
        expected.extend(later.iter().map(|id| (id.clone(), 1)));
        assert_eq!(keys(&resumed), expected);
        assert_eq!(resumed[0].transaction_id, held_xid);
        assert_eq!(resumed[0].global_position, held_position);
        assert_eq!(resumed[0].metadata, json!({ "actor": "slow" }));

        // The whole log, from the start: eight events, each once.
        let whole = db.read_all(Checkpoint::START, 100).await.unwrap();
        let mut all_expected = keys(&early);
        all_expected.extend(expected);
        assert_eq!(keys(&whole), all_expected);
    })
    .await;
}

/// Proof 2: sixteen writers append single- and multi-event transactions while one reader tails the log
/// from its checkpoint. The reader ends with every event exactly once, each aggregate in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_event_of_sixteen_writers_exactly_once() {
    const WRITERS: usize = 16;
    const EVENTS_PER_WRITER: u64 = 100;
    const AGGREGATES_PER_WRITER: usize = 3;

    with_postgres(|db, _pool| async move {
        let writers_done = Arc::new(AtomicBool::new(false));
        let total = WRITERS * EVENTS_PER_WRITER as usize;

        let reader = {
            let db = db.clone();
            let writers_done = Arc::clone(&writers_done);
            tokio::spawn(async move {
                let mut read: Vec<RecordedEvent> = Vec::new();
                let mut checkpoint = Checkpoint::START;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                loop {
                    let page = db.read_all(checkpoint, 50).await.unwrap();
                    if let Some(last) = page.last() {
                        checkpoint = last.checkpoint();
                        read.extend(page);
                        continue;
                    }
                    if writers_done.load(Ordering::SeqCst) && read.len() >= total {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        panic!(
                            "the reader got {} of {total} events (writers done: {}); \
                             transactions holding the horizon: {:#?}",
                            read.len(),
                            writers_done.load(Ordering::SeqCst),
                            horizon_holders(&db).await
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Drained: nothing more arrives.
                assert!(db.read_all(checkpoint, 50).await.unwrap().is_empty());
                read
            })
        };

        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    let cqrs = cqrs(&db);
                    let mut appended: HashMap<String, i64> = HashMap::new();
                    let mut remaining = EVENTS_PER_WRITER;
                    let mut command = 0_usize;
                    while remaining > 0 {
                        let id = format!("w{w:02}-a{}", command % AGGREGATES_PER_WRITER);
                        // Every fifth command is a three-event transaction.
                        let events = if command % 5 == 4 {
                            3.min(remaining)
                        } else {
                            1
                        };
                        cqrs.execute(&id, events).await.unwrap();
                        *appended.entry(id).or_default() += events as i64;
                        remaining -= events;
                        command += 1;
                    }
                    appended
                })
            })
            .collect();
        let mut expected: HashSet<(String, i64)> = HashSet::new();
        for writer in writers {
            for (id, count) in writer.await.unwrap() {
                expected.extend((1..=count).map(|sequence| (id.clone(), sequence)));
            }
        }
        assert_eq!(expected.len(), total);
        writers_done.store(true, Ordering::SeqCst);

        let read = reader.await.unwrap();

        // Complete and without duplicates.
        assert_eq!(read.len(), total);
        let distinct: HashSet<(String, i64)> = read.iter().map(key).collect();
        assert_eq!(distinct.len(), total, "duplicates in the tail");
        assert_eq!(distinct, expected);
        // Per aggregate, in increasing sequence without gaps.
        let mut last: HashMap<&str, i64> = HashMap::new();
        for event in &read {
            let previous = last.entry(&event.aggregate_id).or_insert(0);
            assert_eq!(event.sequence, *previous + 1, "{event:?}");
            *previous = event.sequence;
        }
        // In log order, and the same order a fresh reader sees.
        assert!(
            read.windows(2)
                .all(|p| p[0].checkpoint() < p[1].checkpoint())
        );
        let fresh = db.read_all(Checkpoint::START, 100_000).await.unwrap();
        assert_eq!(keys(&fresh), keys(&read));
    })
    .await;
}

/// A rolled-back append leaves a hole in the positions; readers neither wait for it nor stumble on it.
#[tokio::test]
async fn a_rolled_back_append_leaves_a_hole_readers_pass() {
    with_postgres(|db, pool| async move {
        let cqrs = cqrs(&db);
        cqrs.execute("a", 1).await.unwrap();
        let mut doomed = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) VALUES ('Tally', 'doomed', 1, 'TallyCounted', '1.0', '{}', '{}')",
        )
        .execute(&mut *doomed)
        .await
        .unwrap();
        doomed.rollback().await.unwrap();
        cqrs.execute("b", 1).await.unwrap();

        let read = resume_until(&db, Checkpoint::START, 2).await;
        assert_eq!(
            keys(&read),
            vec![("a".to_owned(), 1), ("b".to_owned(), 1)]
        );
        assert_eq!(read[1].global_position, read[0].global_position + 2);
    })
    .await;
}

/// Transaction ids are ordered as numbers, also across a power of ten ('1000' sorts before '999' as
/// text): a page never ends past an event it did not return.
#[tokio::test]
async fn transaction_ids_are_ordered_as_numbers_across_a_power_of_ten() {
    with_postgres(|db, pool| async move {
        // Pick ids straddling a power of ten that all lie below the current transaction id, hence below
        // the read horizon. (A fresh cluster starts near 700; use ids up to it.)
        let current: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        let current: u64 = current.parse().unwrap();
        let power = 10_u64.pow((current - 10).ilog10());
        assert!(
            power >= 10,
            "transaction id {current} too low for this test"
        );
        let inserted = [power + 1, power - 1, power * 10 - 1, power - 2, power];
        let inserted: Vec<u64> = inserted.into_iter().filter(|xid| *xid < current).collect();
        for (i, xid) in inserted.iter().enumerate() {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, transaction_id) \
                 VALUES ('Tally', $1, 1, 'TallyCounted', '1.0', '{}', '{}', $2::text::xid8)",
            )
            .bind(format!("x{i}"))
            .bind(xid.to_string())
            .execute(&pool)
            .await
            .unwrap();
        }
        let mut expected = inserted.clone();
        expected.sort_unstable();

        for limit in [1, 2, 100] {
            let mut read = Vec::new();
            let mut checkpoint = Checkpoint::START;
            loop {
                let page = db.read_all(checkpoint, limit).await.unwrap();
                let Some(last) = page.last() else { break };
                checkpoint = last.checkpoint();
                read.extend(page.iter().map(|e| e.transaction_id));
            }
            assert_eq!(read, expected, "paging by {limit}");
        }
    })
    .await;
}

/// Proof 3: a filtered read keeps the guarantee. An event matching the filter that commits late is
/// neither passed by a later matching one nor lost, and time filters bound the recorded time exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_read_never_passes_a_matching_event_that_commits_late() {
    use edict_application::event_log::LogFilter;

    with_postgres(|db, pool| async move {
        let cqrs = cqrs(&db);
        cqrs.execute("unmatched-1", 1).await.unwrap();
        let insert = |id: &'static str| {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata) VALUES ('Tally', $1, 1, 'TallyCounted', '1.0', \
                 $2, $3)",
            )
            .bind(id)
            .bind(serde_json::to_value(TallyEvent::Counted { n: 1 }).unwrap())
            .bind(json!({ "actor": "slow" }))
        };
        let filter = LogFilter {
            actor: Some("slow".to_owned()),
            ..LogFilter::default()
        };
        let mut held = pool.begin().await.unwrap();
        insert("held").execute(&mut *held).await.unwrap();
        // A later matching event commits while the held one is open.
        insert("later").execute(&pool).await.unwrap();
        cqrs.execute("unmatched-2", 1).await.unwrap();
        for _ in 0..5 {
            let page = db
                .read_filtered(Checkpoint::START, &filter, 10)
                .await
                .unwrap();
            assert!(
                page.is_empty(),
                "nothing past the held transaction: {page:#?}"
            );
        }
        held.commit().await.unwrap();
        let mut read = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while read.len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                horizon_holders(&db).await
            );
            let after = read
                .last()
                .map_or(Checkpoint::START, RecordedEvent::checkpoint);
            read.extend(db.read_filtered(after, &filter, 1).await.unwrap());
        }
        assert_eq!(
            keys(&read),
            vec![("held".to_owned(), 1), ("later".to_owned(), 1)]
        );
        let after = read[1].checkpoint();
        assert!(
            db.read_filtered(after, &filter, 10)
                .await
                .unwrap()
                .is_empty()
        );

        // Filters by aggregate, type and recorded time agree with filtering the whole log.
        let whole = resume_until(&db, Checkpoint::START, 4).await;
        let later_at = whole
            .iter()
            .find(|e| e.aggregate_id == "later")
            .unwrap()
            .recorded_at;
        for filter in [
            LogFilter {
                aggregate_types: vec!["Tally".to_owned()],
                aggregate_id: Some("unmatched-2".to_owned()),
                ..LogFilter::default()
            },
            LogFilter {
                event_types: vec!["TallyCounted".to_owned(), "Other".to_owned()],
                since: Some(later_at),
                ..LogFilter::default()
            },
            LogFilter {
                until: Some(later_at),
                ..LogFilter::default()
            },
            LogFilter {
                aggregate_types: vec!["Rule".to_owned()],
                ..LogFilter::default()
            },
        ] {
            let expected: Vec<_> = whole
                .iter()
                .filter(|e| filter.matches(e))
                .cloned()
                .collect();
            let got = db
                .read_filtered(Checkpoint::START, &filter, 100)
                .await
                .unwrap();
            assert_eq!(keys(&got), keys(&expected), "{filter:?}");
        }
    })
    .await;
}
