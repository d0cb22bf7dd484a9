//! The projector consumer with the real `ProjectionRunner`, a real nats-server (shared at 127.0.0.1:4222
//! unless `EDICT_TEST_NATS_URL` says otherwise) and a real PostgreSQL.
//!
//! The `Follow` projection below records, per aggregate, how many events it applied and the last
//! sequence; it stops on an event that is not the next of its aggregate, so an event applied twice or
//! skipped stops it (and fails the test). Its read model must equal the in-memory fold of the log.
//!
//! Each test has its own prefix (`t<uuid>_`) and database and cleans both up. The projector's idle
//! catch-up is set to a minute, so within a test everything after the start arrives through NATS (or
//! through the catch-up a gap in the messages triggers). Every wait is a bounded poll.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use edict_application::event_log::{Checkpoint, RecordedEvent, RelayedEvent};
use edict_infrastructure::nats::{
    Nats, NatsRelay, ProjectorError, ProjectorSettings, RelaySettings, message_id, run_projector,
};
use edict_infrastructure::projection::ProjectionRunner;
use edict_infrastructure::store::Database;
use edict_projections::{DocMeta, Docs, Projection, ProjectionError};
use edict_test_kit::eventually;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------
// A small aggregate appended through the real write path.

use crate::support::{Fixture, whole_log, with_fixture, with_restarting_server};
use edict_test_kit::tally;

/// Appends `commands` commands of 1 to 3 events each, round robin over 5 aggregates named `<tag>-<i>`.
/// Returns the number of events.
async fn append(db: &Database, tag: &str, commands: u64) -> u64 {
    tally::append_over(db, tag, commands, 5).await
}

// ---------------------------------------------------------------------------------------------------
// The projection under test.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FollowDoc {
    events: u64,
    last_sequence: i64,
}

/// Per aggregate: events applied and the last sequence. Stops at an event that is not its aggregate's
/// next one, and at every event of the aggregate `poison`.
struct Follow;

#[async_trait]
impl Projection for Follow {
    fn name(&self) -> &'static str {
        "follow"
    }

    async fn apply(
        &self,
        event: &RecordedEvent,
        docs: &mut Docs<'_>,
    ) -> Result<(), ProjectionError> {
        let id = event.aggregate_id.as_str();
        if id == "poison" {
            return Err(ProjectionError::Inconsistent {
                position: event.global_position,
                reason: "poisoned".to_owned(),
            });
        }
        let mut doc: FollowDoc = docs.get("follow", id).await?.unwrap_or(FollowDoc {
            events: 0,
            last_sequence: 0,
        });
        if event.sequence != doc.last_sequence + 1 {
            return Err(ProjectionError::Inconsistent {
                position: event.global_position,
                reason: format!(
                    "{id}: sequence {} after {}",
                    event.sequence, doc.last_sequence
                ),
            });
        }
        doc.events += 1;
        doc.last_sequence = event.sequence;
        let meta = DocMeta {
            team: None,
            status: None,
            sort_key: id.to_owned(),
        };
        docs.put("follow", id, meta, &doc)
    }
}

// ---------------------------------------------------------------------------------------------------
// Fixture.

const DB: &str = "edict_test_nats_projector";

fn runner(fixture: &Fixture) -> Arc<ProjectionRunner> {
    Arc::new(ProjectionRunner::new(
        fixture.db.clone(),
        Arc::new(Follow),
        None,
    ))
}

/// A task with a shutdown switch.
struct Running<T> {
    stop: oneshot::Sender<()>,
    task: JoinHandle<T>,
}

impl<T> Running<T> {
    async fn stop(self) -> T {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops on shutdown")
            .unwrap()
    }
}

fn start_projector(fixture: &Fixture) -> Running<Result<(), ProjectorError>> {
    start_projector_with(
        fixture,
        ProjectorSettings {
            idle_catch_up: Duration::from_secs(60),
            ..ProjectorSettings::default()
        },
    )
}

