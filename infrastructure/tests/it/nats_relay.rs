//! The relay and the rule set bucket against a real nats-server (2.9.10 with JetStream, shared at
//! 127.0.0.1:4222 unless `EDICT_TEST_NATS_URL` says otherwise) and a real PostgreSQL.
//!
//! Each test has its own prefix (`t<uuid>_`), hence its own stream, bucket, consumers and relay lock, and
//! its own database; it deletes its streams and drops its database at the end. The test that restarts a
//! server starts its own. Every wait is a bounded poll.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Measured figures (takeover time, duplicates dropped) go to stderr, shown with `--nocapture`.
#![allow(clippy::print_stderr)]

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::stream::Stream as JsStream;
use edict_application::delivery::{Origin, RulesetUpdate};
use edict_application::event_log::{Checkpoint, RecordedEvent, RelayedEvent};
use edict_infrastructure::nats::{
    self, KvRulesetPublisher, Nats, NatsError, NatsRelay, NatsSettings, RelaySettings, RelayStatus,
    message_id, relay_checkpoint, watch_rulesets,
};
use edict_infrastructure::store::Database;
use edict_projections::RulesetPublisher;
use edict_test_kit::eventually;
use edict_test_kit::nats::{delete_streams, fresh_prefix, test_nats_url};
use edict_test_kit::resume_panic;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------------
// A small aggregate appended through the real write path (cqrs-es event-store mode).

use crate::support::{Fixture, whole_log, with_fixture, with_restarting_server};
use edict_test_kit::tally;

/// Appends `commands` commands of 1 to 3 events each, round robin over 7 aggregates. Returns the number
/// of events.
async fn append(db: &Database, tag: &str, commands: u64) -> u64 {
    tally::append_over(db, tag, commands, 7).await
}

// ---------------------------------------------------------------------------------------------------
// Fixture: a database, a prefix, a connection.

const DB: &str = "edict_test_nats_relay";

/// A running relay: its status and a way to stop it gracefully or to kill it.
struct RunningRelay {
    status: watch::Receiver<RelayStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn start_relay(fixture: &Fixture, settings: RelaySettings) -> RunningRelay {
    start_relay_with(fixture.db.clone(), fixture.nats.clone(), settings)
}

fn start_relay_with(db: Database, nats: Nats, settings: RelaySettings) -> RunningRelay {
    let relay = NatsRelay::new(db, nats, settings).unwrap();
    let status = relay.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    RunningRelay {
        status,
        stop: Some(stop),
        task,
    }
}

impl RunningRelay {
    /// Graceful shutdown: the relay gives its lock back.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the relay stops on shutdown")
            .unwrap();
    }

    /// Drops the relay wherever it is, as a crash would (its lock connection closes with it).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn small_pages() -> RelaySettings {
    RelaySettings {
        page_size: 64,
        ..RelaySettings::default()
    }
}

/// Waits until `count` events are readable in the log (the read horizon is cluster-wide).
async fn log_of(db: &Database, count: usize) -> Vec<RecordedEvent> {
    eventually(Duration::from_secs(60), || async {
        let log = whole_log(db).await;
        (log.len() >= count).then_some(log)
    })
    .await
    .unwrap_or_else(|| panic!("{count} events never became readable"))
}

/// One stored message.
struct Stored {
    subject: String,
    msg_id: String,
    relayed: RelayedEvent,
}

async fn events_stream(nats: &Nats) -> JsStream {
    nats.jetstream()
        .get_stream(nats.prefix().events_stream())
        .await
        .unwrap()
}

async fn stream_count(nats: &Nats) -> u64 {
    let mut stream = events_stream(nats).await;
    stream.info().await.unwrap().state.messages
}

/// Waits until the stream holds `count` messages, then returns them in stream order.
async fn stream_contents(nats: &Nats, count: u64) -> Vec<Stored> {
    let reached = eventually(Duration::from_secs(60), || async {
        (stream_count(nats).await >= count).then_some(())
    })
    .await;
    let have = stream_count(nats).await;
    assert!(
        reached.is_some(),
        "the stream holds {have} messages, not {count}"
    );
    let stream = events_stream(nats).await;
    let mut stored = Vec::new();
    for sequence in 1..=have {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let msg_id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        stored.push(Stored {
            subject: message.subject.to_string(),
            msg_id,
            relayed: serde_json::from_slice(&message.payload).unwrap(),
        });
    }
    stored
}

fn msg_id_of(event: &RecordedEvent) -> String {
    message_id(&event.aggregate_type, &event.aggregate_id, event.sequence)
}

