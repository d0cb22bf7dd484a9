//! The projection runner and the read-model store, against a real PostgreSQL (its own fresh database
//! per test) and a real SQLite file (its own temporary directory per test).
//!
//! Events are appended through the real write path (cqrs-es over `Database::event_repository`) by a
//! small `Counter` aggregate; the `Tally` projection below counts them per counter and per team (it
//! reads documents back, so the runner's loader is exercised, and counting is not idempotent, so an
//! event applied twice shows). The expected read model is always the in-memory fold of the same log
//! (`edict_projections::replay`), compared by content hash.
//!
//! Each case is an async function taking a [`Fixture`]; `both!` turns it into `postgres::<case>` and
//! `sqlite::<case>`. On PostgreSQL the log's read horizon is cluster-wide, so transactions of tests
//! running beside these can delay reads (never reorder or skip them): waits are bounded polls.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent, RelayedEvent};
use edict_application::read_models::{DocFilter, ReadModelError, ReadModels};
use edict_infrastructure::projection::{
    Handled, ProjectionRunner, RebuildPhase, RunnerError, SqlReadModels, WatchPublisher,
};
use edict_infrastructure::store::{Database, EventRepository};
use edict_projections::{DocMeta, Docs, Projection, ProjectionError, RULESET_KIND};
use edict_test_kit::store::{Backend, ScratchStore};
use edict_test_kit::{eventually, on_both_backends, run_isolated};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------
// A small aggregate to append with.

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    team: Option<String>,
    value: u64,
}

#[derive(Debug)]
enum CounterCommand {
    Create { team: String },
    Bump { times: u64 },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Created { team: String },
    Bumped { value: u64 },
    Deleted,
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        match self {
            CounterEvent::Created { .. } => "CounterCreated",
            CounterEvent::Bumped { .. } => "CounterBumped",
            CounterEvent::Deleted => "CounterDeleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
struct CounterError;

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CounterCommand,
        _service: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        match command {
            CounterCommand::Create { team } => {
                sink.write(CounterEvent::Created { team }, self).await;
            }
            CounterCommand::Bump { times } => {
                for _ in 0..times {
                    let value = self.value + 1;
                    sink.write(CounterEvent::Bumped { value }, self).await;
                }
            }
            CounterCommand::Delete => sink.write(CounterEvent::Deleted, self).await,
        }
        Ok(())
    }

    fn apply(&mut self, event: CounterEvent) {
        match event {
            CounterEvent::Created { team } => self.team = Some(team),
            CounterEvent::Bumped { value } => self.value = value,
            CounterEvent::Deleted => self.team = None,
        }
    }
}

async fn execute(db: &Database, id: &str, command: CounterCommand) {
    CqrsFramework::new(
        PersistedEventStore::<EventRepository, Counter>::new_event_store(db.event_repository()),
        vec![],
        (),
    )
    .execute(id, command)
    .await
    .unwrap();
}

