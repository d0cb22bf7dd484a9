//! A small aggregate for the store, relay and projector tests, appended through the real write path
//! (cqrs-es over the event repository).

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use edict_infrastructure::store::{Database, EventRepository};
use serde::{Deserialize, Serialize};

/// Counts its events.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
}

/// The one event: the count reached `n`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    /// The count reached `n`.
    Counted {
        /// The count.
        n: u64,
    },
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> String {
        "TallyCounted".to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// The error of a command that never fails.
#[derive(Debug, thiserror::Error)]
#[error("never fails")]
pub struct TallyError;

impl Aggregate for Tally {
    const TYPE: &'static str = "Tally";
    /// How many events to append in this command's transaction.
    type Command = u64;
    type Event = TallyEvent;
    type Error = TallyError;
    type Services = ();

    async fn handle(
        &mut self,
        events: u64,
        _service: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), TallyError> {
        for _ in 0..events {
            let n = self.count + 1;
            sink.write(TallyEvent::Counted { n }, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: TallyEvent) {
        let TallyEvent::Counted { n } = event;
        self.count = n;
    }
}

/// The command side of [`Tally`] over the event store.
pub type Cqrs = CqrsFramework<Tally, PersistedEventStore<EventRepository, Tally>>;

/// The command side over `db`.
pub fn cqrs(db: &Database) -> Cqrs {
    CqrsFramework::new(
        PersistedEventStore::new_event_store(db.event_repository()),
        vec![],
        (),
    )
}

/// Appends `commands` commands of 1 to 3 events each, round robin over `aggregates` aggregates named
/// `<tag>-<i>`. Returns the number of events.
///
/// # Panics
/// When a command fails (a test helper: that is the test failing).
#[allow(clippy::unwrap_used)]
pub async fn append_over(db: &Database, tag: &str, commands: u64, aggregates: u64) -> u64 {
    let cqrs = cqrs(db);
    let mut events = 0;
    for i in 0..commands {
        let count = i % 3 + 1;
        cqrs.execute(&format!("{tag}-{}", i % aggregates), count)
            .await
            .unwrap();
        events += count;
    }
    events
}