/// The stream is exactly the log: the same events, in the same order, each naming its predecessor.
fn assert_stream_is_the_log(nats: &Nats, stored: &[Stored], log: &[RecordedEvent]) {
    assert_eq!(stored.len(), log.len(), "stream and log differ in length");
    let mut previous = Checkpoint::START;
    for (index, (message, event)) in stored.iter().zip(log).enumerate() {
        assert_eq!(&message.relayed.event, event, "message {index}");
        assert_eq!(message.relayed.previous, previous, "previous of {index}");
        assert_eq!(message.msg_id, msg_id_of(event), "Nats-Msg-Id of {index}");
        assert_eq!(
            message.subject,
            nats.prefix()
                .event_subject(&event.aggregate_type, &event.aggregate_id),
            "subject of {index}"
        );
        previous = event.checkpoint();
    }
}

/// Every event of the log is in the stream exactly once (in whatever order a server restart left).
fn assert_stream_has_the_log_once(stored: &[Stored], log: &[RecordedEvent]) {
    let ids: Vec<&str> = stored
        .iter()
        .map(|message| message.msg_id.as_str())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a message is stored twice");
    let expected: HashSet<String> = log.iter().map(msg_id_of).collect();
    let got: HashSet<String> = unique.iter().map(|id| (*id).to_owned()).collect();
    assert_eq!(got, expected, "stream and log hold different events");
    for message in stored {
        let event = &message.relayed.event;
        let index = log.iter().position(|e| e == event).expect("event in log");
        let previous = index
            .checked_sub(1)
            .map_or(Checkpoint::START, |i| log[i].checkpoint());
        assert_eq!(
            message.relayed.previous, previous,
            "previous of {}",
            message.msg_id
        );
    }
}

async fn wait_until(
    status: &mut watch::Receiver<RelayStatus>,
    what: &str,
    timeout: Duration,
    condition: impl FnMut(&RelayStatus) -> bool,
) {
    let reached = tokio::time::timeout(timeout, status.wait_for(condition))
        .await
        .map(|seen| seen.map(drop));
    assert!(
        matches!(reached, Ok(Ok(()))),
        "relay never {what} within {timeout:?}: {:?}",
        *status.borrow()
    );
}

// ---------------------------------------------------------------------------------------------------
// 1. Exactly once, in order.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_the_log_exactly_once_and_in_order() {
    with_fixture(DB, |fixture| async move {
        let count = append(&fixture.db, "order", 150).await;
        let mut relay = start_relay(&fixture, small_pages());
        let log = log_of(&fixture.db, count as usize).await;
        let last = log.last().unwrap().checkpoint();
        wait_until(
            &mut relay.status,
            "reached the log's end",
            Duration::from_secs(60),
            |s| s.state.checkpoint == last,
        )
        .await;
        let stored = stream_contents(&fixture.nats, count).await;
        assert_stream_is_the_log(&fixture.nats, &stored, &log);

        // Later appends follow, still in order, with no second copy of anything.
        let more = append(&fixture.db, "later", 20).await;
        let log = log_of(&fixture.db, (count + more) as usize).await;
        let stored = stream_contents(&fixture.nats, count + more).await;
        assert_stream_is_the_log(&fixture.nats, &stored, &log);

        let status = *relay.status.borrow();
        relay.stop().await;
        let state = relay_checkpoint(&fixture.db, fixture.nats.prefix())
            .await
            .unwrap();
        assert_eq!(state.checkpoint, log.last().unwrap().checkpoint());
        assert_eq!(state.published, count + more);
        assert_eq!(status.duplicates_here, 0);
    })
    .await;
}

// 2. A restart publishes nothing twice and loses nothing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_publishes_nothing_twice_and_loses_nothing() {
    with_fixture(DB, |fixture| async move {
        let writer = {
            let db = fixture.db.clone();
            tokio::spawn(async move { append(&db, "restart", 600).await })
        };
        let mut first = start_relay(&fixture, small_pages());
        wait_until(
            &mut first.status,
            "published 200 events",
            Duration::from_secs(60),
            |s| s.published_here >= 200,
        )
        .await;
        // A crash: dropped wherever it is, maybe between a page's PubAcks and its checkpoint.
        first.kill().await;
        let mut second = start_relay(&fixture, small_pages());
        let count = writer.await.unwrap();
        let log = log_of(&fixture.db, count as usize).await;
        let last = log.last().unwrap().checkpoint();
        wait_until(
            &mut second.status,
            "reached the log's end",
            Duration::from_secs(60),
            |s| s.state.checkpoint == last,
        )
        .await;
        let stored = stream_contents(&fixture.nats, count).await;
        assert_stream_is_the_log(&fixture.nats, &stored, &log);
        assert_eq!(stream_count(&fixture.nats).await, count);
        let state = relay_checkpoint(&fixture.db, fixture.nats.prefix())
            .await
            .unwrap();
        assert_eq!(state.published, count);
        second.stop().await;
    })
    .await;
}

