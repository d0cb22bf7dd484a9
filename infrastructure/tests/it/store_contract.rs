//! The event store contract, written once and run against both backends: a real PostgreSQL (its own
//! fresh database per test) and a real SQLite file (its own temporary directory per test).
//!
//! Each case is an async function taking a [`Fixture`]; `contract_tests!` turns it into
//! `postgres::<case>` and `sqlite::<case>`. SQLite-only behaviour (concurrent writers under the busy
//! timeout, unparseable rows) is tested at the end.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent, EventStore};
use edict_application::event_log::{Checkpoint, EventLog, EventLogError, RecordedEvent};
use edict_infrastructure::store::{Database, EventRepository};
use edict_test_kit::store::{Backend, ScratchStore};
use edict_test_kit::{eventually, on_both_backends, run_isolated};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------------
// A small aggregate to append with.

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    created: bool,
    value: u64,
}

#[derive(Debug)]
enum CounterCommand {
    Create,
    Bump { times: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Created,
    Bumped { value: u64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        match self {
            CounterEvent::Created => "CounterCreated",
            CounterEvent::Bumped { .. } => "CounterBumped",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
enum CounterError {
    #[error("counter already created")]
    AlreadyCreated,
    #[error("counter not created")]
    NotCreated,
}

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
            CounterCommand::Create if self.created => Err(CounterError::AlreadyCreated),
            CounterCommand::Create => {
                sink.write(CounterEvent::Created, self).await;
                Ok(())
            }
            CounterCommand::Bump { .. } if !self.created => Err(CounterError::NotCreated),
            CounterCommand::Bump { times } => {
                for _ in 0..times {
                    let value = self.value + 1;
                    sink.write(CounterEvent::Bumped { value }, self).await;
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: CounterEvent) {
        match event {
            CounterEvent::Created => self.created = true,
            CounterEvent::Bumped { value } => self.value = value,
        }
    }
}

type CounterStore = PersistedEventStore<EventRepository, Counter>;

fn event_store(db: &Database) -> CounterStore {
    PersistedEventStore::new_event_store(db.event_repository())
}

/// Runs one command through cqrs-es on the event-store-mode store.
async fn execute(
    db: &Database,
    id: &str,
    command: CounterCommand,
    metadata: HashMap<String, String>,
) -> Result<(), AggregateError<CounterError>> {
    CqrsFramework::new(event_store(db), vec![], ())
        .execute_with_metadata(id, command, metadata)
        .await
}

fn metadata(actor: &str) -> HashMap<String, String> {
    HashMap::from([
        ("actor".to_owned(), actor.to_owned()),
        ("source".to_owned(), "test".to_owned()),
    ])
}

/// What one appended event should look like in the global log.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    aggregate_id: String,
    sequence: i64,
    event: CounterEvent,
    metadata: HashMap<String, String>,
}

/// Appends `command` and returns the events it should have produced, from `sequence`.
async fn append(
    db: &Database,
    id: &str,
    command: CounterCommand,
    first_sequence: i64,
    actor: &str,
) -> Vec<Expected> {
    let events = match &command {
        CounterCommand::Create => vec![CounterEvent::Created],
        CounterCommand::Bump { times } => (0..*times)
            .map(|i| CounterEvent::Bumped {
                value: first_sequence as u64 - 1 + i,
            })
            .collect(),
    };
    execute(db, id, command, metadata(actor)).await.unwrap();
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Expected {
            aggregate_id: id.to_owned(),
            sequence: first_sequence + i as i64,
            event,
            metadata: metadata(actor),
        })
        .collect()
}

fn assert_matches(recorded: &[RecordedEvent], expected: &[Expected]) {
    assert_eq!(recorded.len(), expected.len(), "{recorded:#?}");
    for (got, want) in recorded.iter().zip(expected) {
        assert_eq!(got.aggregate_type, "Counter");
        assert_eq!(got.aggregate_id, want.aggregate_id);
        assert_eq!(got.sequence, want.sequence);
        assert_eq!(got.event_type, want.event.event_type());
        assert_eq!(got.event_version, "1.0");
        assert_eq!(got.payload, serde_json::to_value(&want.event).unwrap());
        assert_eq!(got.metadata, serde_json::to_value(&want.metadata).unwrap());
    }
}

/// Reads the whole log from the start, waiting (bounded) until at least `count` events are readable:
/// on PostgreSQL a transaction elsewhere in the shared cluster can hold the read horizon back a moment.
async fn read_at_least(db: &Database, count: usize) -> Vec<RecordedEvent> {
    eventually(Duration::from_secs(60), || async {
        let events = db.read_all(Checkpoint::START, 100_000).await.unwrap();
        (events.len() >= count).then_some(events)
    })
    .await
    .unwrap_or_else(|| panic!("the log never reached {count} events"))
}

// ---------------------------------------------------------------------------------------------------
// Fixtures: one isolated store per test, removed afterwards (also when the case panics).

type Fixture = ScratchStore;

async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // A nested, missing directory on SQLite: connect must create it.
    let fixture = ScratchStore::new(backend, "store").await;
    run_isolated(case(fixture.clone()), fixture.teardown()).await;
}

on_both_backends!(
    load_returns_what_was_appended,
    conflicting_append_is_an_aggregate_conflict,
    read_all_returns_every_event_in_commit_order_with_metadata_and_time,
    paging_by_checkpoint_returns_the_same_sequence_as_one_read,
    position_of_finds_committed_events_only,
    migrate_twice_is_fine,
    data_survives_closing_and_reconnecting,
    a_zero_limit_or_a_checkpoint_at_the_end_reads_nothing,
);

// ---------------------------------------------------------------------------------------------------
// The contract.

async fn load_returns_what_was_appended(f: Fixture) {
    append(&f.db, "c-1", CounterCommand::Create, 1, "alice").await;
    append(&f.db, "c-1", CounterCommand::Bump { times: 2 }, 2, "bob").await;

    let store = event_store(&f.db);
    let envelopes = store.load_events("c-1").await.unwrap();
    let got: Vec<_> = envelopes
        .iter()
        .map(|e| (e.sequence, e.payload.clone(), e.metadata.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, CounterEvent::Created, metadata("alice")),
            (2, CounterEvent::Bumped { value: 1 }, metadata("bob")),
            (3, CounterEvent::Bumped { value: 2 }, metadata("bob")),
        ]
    );
    let context = store.load_aggregate("c-1").await.unwrap();
    assert!(context.aggregate.created);
    assert_eq!(context.aggregate.value, 2);
    assert_eq!(context.current_sequence, 3);