fn start_projector_with(
    fixture: &Fixture,
    settings: ProjectorSettings,
) -> Running<Result<(), ProjectorError>> {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_projector(
        fixture.nats.clone(),
        runner(fixture),
        settings,
        async move {
            let _ = stopped.await;
        },
    ));
    Running { stop, task }
}

fn start_relay(fixture: &Fixture) -> Running<()> {
    let relay = NatsRelay::new(
        fixture.db.clone(),
        fixture.nats.clone(),
        RelaySettings::default(),
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

/// Waits until `count` events are readable in the log (the read horizon is cluster-wide: transactions
/// of tests running beside this one can hold it back for a moment).
async fn log_of(db: &Database, count: u64) -> Vec<RecordedEvent> {
    eventually(WAIT, || async {
        let log = whole_log(db).await;
        (log.len() as u64 >= count).then_some(log)
    })
    .await
    .unwrap_or_else(|| panic!("{count} events never became readable"))
}

/// Waits until the projection has applied the whole log of `count` events, then checks its read model
/// is the fold of the log: every event applied exactly once.
async fn assert_converges(fixture: &Fixture, count: u64) {
    let runner = runner(fixture);
    let log = log_of(&fixture.db, count).await;
    assert_eq!(log.len() as u64, count);
    let last = log
        .last()
        .map_or(Checkpoint::START, RecordedEvent::checkpoint);
    let reached = eventually(WAIT, || async {
        let status = runner.status().await.unwrap();
        assert_eq!(status.error, None, "the projection stopped");
        (status.checkpoint == last).then_some(())
    })
    .await;
    let status = runner.status().await.unwrap();
    assert!(
        reached.is_some(),
        "projection stuck at {status:?}, log ends at {last:?}"
    );
    let expected = edict_projections::replay(&Follow, &log).await.unwrap();
    let expected = edict_projections::content_hash(expected.iter().map(|(key, doc)| (key, doc)));
    assert_eq!(runner.content_hash(None).await.unwrap(), expected);
    assert_eq!(status.events_applied, log.len() as i64);
}

/// Waits until the projection's consumer has every message of the stream acknowledged.
async fn assert_all_acked(fixture: &Fixture) {
    let name = fixture.nats.prefix().projection_consumer("follow");
    let mut stream = fixture
        .nats
        .jetstream()
        .get_stream(fixture.nats.prefix().events_stream())
        .await
        .unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let acked = eventually(WAIT, || async {
        let info = stream.consumer_info(&name).await.unwrap();
        (info.ack_floor.stream_sequence == last && info.num_ack_pending == 0).then_some(())
    })
    .await;
    let info = stream.consumer_info(&name).await.unwrap();
    assert!(
        acked.is_some(),
        "not everything acknowledged: stream ends at {last}, consumer {info:?}"
    );
}

/// Waits until the projector has caught up at start and is pulling messages (its consumer exists and
/// has a pull request waiting), so what is appended afterwards reaches it through NATS.
async fn wait_consuming(fixture: &Fixture) {
    let name = fixture.nats.prefix().projection_consumer("follow");
    let stream = fixture
        .nats
        .jetstream()
        .get_stream(fixture.nats.prefix().events_stream())
        .await
        .unwrap();
    eventually(WAIT, || async {
        let info = stream.consumer_info(&name).await.ok()?;
        (info.num_waiting > 0).then_some(())
    })
    .await
    .expect("the projector pulls messages");
}

/// Publishes one event of the log directly, with the given predecessor (bypassing the relay).
async fn publish_directly(nats: &Nats, event: &RecordedEvent, previous: Checkpoint) {
    let payload = serde_json::to_vec(&RelayedEvent {
        previous,
        event: event.clone(),
    })
    .unwrap();
    nats.jetstream()
        .send_publish(
            nats.prefix()
                .event_subject(&event.aggregate_type, &event.aggregate_id),
            PublishMessage::build()
                .payload(payload.into())
                .message_id(message_id(
                    &event.aggregate_type,
                    &event.aggregate_id,
                    event.sequence,
                )),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------------
// Cases.

/// Relay and projector together: events from before the start (caught up from the store, and their
/// messages partly purged from the stream), events while running, a projector restart in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_relayed_event_is_applied_once_across_purges_and_restarts() {
    with_fixture(DB, |fixture| async move {
        let early = append(&fixture.db, "early", 40).await;
        let relay = start_relay(&fixture);
        // The stream lost its first messages (retention, or a purge) before the projector ever ran.
        let mut stream = fixture
            .nats
            .jetstream()
            .get_stream(fixture.nats.prefix().events_stream())
            .await
            .unwrap();
        eventually(WAIT, || {
            let stream = stream.clone();
            async move {
                let mut stream = stream;
                (stream.info().await.unwrap().state.messages == early).then_some(())
            }
        })
        .await
        .expect("the relay publishes the early events");
        stream.purge().keep(10).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 10);

        let projector = start_projector(&fixture);
        let live = append(&fixture.db, "live", 60).await;
        assert_converges(&fixture, early + live).await;
        assert_all_acked(&fixture).await;

        // A projector restart resumes its durable consumer.
        projector.stop().await.unwrap();
        let between = append(&fixture.db, "between", 20).await;
        let projector = start_projector(&fixture);
        let after = append(&fixture.db, "after", 20).await;
        assert_converges(&fixture, early + live + between + after).await;
        assert_all_acked(&fixture).await;
        projector.stop().await.unwrap();
        relay.stop().await;
    })
    .await;
}

/// No relay: messages are published by hand, one of them skipping events the transport "lost", one
/// with a wrong predecessor, one late duplicate. The projection still ends up with every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_lost_on_the_transport_is_filled_in_from_the_store() {
    with_fixture(DB, |fixture| async move {
        let projector = start_projector(&fixture);
        wait_consuming(&fixture).await;
        let gap = append(&fixture.db, "gap", 3).await;
        let first = log_of(&fixture.db, gap).await;
        let runner = runner(&fixture);
        let reaches = |checkpoint: Checkpoint| {
            let runner = &runner;
            async move {
                eventually(WAIT, || async {
                    (runner.status().await.unwrap().checkpoint >= checkpoint).then_some(())
                })
                .await
                .is_some()
            }
        };

        // Only the fifth event arrives: four before it were lost. The projection fills them in from the
        // store (and takes what follows them there too).
        publish_directly(&fixture.nats, &first[4], first[3].checkpoint()).await;
        assert!(
            reaches(first[4].checkpoint()).await,
            "caught up to the fifth event"
        );

        // A late copy of a lost message is a duplicate; a message naming the wrong predecessor still
        // leads to the store.
        let more = append(&fixture.db, "more", 3).await;
        let second = log_of(&fixture.db, gap + more).await;
        publish_directly(&fixture.nats, &first[2], first[1].checkpoint()).await;
        publish_directly(&fixture.nats, &second[8], Checkpoint::START).await;
        assert!(
            reaches(second[8].checkpoint()).await,
            "caught up to the ninth event"
        );

        // The rest in order, as the relay would send them.
        let rest = append(&fixture.db, "rest", 3).await;
        let log = log_of(&fixture.db, gap + more + rest).await;
        for index in 9..log.len() {
            publish_directly(&fixture.nats, &log[index], log[index - 1].checkpoint()).await;
        }
        assert_converges(&fixture, gap + more + rest).await;
        assert_all_acked(&fixture).await;
        projector.stop().await.unwrap();
    })
    .await;
}

/// A projection that cannot apply an event stops its consumer and leaves that message unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_projection_ends_its_consumer_and_leaves_the_message_unacked() {
    with_fixture(DB, |fixture| async move {
        let projector = start_projector(&fixture);
        wait_consuming(&fixture).await;
        let fine = append(&fixture.db, "fine", 3).await;
        let cqrs = tally::cqrs(&fixture.db);
        cqrs.execute("poison", 1).await.unwrap();
        let log = log_of(&fixture.db, fine + 1).await;
        let poison = log
            .iter()
            .position(|event| event.aggregate_id == "poison")
            .unwrap();
        for index in 0..=poison {
            let previous = index
                .checked_sub(1)
                .map_or(Checkpoint::START, |i| log[i].checkpoint());
            publish_directly(&fixture.nats, &log[index], previous).await;
        }
        let ended = tokio::time::timeout(WAIT, projector.task)
            .await
            .expect("the projector ends")
            .unwrap();
        match ended {
            Err(ProjectorError::Stopped {
                projection,
                position,
                ..
            }) => {
                assert_eq!(projection, "follow");
                assert_eq!(position, log[poison].global_position);
            }
            other => panic!("expected a stopped projection, got {other:?}"),
        }
        let status = runner(&fixture).status().await.unwrap();
        assert!(status.error.is_some(), "{status:?}");
        assert_eq!(status.checkpoint, log[poison - 1].checkpoint());
        let info = fixture
            .nats
            .jetstream()
            .get_stream(fixture.nats.prefix().events_stream())
            .await
            .unwrap()
            .consumer_info(fixture.nats.prefix().projection_consumer("follow"))
            .await
            .unwrap();
        assert!(
            info.ack_floor.stream_sequence < (poison + 1) as u64,
            "the poisoned message is not acknowledged: {info:?}"
        );
        drop(projector.stop);
    })
    .await;
}