// 3. Leadership: one publisher at a time; a standby takes over within 5 s.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_relay_publishes_and_a_standby_takes_over_within_five_seconds() {
    with_fixture(DB, |fixture| async move {
        let mut leader = start_relay(&fixture, small_pages());
        wait_until(&mut leader.status, "led", Duration::from_secs(10), |s| {
            s.leading
        })
        .await;
        // The standby has its own NATS connection, as another process would.
        let standby_nats = nats::connect(fixture.nats.settings().clone())
            .await
            .unwrap();
        let mut standby = start_relay_with(fixture.db.clone(), standby_nats, small_pages());

        let first = append(&fixture.db, "both", 120).await;
        let log = log_of(&fixture.db, first as usize).await;
        let last = log.last().unwrap().checkpoint();
        wait_until(
            &mut leader.status,
            "reached the log's end",
            Duration::from_secs(60),
            |s| s.state.checkpoint == last,
        )
        .await;
        let standby_status = *standby.status.borrow();
        assert!(!standby_status.leading, "{standby_status:?}");
        assert_eq!(standby_status.published_here, 0);
        assert!(
            !standby.status.has_changed().unwrap(),
            "the standby never moved"
        );

        // The leader dies with its lock connection; appends keep coming.
        let writer = {
            let db = fixture.db.clone();
            tokio::spawn(async move { append(&db, "after", 120).await })
        };
        let killed_at = tokio::time::Instant::now();
        leader.kill().await;
        wait_until(
            &mut standby.status,
            "took over",
            Duration::from_secs(5),
            |s| s.leading,
        )
        .await;
        let takeover = killed_at.elapsed();
        let second = writer.await.unwrap();
        let log = log_of(&fixture.db, (first + second) as usize).await;
        let last = log.last().unwrap().checkpoint();
        wait_until(
            &mut standby.status,
            "reached the log's end",
            Duration::from_secs(60),
            |s| s.state.checkpoint == last,
        )
        .await;
        let stored = stream_contents(&fixture.nats, first + second).await;
        assert_stream_is_the_log(&fixture.nats, &stored, &log);
        assert_eq!(stream_count(&fixture.nats).await, first + second);
        eprintln!("standby took over {takeover:?} after the leader died");
        standby.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lock_connection_stops_and_stands_by() {
    with_fixture(DB, |fixture| async move {
        let mut relay = start_relay(&fixture, small_pages());
        wait_until(&mut relay.status, "led", Duration::from_secs(10), |s| {
            s.leading
        })
        .await;
        let Database::Postgres(pool) = &fixture.db else {
            unreachable!("the fixture is PostgreSQL")
        };
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'edict relay lock'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(terminated, vec![true]);
        wait_until(
            &mut relay.status,
            "stopped leading",
            Duration::from_secs(3),
            |s| !s.leading,
        )
        .await;
        // With nobody else around it wins the lock again and goes on publishing.
        wait_until(
            &mut relay.status,
            "led again",
            Duration::from_secs(5),
            |s| s.leading,
        )
        .await;
        let count = append(&fixture.db, "again", 10).await;
        let log = log_of(&fixture.db, count as usize).await;
        let stored = stream_contents(&fixture.nats, count).await;
        assert_stream_is_the_log(&fixture.nats, &stored, &log);
        relay.stop().await;
    })
    .await;
}

// 4. A nats-server restart mid-stream.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_recovers_from_a_nats_server_restart_and_stores_every_event_once() {
    // Longer than the 5 s publish acknowledgement timeout: the pages in flight fail.
    with_restarting_server(DB, Duration::from_secs(6), |fixture, restart| async move {
        let writer = {
            let db = fixture.db.clone();
            tokio::spawn(async move { append(&db, "restart", 400).await })
        };
        let mut relay = start_relay(&fixture, small_pages());
        wait_until(
            &mut relay.status,
            "published 150 events",
            Duration::from_secs(60),
            |s| s.published_here >= 150,
        )
        .await;
        assert!(
            !writer.is_finished(),
            "the restart comes while events are appended"
        );
        let published_before = relay.status.borrow().published_here;
        restart.now().await.unwrap();
        let count = writer.await.unwrap();
        assert!(count > published_before);
        let log = log_of(&fixture.db, count as usize).await;
        let last = log.last().unwrap().checkpoint();
        wait_until(
            &mut relay.status,
            "reached the log's end",
            Duration::from_secs(60),
            |s| s.state.checkpoint == last,
        )
        .await;
        let stored = stream_contents(&fixture.nats, count).await;
        assert_stream_has_the_log_once(&stored, &log);
        assert_eq!(stream_count(&fixture.nats).await, count);
        let in_order = stored
            .iter()
            .zip(&log)
            .all(|(message, event)| &message.relayed.event == event);
        let status = *relay.status.borrow();
        eprintln!(
            "server restarted after {published_before} of {count} events; stream in log order: \
             {in_order}; duplicates dropped by the server: {}",
            status.duplicates_here
        );
        relay.stop().await;
    })
    .await;
}

// 5. The rule set bucket on nats-server 2.9.

async fn next_update(
    updates: &mut (impl futures::Stream<Item = Result<RulesetUpdate, NatsError>> + Unpin),
) -> RulesetUpdate {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update within 10 s")
        .expect("the watch goes on")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rulesets_bucket_works_on_this_server_and_gateways_see_every_revision() {
    let settings = NatsSettings::new(test_nats_url(), &fresh_prefix()).unwrap();
    let nats = nats::connect(settings).await.unwrap();
    let outcome = tokio::spawn({
        let nats = nats.clone();
        async move {
            // Twice: ensuring is idempotent.
            nats.ensure_streams().await.unwrap();
            let publisher = KvRulesetPublisher::open(&nats).await.unwrap();
            publisher
                .publish(
                    "team-a",
                    &json!({ "revision": 1, "hash": "a1" }),
                    &Origin::default(),
                )
                .await
                .unwrap();
            let mut updates = Box::pin(watch_rulesets(&nats).await.unwrap());
            let initial = next_update(&mut updates).await;
            assert_eq!(initial.team, "team-a");
            assert_eq!(*initial.ruleset, json!({ "revision": 1, "hash": "a1" }));

            publisher
                .publish(
                    "team-b",
                    &json!({ "revision": 1, "hash": "b1" }),
                    &Origin::default(),
                )
                .await
                .unwrap();
            publisher
                .publish(
                    "team-a",
                    &json!({ "revision": 2, "hash": "a2" }),
                    &Origin::default(),
                )
                .await
                .unwrap();
            let b = next_update(&mut updates).await;
            let a = next_update(&mut updates).await;
            assert_eq!(
                (b.team.as_str(), b.ruleset["hash"].clone()),
                ("team-b", json!("b1"))
            );
            assert_eq!(
                (a.team.as_str(), a.ruleset["hash"].clone()),
                ("team-a", json!("a2"))
            );

            // The bucket keeps the latest value per team only.
            let store = nats
                .jetstream()
                .get_key_value(nats.prefix().rulesets_bucket())
                .await
                .unwrap();
            let current = store.get("team-a").await.unwrap().unwrap();
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&current).unwrap()["hash"],
                "a2"
            );
            let mut stream = nats
                .jetstream()
                .get_stream(format!("KV_{}", nats.prefix().rulesets_bucket()))
                .await
                .unwrap();
            assert_eq!(stream.info().await.unwrap().state.messages, 2);
        }
    })
    .await;
    delete_streams(&nats).await;
    resume_panic(outcome);
}