    assert!(store.load_events("never-written").await.unwrap().is_empty());
}

async fn conflicting_append_is_an_aggregate_conflict(f: Fixture) {
    append(&f.db, "c-1", CounterCommand::Create, 1, "alice").await;
    let store = event_store(&f.db);
    let first = store.load_aggregate("c-1").await.unwrap();
    let second = store.load_aggregate("c-1").await.unwrap();

    store
        .commit(
            vec![CounterEvent::Bumped { value: 1 }],
            first,
            metadata("alice"),
        )
        .await
        .unwrap();
    let conflict = store
        .commit(
            vec![CounterEvent::Bumped { value: 100 }],
            second,
            metadata("mallory"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, AggregateError::AggregateConflict),
        "{conflict:?}"
    );

    // The losing write left nothing behind.
    let events = store.load_events("c-1").await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].payload, CounterEvent::Bumped { value: 1 });
    let log = read_at_least(&f.db, 2).await;
    assert_eq!(log.len(), 2);
}

async fn read_all_returns_every_event_in_commit_order_with_metadata_and_time(f: Fixture) {
    let before = Utc::now() - chrono::Duration::seconds(60);
    let mut expected = Vec::new();
    expected.extend(append(&f.db, "a", CounterCommand::Create, 1, "alice").await);
    expected.extend(append(&f.db, "b", CounterCommand::Create, 1, "bob").await);
    expected.extend(append(&f.db, "a", CounterCommand::Bump { times: 3 }, 2, "carol").await);
    expected.extend(append(&f.db, "c", CounterCommand::Create, 1, "dave").await);
    expected.extend(append(&f.db, "b", CounterCommand::Bump { times: 1 }, 2, "erin").await);
    let after = Utc::now() + chrono::Duration::seconds(60);

    let log = read_at_least(&f.db, expected.len()).await;
    assert_matches(&log, &expected);

    for pair in log.windows(2) {
        assert!(
            pair[0].checkpoint() < pair[1].checkpoint(),
            "checkpoints must increase: {pair:#?}"
        );
        // Appended one after the other, so recorded in that order too.
        assert!(pair[0].recorded_at <= pair[1].recorded_at, "{pair:#?}");
    }
    for event in &log {
        assert!(
            before <= event.recorded_at && event.recorded_at <= after,
            "{event:?}"
        );
        let payload: CounterEvent = serde_json::from_value(event.payload.clone()).unwrap();
        assert_eq!(payload.event_type(), event.event_type);
    }
    // The three events of one command are one transaction.
    assert_eq!(log[2].transaction_id, log[3].transaction_id);
    assert_eq!(log[3].transaction_id, log[4].transaction_id);
    match f.db {
        Database::Sqlite(_) => assert!(log.iter().all(|e| e.transaction_id == 0)),
        Database::Postgres(_) => {
            assert!(log.iter().all(|e| e.transaction_id > 0));
            assert!(log[0].transaction_id < log[1].transaction_id);
        }
    }
}