/// The consumer disappears under a running projector (deleted by an operator, or lost with the
/// server's store): the projector creates it again, and the redelivered history changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_created_again_and_the_projection_goes_on() {
    with_fixture(DB, |fixture| async move {
        let relay = start_relay(&fixture);
        let projector = start_projector(&fixture);
        wait_consuming(&fixture).await;
        let first = append(&fixture.db, "first", 20).await;
        assert_converges(&fixture, first).await;
        assert_all_acked(&fixture).await;

        let stream = fixture
            .nats
            .jetstream()
            .get_stream(fixture.nats.prefix().events_stream())
            .await
            .unwrap();
        let name = fixture.nats.prefix().projection_consumer("follow");
        stream.delete_consumer(&name).await.unwrap();
        let second = append(&fixture.db, "second", 20).await;
        assert_converges(&fixture, first + second).await;
        wait_consuming(&fixture).await;
        assert_all_acked(&fixture).await;
        projector.stop().await.unwrap();
        relay.stop().await;
    })
    .await;
}

/// The server goes away for longer than the pull heartbeat while events keep coming: the projector
/// reopens its consumer and ends up with every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_recovers_from_a_nats_server_restart() {
    // Longer than the 5 s pull heartbeat: the message stream fails and is reopened.
    with_restarting_server(DB, Duration::from_secs(7), |fixture, restart| async move {
        let relay = start_relay(&fixture);
        // Acks sent just before the kill can be lost with it; the server redelivers those messages after
        // the ack wait (30 s by default, shortened here), and the runner recognises them.
        let projector = start_projector_with(
            &fixture,
            ProjectorSettings {
                idle_catch_up: Duration::from_secs(60),
                ack_wait: Duration::from_secs(3),
                ..ProjectorSettings::default()
            },
        );
        wait_consuming(&fixture).await;
        let before = append(&fixture.db, "before", 20).await;
        assert_converges(&fixture, before).await;

        let back = restart.now();
        // Appends go on while the server is down (the store does not need it).
        let during = append(&fixture.db, "during", 20).await;
        back.await.unwrap();
        let after = append(&fixture.db, "after", 20).await;
        assert_converges(&fixture, before + during + after).await;
        assert_all_acked(&fixture).await;
        projector.stop().await.unwrap();
        relay.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------
// Measurement (not a check): `cargo test --release -p edict-infrastructure --test it --
// --ignored --nocapture nats_projector::event_to_read_model_lag`.

/// Commands per second and for how long.
const LAG_RATE: u64 = 500;
const LAG_SECONDS: u64 = 10;
const LAG_WRITERS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
#[allow(clippy::print_stderr)]
async fn event_to_read_model_lag() {
    with_fixture(DB, |fixture| async move {
        let relay = start_relay(&fixture);
        let projector = start_projector(&fixture);
        wait_consuming(&fixture).await;
        let Database::Postgres(pool) = fixture.db.clone() else {
            unreachable!("the fixture is PostgreSQL")
        };
        let origin = tokio::time::Instant::now();

        // The relay's and the projection's checkpoints, sampled every 2 ms: (elapsed, position).
        let (stop_sampling, mut sampling_stopped) = oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let mut relayed: Vec<(Duration, i64)> = Vec::new();
            let mut applied: Vec<(Duration, i64)> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            loop {
                tokio::select! {
                    _ = &mut sampling_stopped => return (relayed, applied),
                    _ = tick.tick() => {}
                }
                let (relay, projection): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT (SELECT max(position) FROM relay_state), \
                            (SELECT position FROM projection_state WHERE name = 'follow')",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                let now = origin.elapsed();
                for (samples, position) in [(&mut relayed, relay), (&mut applied, projection)] {
                    let position = position.unwrap_or(0);
                    if samples.last().is_none_or(|(_, last)| *last != position) {
                        samples.push((now, position));
                    }
                }
            }
        });

        // Writers, each on its own aggregates, paced to LAG_RATE commands/s in total; each command
        // appends one event and records when its commit returned.
        let mut writers = Vec::new();
        for writer in 0..LAG_WRITERS {
            let db = fixture.db.clone();
            writers.push(tokio::spawn(async move {
                let cqrs = tally::cqrs(&db);
                let mut tick = tokio::time::interval(Duration::from_micros(
                    1_000_000 * LAG_WRITERS / LAG_RATE,
                ));
                let mut commits = Vec::new();
                for i in 0..LAG_RATE * LAG_SECONDS / LAG_WRITERS {
                    tick.tick().await;
                    let id = format!("lag-{writer}-{}", i % 50);
                    cqrs.execute(&id, 1).await.unwrap();
                    commits.push((id, i / 50 + 1, origin.elapsed()));
                }
                commits
            }));
        }
        let mut commits = Vec::new();
        for writer in writers {
            commits.extend(writer.await.unwrap());
        }
        let count = commits.len() as u64;
        assert_converges(&fixture, count).await;
        let _ = stop_sampling.send(());
        let (relayed, applied) = sampler.await.unwrap();
        let log = whole_log(&fixture.db).await;
        let position: std::collections::HashMap<(String, i64), i64> = log
            .iter()
            .map(|e| ((e.aggregate_id.clone(), e.sequence), e.global_position))
            .collect();
        // Single-event commands: positions follow commit order closely enough that a checkpoint at or
        // past an event's position means the event is through.
        let lags = |samples: &[(Duration, i64)]| {
            let mut lags: Vec<Duration> = commits
                .iter()
                .map(|(id, sequence, committed)| {
                    let position = position[&(id.clone(), *sequence as i64)];
                    let through = samples
                        .iter()
                        .find(|(_, checkpoint)| *checkpoint >= position)
                        .map(|(at, _)| *at)
                        .expect("through");
                    through.saturating_sub(*committed)
                })
                .collect();
            lags.sort();
            let at = |q: f64| lags[((lags.len() as f64 * q) as usize).min(lags.len() - 1)];
            format!(
                "p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
                at(0.5),
                at(0.9),
                at(0.99),
                at(1.0)
            )
        };
        let writing = commits
            .iter()
            .map(|(_, _, committed)| *committed)
            .max()
            .unwrap_or_default();
        eprintln!(
            "{count} commands at {LAG_RATE}/s (written in {writing:?}); sampled every 2 ms\n  \
             commit -> relayed: {}\n  commit -> applied: {}",
            lags(&relayed),
            lags(&applied)
        );
        projector.stop().await.unwrap();
        relay.stop().await;
    })
    .await;
}