// ---------------------------------------------------------------------------------------------------
// Measurement (not a check): `cargo test --release -p edict-infrastructure --test it --
// --ignored --nocapture nats_relay::relay_publish_rate`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn relay_publish_rate() {
    with_fixture(DB, |fixture| async move {
        const EVENTS: i64 = 50_000;
        let Database::Postgres(pool) = &fixture.db else {
            unreachable!("the fixture is PostgreSQL")
        };
        // Seeded with one statement: the relay, not the write path, is measured here.
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) \
             SELECT 'Tally', 'bench-' || (g % 100), g / 100 + 1, 'TallyCounted', '1.0', \
                    json_build_object('Counted', json_build_object('n', g / 100 + 1)), \
                    json_build_object('actor', 'bench') \
               FROM generate_series(0, $1 - 1) AS g",
        )
        .bind(EVENTS)
        .execute(pool)
        .await
        .unwrap();
        let log = log_of(&fixture.db, EVENTS as usize).await;
        let last = log.last().unwrap().checkpoint();
        let started = tokio::time::Instant::now();
        let mut relay = start_relay(&fixture, RelaySettings::default());
        wait_until(
            &mut relay.status,
            "reached the log's end",
            Duration::from_secs(300),
            |s| s.state.checkpoint == last,
        )
        .await;
        let elapsed = started.elapsed();
        relay.stop().await;
        assert_eq!(stream_count(&fixture.nats).await, EVENTS as u64);
        eprintln!(
            "relay: {EVENTS} events in {elapsed:?} = {:.0} events/s (pages of 512, pipelined)",
            EVENTS as f64 / elapsed.as_secs_f64()
        );
    })
    .await;
}