async fn paging_by_checkpoint_returns_the_same_sequence_as_one_read(f: Fixture) {
    let mut appended = 0;
    for i in 0..6 {
        let id = format!("agg-{i}");
        appended += append(&f.db, &id, CounterCommand::Create, 1, "alice")
            .await
            .len();
        appended += append(
            &f.db,
            &id,
            CounterCommand::Bump { times: i % 3 + 1 },
            2,
            "bob",
        )
        .await
        .len();
    }
    let whole = read_at_least(&f.db, appended).await;
    assert_eq!(whole.len(), appended);

    for limit in [1, 2, 3, 7, 100] {
        let mut paged = Vec::new();
        let mut checkpoint = Checkpoint::START;
        loop {
            let page = f.db.read_all(checkpoint, limit).await.unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            checkpoint = last.checkpoint();
            paged.extend(page);
        }
        assert_eq!(paged, whole, "paging with limit {limit}");
    }
}

async fn position_of_finds_committed_events_only(f: Fixture) {
    append(&f.db, "a", CounterCommand::Create, 1, "alice").await;
    append(&f.db, "b", CounterCommand::Create, 1, "bob").await;
    append(&f.db, "a", CounterCommand::Bump { times: 2 }, 2, "carol").await;
    let log = read_at_least(&f.db, 4).await;

    for event in &log {
        let position =
            f.db.position_of("Counter", &event.aggregate_id, event.sequence)
                .await
                .unwrap();
        assert_eq!(position, Some(event.global_position), "{event:?}");
    }
    assert_eq!(f.db.position_of("Counter", "a", 4).await.unwrap(), None);
    assert_eq!(f.db.position_of("Counter", "zzz", 1).await.unwrap(), None);
    assert_eq!(f.db.position_of("Team", "a", 1).await.unwrap(), None);
}

async fn migrate_twice_is_fine(f: Fixture) {
    append(&f.db, "a", CounterCommand::Create, 1, "alice").await;
    f.db.migrate().await.unwrap();
    f.db.migrate().await.unwrap();
    f.db.ping().await.unwrap();
    append(&f.db, "a", CounterCommand::Bump { times: 1 }, 2, "bob").await;
    let log = read_at_least(&f.db, 2).await;
    assert_eq!(log.len(), 2);
}