async fn create(db: &Database, id: &str, team: &str, bumps: u64) {
    execute(
        db,
        id,
        CounterCommand::Create {
            team: team.to_owned(),
        },
    )
    .await;
    if bumps > 0 {
        execute(db, id, CounterCommand::Bump { times: bumps }).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// The projection under test.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CounterDoc {
    id: String,
    team: String,
    events: u64,
    value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TeamDoc {
    team: String,
    events: u64,
    counters: i64,
}

/// Counts events per counter (kind `counter`, status `odd`/`even` by its event count) and per team
/// (kind [`RULESET_KIND`], so the runner publishes it). Fails on the events of `poison` while it is set.
#[derive(Debug, Clone)]
struct Tally {
    name: &'static str,
    poison: Arc<Mutex<Option<String>>>,
}

impl Tally {
    fn named(name: &'static str) -> Tally {
        Tally {
            name,
            poison: Arc::default(),
        }
    }

    fn poison(&self, aggregate: Option<&str>) {
        *self.poison.lock().unwrap() = aggregate.map(str::to_owned);
    }
}

fn counter_meta(doc: &CounterDoc) -> DocMeta {
    DocMeta {
        team: Some(doc.team.clone()),
        status: Some(
            if doc.events.is_multiple_of(2) {
                "even"
            } else {
                "odd"
            }
            .to_owned(),
        ),
        sort_key: doc.id.clone(),
    }
}

async fn bump_team(docs: &mut Docs<'_>, team: &str, counters: i64) -> Result<(), ProjectionError> {
    let mut doc: TeamDoc = docs.get(RULESET_KIND, team).await?.unwrap_or(TeamDoc {
        team: team.to_owned(),
        ..TeamDoc::default()
    });
    doc.events += 1;
    doc.counters += counters;
    let meta = DocMeta {
        team: Some(team.to_owned()),
        status: None,
        sort_key: team.to_owned(),
    };
    docs.put(RULESET_KIND, team, meta, &doc)
}

#[async_trait]
impl Projection for Tally {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn apply(
        &self,
        event: &RecordedEvent,
        docs: &mut Docs<'_>,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "Counter" {
            return Ok(());
        }
        if self.poison.lock().unwrap().as_deref() == Some(event.aggregate_id.as_str()) {
            return Err(ProjectionError::Inconsistent {
                position: event.global_position,
                reason: format!("poisoned counter {}", event.aggregate_id),
            });
        }
        let decoded: CounterEvent = serde_json::from_value(event.payload.clone()).map_err(|e| {
            ProjectionError::Undecodable {
                position: event.global_position,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                reason: e.to_string(),
            }
        })?;
        let id = event.aggregate_id.as_str();
        let existing: Option<CounterDoc> = docs.get("counter", id).await?;
        let missing = || ProjectionError::Inconsistent {
            position: event.global_position,
            reason: format!("unknown counter {id}"),
        };
        match decoded {
            CounterEvent::Created { team } => {
                let doc = CounterDoc {
                    id: id.to_owned(),
                    team: team.clone(),
                    events: 1,
                    value: 0,
                };
                docs.put("counter", id, counter_meta(&doc), &doc)?;
                bump_team(docs, &team, 1).await
            }
            CounterEvent::Bumped { value } => {
                let mut doc = existing.ok_or_else(missing)?;
                doc.events += 1;
                doc.value = value;
                docs.put("counter", id, counter_meta(&doc), &doc)?;
                bump_team(docs, &doc.team, 0).await
            }
            CounterEvent::Deleted => {
                let doc = existing.ok_or_else(missing)?;
                docs.delete("counter", id);
                bump_team(docs, &doc.team, -1).await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Fixtures: one isolated store per test, removed afterwards (also when the case panics).

type Fixture = ScratchStore;

/// What the cases ask of their store beyond [`ScratchStore`].
trait FixtureExt {
    /// A second, independent connection pool to the same database (another process, in effect).
    async fn reconnect(&self) -> Database;
    fn runner(&self, projection: &Tally) -> ProjectionRunner;
}

impl FixtureExt for Fixture {
    async fn reconnect(&self) -> Database {
        Database::connect(&self.url).await.unwrap()
    }

    fn runner(&self, projection: &Tally) -> ProjectionRunner {
        ProjectionRunner::new(self.db.clone(), Arc::new(projection.clone()), None)
    }
}

async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fixture = ScratchStore::new(backend, "projection").await;
    run_isolated(case(fixture.clone()), fixture.teardown()).await;
}

on_both_backends!(
    catch_up_applies_every_event_once_and_again_changes_nothing,
    in_order_messages_apply_and_redeliveries_are_duplicates,
    a_lost_message_is_caught_up_from_the_store,
    two_runners_fed_the_same_messages_apply_each_event_once,
    rebuild_under_load_swaps_in_an_identical_generation,
    concurrent_rebuilds_leave_one_generation,
    a_failing_event_stops_the_projection_until_a_rebuild,
    read_models_page_and_filter_the_served_generation,
    covers_says_whether_an_event_is_applied,
    rule_sets_reach_the_publisher_after_commit,
);

// ---------------------------------------------------------------------------------------------------
// Helpers.

/// The whole log, once at least `count` events are readable.
async fn log_of(db: &Database, count: usize) -> Vec<RecordedEvent> {
    eventually(WAIT, || async {
        let events = db.read_all(Checkpoint::START, 1_000_000).await.unwrap();
        (events.len() >= count).then_some(events)
    })
    .await
    .unwrap_or_else(|| panic!("the log never reached {count} events"))
}

/// The messages a relay would publish for `events`.
fn relayed(events: &[RecordedEvent]) -> Vec<RelayedEvent> {
    let mut previous = Checkpoint::START;
    events
        .iter()
        .map(|event| {
            let message = RelayedEvent {
                previous,
                event: event.clone(),
            };
            previous = event.checkpoint();
            message
        })
        .collect()
}

/// The content hash of the in-memory fold of `events`: what every generation must equal.
async fn expected_hash(projection: &Tally, events: &[RecordedEvent]) -> String {
    let docs = edict_projections::replay(projection, events).await.unwrap();
    edict_projections::content_hash(docs.iter().map(|(key, doc)| (key, doc)))
}

/// Catches up until the status shows no lag, and returns the number of events applied.
async fn caught_up(runner: &ProjectionRunner) -> i64 {
    eventually(WAIT, || async {
        runner.catch_up().await.unwrap();
        let status = runner.status().await.unwrap();
        (status.lag == 0).then_some(status.events_applied)
    })
    .await
    .expect("the projection never caught up")
}

/// Every document of `kind` in the served generation, by key, through the read-model port.
async fn listed(db: &Database, projection: &str, kind: &str) -> BTreeMap<String, Value> {
    let page = SqlReadModels::new(db.clone())
        .list(projection, kind, &DocFilter::default(), None, 100_000)
        .await
        .unwrap();
    assert_eq!(page.next, None);
    page.docs.into_iter().map(|d| (d.sort_key, d.doc)).collect()
}

/// How many documents of `projection` are stored outside the served generation.
async fn stray_docs(db: &Database, projection: &str, served: i64) -> i64 {
    let sql = "SELECT COUNT(*) FROM read_docs WHERE projection = $1 AND generation <> $2";
    match db {
        Database::Postgres(pool) => sqlx::query_scalar(sql)
            .bind(projection)
            .bind(served)
            .fetch_one(pool)
            .await
            .unwrap(),
        Database::Sqlite(pool) => sqlx::query_scalar(sql)
            .bind(projection)
            .bind(served)
            .fetch_one(pool)
            .await
            .unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------------
// The cases.

async fn catch_up_applies_every_event_once_and_again_changes_nothing(f: Fixture) {
    let tally = Tally::named("tally");
    let runner = f.runner(&tally);
    // 1 + 3 + 1 + 2 + 1 (delete) + 1 = 9 events, across two teams.
    create(&f.db, "c-1", "red", 3).await;
    create(&f.db, "c-2", "blue", 2).await;
    execute(&f.db, "c-2", CounterCommand::Delete).await;
    create(&f.db, "c-3", "red", 0).await;
    let events = log_of(&f.db, 9).await;

    assert_eq!(caught_up(&runner).await, 9);
    let status = runner.status().await.unwrap();
    assert_eq!(status.checkpoint, events[8].checkpoint());
    assert_eq!((status.generation, status.lag, status.error), (1, 0, None));
    let hash = runner.content_hash(None).await.unwrap();
    assert_eq!(hash, expected_hash(&tally, &events).await);

    let counters = listed(&f.db, "tally", "counter").await;
    assert_eq!(counters.keys().collect::<Vec<_>>(), ["c-1", "c-3"]);
    assert_eq!(counters["c-1"]["events"], 4);
    let teams = listed(&f.db, "tally", RULESET_KIND).await;
    assert_eq!(
        teams["red"],
        json!({"team": "red", "events": 5, "counters": 2})
    );
    assert_eq!(
        teams["blue"],
        json!({"team": "blue", "events": 4, "counters": 0})
    );

    // Again: nothing to do, nothing changes.
    assert_eq!(runner.catch_up().await.unwrap(), 0);
    assert_eq!(runner.content_hash(None).await.unwrap(), hash);
    let again = runner.status().await.unwrap();
    assert_eq!(
        (again.checkpoint, again.events_applied),
        (status.checkpoint, 9)
    );
}

async fn in_order_messages_apply_and_redeliveries_are_duplicates(f: Fixture) {
    let tally = Tally::named("tally");
    let runner = f.runner(&tally);
    create(&f.db, "c-1", "red", 2).await;
    create(&f.db, "c-2", "red", 1).await;
    let events = log_of(&f.db, 5).await;
    let messages = relayed(&events);

    for message in &messages {
        assert_eq!(runner.handle(message).await.unwrap(), Handled::Applied);
        // Redelivered at once, and the first one again: both already applied.
        assert_eq!(runner.handle(message).await.unwrap(), Handled::Duplicate);
        assert_eq!(
            runner.handle(&messages[0]).await.unwrap(),
            Handled::Duplicate
        );
    }
    let status = runner.status().await.unwrap();
    assert_eq!((status.events_applied, status.lag), (5, 0));
    assert_eq!(status.checkpoint, events[4].checkpoint());
    assert_eq!(
        runner.content_hash(None).await.unwrap(),
        expected_hash(&tally, &events).await
    );
}

async fn a_lost_message_is_caught_up_from_the_store(f: Fixture) {
    let tally = Tally::named("tally");
    let runner = f.runner(&tally);
    create(&f.db, "c-1", "red", 3).await;
    create(&f.db, "c-2", "blue", 3).await;
    let events = log_of(&f.db, 8).await;
    let messages = relayed(&events);

    for message in &messages[..3] {
        assert_eq!(runner.handle(message).await.unwrap(), Handled::Applied);
    }
    // Messages 3 and 4 are lost; 5 arrives: the runner reads 3, 4 and 5 from the store.
    assert_eq!(
        runner.handle(&messages[5]).await.unwrap(),
        Handled::CaughtUp { events: 5 }
    );
    // (It read to the head in one batch: 3..8.) The lost ones arrive late: duplicates.
    assert_eq!(
        runner.handle(&messages[3]).await.unwrap(),
        Handled::Duplicate
    );
    assert_eq!(
        runner.handle(&messages[7]).await.unwrap(),
        Handled::Duplicate
    );

    let straight = f.runner(&Tally::named("straight"));
    caught_up(&straight).await;
    assert_eq!(
        runner.content_hash(None).await.unwrap(),
        straight.content_hash(None).await.unwrap()
    );
    assert_eq!(
        runner.content_hash(None).await.unwrap(),
        expected_hash(&tally, &events).await
    );
    assert_eq!(runner.status().await.unwrap().events_applied, 8);
}

async fn two_runners_fed_the_same_messages_apply_each_event_once(f: Fixture) {
    let tally = Tally::named("tally");
    for i in 0..10 {
        create(&f.db, &format!("c-{i}"), ["red", "blue", "green"][i % 3], 4).await;
    }
    let events = log_of(&f.db, 50).await;
    let messages = relayed(&events);

    // Two instances with their own connection pools; one gets every message twice, in order, the other
    // in reverse order (so its first message is a gap it fills from the store).
    let first = Arc::new(ProjectionRunner::new(
        f.reconnect().await,
        Arc::new(tally.clone()),
        None,
    ));
    let second = Arc::new(ProjectionRunner::new(
        f.reconnect().await,
        Arc::new(tally.clone()),
        None,
    ));
    let forward = {
        let (runner, messages) = (Arc::clone(&first), messages.clone());
        tokio::spawn(async move {
            for message in &messages {
                runner.handle(message).await.unwrap();
                runner.handle(message).await.unwrap();
            }
        })
    };
    let backward = {
        let (runner, messages) = (Arc::clone(&second), messages.clone());
        tokio::spawn(async move {
            for message in messages.iter().rev() {
                runner.handle(message).await.unwrap();
            }
        })
    };
    forward.await.unwrap();
    backward.await.unwrap();

    let status = first.status().await.unwrap();
    assert_eq!((status.events_applied, status.lag), (50, 0));
    assert_eq!(
        first.content_hash(None).await.unwrap(),
        expected_hash(&tally, &events).await
    );
    let counters = listed(&f.db, "tally", "counter").await;
    assert!(
        counters.values().all(|doc| doc["events"] == 5),
        "{counters:#?}"
    );
}

async fn rebuild_under_load_swaps_in_an_identical_generation(f: Fixture) {
    let tally = Tally::named("tally");
    // 25 counters, 11 events each.
    for i in 0..25 {
        create(
            &f.db,
            &format!("c-{i}"),
            ["red", "blue", "green"][i % 3],
            10,
        )
        .await;
    }
    let runner = f.runner(&tally);
    caught_up(&runner).await;

    // A writer appends and announces each commit; a polling runner follows; a reader reads.
    let notify = Arc::new(tokio::sync::Notify::new());
    let (stop_polling, polling_stopped) = tokio::sync::watch::channel(false);
    let polling = tokio::spawn(f.runner(&tally).run_polling(
        Arc::clone(&notify),
        polling_stopped,
        Duration::from_millis(50),
    ));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (db, notify, writing) = (f.db.clone(), Arc::clone(&notify), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut appended = 0_usize;
            while writing.load(Ordering::SeqCst) {
                let id = format!("c-{}", appended % 25);
                execute(&db, &id, CounterCommand::Bump { times: 2 }).await;
                notify.notify_one();
                appended += 1;
            }
            appended
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (db, writing, reads) = (f.db.clone(), Arc::clone(&writing), Arc::clone(&reads));
        tokio::spawn(async move {
            let models = SqlReadModels::new(db);
            // Events counted per team only grow, across generations too: a swap never goes back.
            let mut seen = 0;
            while writing.load(Ordering::SeqCst) {
                let page = models
                    .list("tally", RULESET_KIND, &DocFilter::default(), None, 100)
                    .await
                    .unwrap();
                let total: u64 = page
                    .docs
                    .iter()
                    .map(|d| d.doc["events"].as_u64().unwrap())
                    .sum();
                assert!(total >= seen, "read {total} events after {seen}");
                seen = total;
                assert!(
                    models
                        .get("tally", "counter", "c-0")
                        .await
                        .unwrap()
                        .is_some()
                );
                reads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let phases = Mutex::new(Vec::new());
    let report = f
        .runner(&tally)
        .rebuild(&|progress| phases.lock().unwrap().push(progress.phase))
        .await
        .unwrap();
    assert_eq!(report.generation, 2);
    assert!(report.events >= 275, "{report:?}");
    let phases = phases.into_inner().unwrap();
    assert!(
        phases.contains(&RebuildPhase::Replaying) && phases.ends_with(&[RebuildPhase::Swapping])
    );

    // Let the live runner move on the new generation for a while, then stop everything.
    let after_swap = report.events;
    eventually(WAIT, || async {
        let status = runner.status().await.unwrap();
        (status.events_applied > i64::try_from(after_swap).unwrap() + 10).then_some(())
    })
    .await
    .expect("the live runner never moved on after the swap");
    writing.store(false, Ordering::SeqCst);
    let appended = writer.await.unwrap();
    reader.await.unwrap();
    assert!(reads.load(Ordering::SeqCst) > 0);
    let events = log_of(&f.db, 275 + 2 * appended).await;
    eventually(WAIT, || async {
        notify.notify_one();
        let status = runner.status().await.unwrap();
        (status.lag == 0).then_some(())
    })
    .await
    .expect("the live runner never caught up");
    stop_polling.send(true).unwrap();
    polling.await.unwrap();

    let status = runner.status().await.unwrap();
    assert_eq!(status.generation, 2);
    assert_eq!(status.events_applied, i64::try_from(events.len()).unwrap());
    assert_eq!(
        runner.content_hash(None).await.unwrap(),
        expected_hash(&tally, &events).await
    );
    assert_eq!(stray_docs(&f.db, "tally", 2).await, 0);
    assert_eq!(listed(&f.db, "tally", "counter").await.len(), 25);
}

async fn concurrent_rebuilds_leave_one_generation(f: Fixture) {
    let tally = Tally::named("tally");
    for i in 0..10 {
        create(&f.db, &format!("c-{i}"), "red", 3).await;
    }
    let events = log_of(&f.db, 40).await;
    let (one, two) = (f.runner(&tally), f.runner(&tally));
    let (a, b) = tokio::join!(one.rebuild(&|_| {}), two.rebuild(&|_| {}));
    // Both may succeed one after the other; when they overlap, the later swap loses cleanly.
    let winners: Vec<_> = [a, b].into_iter().filter_map(Result::ok).collect();
    assert!(!winners.is_empty());
    let status = one.status().await.unwrap();
    assert!(winners.iter().any(|w| w.generation == status.generation));
    assert_eq!(stray_docs(&f.db, "tally", status.generation).await, 0);
    let expected = expected_hash(&tally, &events).await;
    assert!(winners.iter().all(|w| w.content_hash == expected));
    assert_eq!(one.content_hash(None).await.unwrap(), expected);
}

async fn a_failing_event_stops_the_projection_until_a_rebuild(f: Fixture) {
    let tally = Tally::named("tally");
    let runner = f.runner(&tally);
    create(&f.db, "c-1", "red", 2).await;
    create(&f.db, "poison", "red", 0).await;
    create(&f.db, "c-2", "red", 1).await;
    let events = log_of(&f.db, 6).await;
    let poisoned = &events[3];
    assert_eq!(poisoned.aggregate_id, "poison");

    tally.poison(Some("poison"));
    let stopped = RunnerError::Stopped {
        position: poisoned.global_position,
        reason: format!(
            "inconsistent event at position {}: poisoned counter poison",
            poisoned.global_position
        ),
    };
    assert_eq!(runner.catch_up().await, Err(stopped.clone()));
    // The events before it are applied; it and those after are not, and stay so.
    let status = runner.status().await.unwrap();
    assert_eq!(status.checkpoint, events[2].checkpoint());
    assert_eq!((status.events_applied, status.lag), (3, 3));
    assert!(
        status
            .error
            .as_deref()
            .unwrap()
            .contains("poisoned counter")
    );
    assert_eq!(runner.catch_up().await, Err(stopped.clone()));
    let messages = relayed(&events);
    assert_eq!(runner.handle(&messages[5]).await, Err(stopped.clone()));
    assert_eq!(runner.handle(&messages[3]).await, Err(stopped.clone()));
    assert!(listed(&f.db, "tally", "counter").await.contains_key("c-1"));
    assert!(!listed(&f.db, "tally", "counter").await.contains_key("c-2"));

    // Fixed code alone does not skip anything: the projection stays stopped until rebuilt.
    tally.poison(None);
    assert_eq!(runner.catch_up().await, Err(stopped));
    let report = runner.rebuild(&|_| {}).await.unwrap();
    assert_eq!(report.events, 6);
    let status = runner.status().await.unwrap();
    assert_eq!((status.error, status.lag, status.generation), (None, 0, 2));
    assert_eq!(runner.catch_up().await, Ok(0));
    assert_eq!(report.content_hash, expected_hash(&tally, &events).await);
    assert_eq!(
        runner.content_hash(None).await.unwrap(),
        report.content_hash
    );

    // A rebuild that hits the failing event swaps nothing and leaves the served generation alone.
    tally.poison(Some("c-2"));
    let failed = runner.rebuild(&|_| {}).await;
    assert!(
        matches!(failed, Err(RunnerError::Stopped { .. })),
        "{failed:?}"
    );
    let status = runner.status().await.unwrap();
    assert_eq!((status.error, status.generation), (None, 2));
    assert_eq!(stray_docs(&f.db, "tally", 2).await, 0);
}

async fn read_models_page_and_filter_the_served_generation(f: Fixture) {
    let tally = Tally::named("tally");
    let runner = f.runner(&tally);
    // 12 counters: c-00..c-11, teams alternate red/blue, counter i has i + 1 events (odd when i even).
    for i in 0..12_u64 {
        create(
            &f.db,
            &format!("c-{i:02}"),
            ["red", "blue"][(i % 2) as usize],
            i,
        )
        .await;
    }
    caught_up(&runner).await;
    let models = SqlReadModels::new(f.db.clone());

    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = models
            .list(
                "tally",
                "counter",
                &DocFilter::default(),
                after.as_deref(),
                5,
            )
            .await
            .unwrap();
        pages += 1;
        assert!(page.docs.len() <= 5);
        keys.extend(
            page.docs
                .iter()
                .map(|d| d.doc["id"].as_str().unwrap().to_owned()),
        );
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.docs.last().map(|d| &d.sort_key));
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let all: Vec<String> = (0..12).map(|i| format!("c-{i:02}")).collect();
    assert_eq!(keys, all);

    // Exactly a page's worth: no next page.
    let page = models
        .list("tally", "counter", &DocFilter::default(), Some("c-05"), 6)
        .await
        .unwrap();
    assert_eq!((page.docs.len(), page.next), (6, None));

    let filter = |team: Option<&str>, status: Option<&str>| DocFilter {
        team: team.map(str::to_owned),
        status: status.map(str::to_owned),
        ..DocFilter::default()
    };
    let ids = |docs: Vec<edict_application::read_models::ListedDoc>| -> Vec<String> {
        docs.into_iter().map(|d| d.sort_key).collect()
    };
    let red = models
        .list("tally", "counter", &filter(Some("red"), None), None, 100)
        .await
        .unwrap();
    assert_eq!(
        ids(red.docs),
        ["c-00", "c-02", "c-04", "c-06", "c-08", "c-10"]
    );
    let even = models
        .list("tally", "counter", &filter(None, Some("even")), None, 2)
        .await
        .unwrap();
    assert_eq!(ids(even.docs), ["c-01", "c-03"]);
    let blue_even = models
        .list(
            "tally",
            "counter",
            &filter(Some("blue"), Some("even")),
            Some("c-03"),
            100,
        )
        .await
        .unwrap();
    assert_eq!(ids(blue_even.docs), ["c-05", "c-07", "c-09", "c-11"]);
    let none = models
        .list(
            "tally",
            "counter",
            &filter(Some("red"), Some("even")),
            None,
            100,
        )
        .await
        .unwrap();
    assert!(none.docs.is_empty() && none.next.is_none());

    assert_eq!(
        models.get("tally", "counter", "c-03").await.unwrap(),
        Some(json!({"id": "c-03", "team": "blue", "events": 4, "value": 3}))
    );
    assert_eq!(models.get("tally", "counter", "c-99").await.unwrap(), None);
    assert!(matches!(
        models.get("nope", "counter", "c-03").await,
        Err(ReadModelError::UnknownProjection(_))
    ));
    assert!(matches!(
        models
            .list("nope", "counter", &DocFilter::default(), None, 5)
            .await,
        Err(ReadModelError::UnknownProjection(_))
    ));
    assert!(matches!(
        models.status("nope").await,
        Err(ReadModelError::UnknownProjection(_))
    ));
    let status = models.status("tally").await.unwrap();
    assert_eq!((status.events_applied, status.lag), (78, 0));

    // After a rebuild the same reads answer the same.
    runner.rebuild(&|_| {}).await.unwrap();
    let red_again = models
        .list("tally", "counter", &filter(Some("red"), None), None, 100)
        .await
        .unwrap();
    assert_eq!(red_again.docs.len(), 6);
    assert_eq!(models.status("tally").await.unwrap().generation, 2);
}

async fn covers_says_whether_an_event_is_applied(f: Fixture) {
    let tally = Tally::named("tally");
    let runner = f.runner(&tally);
    let models = SqlReadModels::new(f.db.clone());
    create(&f.db, "c-1", "red", 1).await;
    caught_up(&runner).await;
    let first =
        f.db.position_of("Counter", "c-1", 2)
            .await
            .unwrap()
            .unwrap();
    assert!(models.covers("tally", first).await.unwrap());

    execute(&f.db, "c-1", CounterCommand::Bump { times: 1 }).await;
    let later =
        f.db.position_of("Counter", "c-1", 3)
            .await
            .unwrap()
            .unwrap();
    assert!(!models.covers("tally", later).await.unwrap());
    assert!(!models.covers("tally", later + 1_000).await.unwrap());
    caught_up(&runner).await;
    assert!(models.covers("tally", later).await.unwrap());
    assert!(models.covers("tally", first).await.unwrap());
    assert!(matches!(
        models.covers("nope", first).await,
        Err(ReadModelError::UnknownProjection(_))
    ));
}

async fn rule_sets_reach_the_publisher_after_commit(f: Fixture) {
    let tally = Tally::named("tally");
    let publisher = Arc::new(WatchPublisher::new());
    let mut updates = publisher.subscribe();
    let runner = ProjectionRunner::new(
        f.db.clone(),
        Arc::new(tally.clone()),
        Some(publisher.clone()),
    );
    create(&f.db, "c-1", "red", 0).await;
    create(&f.db, "c-2", "blue", 0).await;
    let events = log_of(&f.db, 2).await;
    for message in relayed(&events) {
        runner.handle(&message).await.unwrap();
    }
    let first = updates.recv().await.unwrap();
    assert_eq!(first.team, "red");
    assert_eq!(
        *first.ruleset,
        json!({"team": "red", "events": 1, "counters": 1})
    );
    assert_eq!(updates.recv().await.unwrap().team, "blue");

    // A publisher that starts later converges through republish_all.
    let late = Arc::new(WatchPublisher::new());
    let restarted = ProjectionRunner::new(f.db.clone(), Arc::new(tally), Some(late.clone()));
    assert_eq!(restarted.republish_all().await.unwrap(), 2);
    assert_eq!(
        late.current("blue").as_deref(),
        Some(&json!({"team": "blue", "events": 1, "counters": 1}))
    );
}