async fn data_survives_closing_and_reconnecting(f: Fixture) {
    let mut expected = Vec::new();
    expected.extend(append(&f.db, "a", CounterCommand::Create, 1, "alice").await);
    expected.extend(append(&f.db, "a", CounterCommand::Bump { times: 2 }, 2, "bob").await);
    let before = read_at_least(&f.db, expected.len()).await;
    f.db.close().await;

    // A second start: connect, migrate (a no-op now) and find everything.
    let reopened = Database::connect(&f.url).await.unwrap();
    assert_eq!(reopened.kind(), f.db.kind());
    reopened.migrate().await.unwrap();
    let after = read_at_least(&reopened, expected.len()).await;
    assert_eq!(after, before);
    assert_matches(&after, &expected);
    let context = event_store(&reopened).load_aggregate("a").await.unwrap();
    assert_eq!(context.aggregate.value, 2);

    // And appending continues where it stopped.
    expected.extend(
        append(
            &reopened,
            "a",
            CounterCommand::Bump { times: 1 },
            4,
            "carol",
        )
        .await,
    );
    let log = read_at_least(&reopened, expected.len()).await;
    assert_matches(&log, &expected);
    reopened.close().await;
}

async fn a_zero_limit_or_a_checkpoint_at_the_end_reads_nothing(f: Fixture) {
    assert!(
        f.db.read_all(Checkpoint::START, 10)
            .await
            .unwrap()
            .is_empty()
    );
    append(&f.db, "a", CounterCommand::Create, 1, "alice").await;
    let log = read_at_least(&f.db, 1).await;
    assert!(
        f.db.read_all(Checkpoint::START, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        f.db.read_all(log[0].checkpoint(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------------
// SQLite only.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_eight_concurrent_writers_all_commit_and_are_read_once() {
    run(Backend::Sqlite, |f: Fixture| async move {
        const WRITERS: usize = 8;
        const BUMPS: u64 = 40;
        let db = Arc::new(f.db.clone());
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let db = Arc::clone(&db);
                tokio::spawn(async move {
                    let id = format!("writer-{w}");
                    execute(&db, &id, CounterCommand::Create, metadata("w"))
                        .await
                        .unwrap();
                    for _ in 0..BUMPS {
                        // Every append must succeed: writers wait for the lock (busy timeout).
                        execute(&db, &id, CounterCommand::Bump { times: 1 }, metadata("w"))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }

        let total = WRITERS * (BUMPS as usize + 1);
        let log = f.db.read_all(Checkpoint::START, 100_000).await.unwrap();
        assert_eq!(log.len(), total);
        let distinct: HashSet<_> = log
            .iter()
            .map(|e| (e.aggregate_id.clone(), e.sequence))
            .collect();
        assert_eq!(distinct.len(), total);
        let mut last_sequence: HashMap<&str, i64> = HashMap::new();
        for event in &log {
            let last = last_sequence.entry(&event.aggregate_id).or_insert(0);
            assert_eq!(event.sequence, *last + 1, "{event:?}");
            *last = event.sequence;
        }
        assert!(
            log.windows(2)
                .all(|p| p[0].global_position < p[1].global_position)
        );
    })
    .await;
}

#[tokio::test]
async fn sqlite_a_row_that_is_not_json_is_corrupt() {
    run(Backend::Sqlite, |f: Fixture| async move {
        append(&f.db, "a", CounterCommand::Create, 1, "alice").await;
        let Database::Sqlite(pool) = &f.db else {
            unreachable!()
        };
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) VALUES ('Counter', 'b', 1, 'CounterCreated', '1.0', 'not json', '{}')",
        )
        .execute(pool)
        .await
        .unwrap();

        let error = f.db.read_all(Checkpoint::START, 10).await.unwrap_err();
        assert!(
            matches!(error, EventLogError::Corrupt { position: 2, .. }),
            "{error:?}"
        );
        // Readers before the corrupt row still get their events.
        assert_eq!(f.db.read_all(Checkpoint::START, 1).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn sqlite_in_memory_databases_work_too() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    db.migrate().await.unwrap();
    append(&db, "a", CounterCommand::Create, 1, "alice").await;
    assert_eq!(db.read_all(Checkpoint::START, 10).await.unwrap().len(), 1);
}
