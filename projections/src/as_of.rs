//! Time travel: one document of a projection as it was at a past point of the log.
//!
//! The live read model only knows the present. To answer "what was team X's rule set at 10:00" this
//! replays the log from its start up to the bound ([`LogBound`]) through the projection's own code, in
//! memory over an empty generation (as a rebuild does), and reads the document at the end. The same
//! fold that built the live document builds the past one, so at any point the two agree: the revision,
//! the rendered text and the hash are those the live endpoint answered then.
//!
//! Only events of the aggregate types the projection follows ([`Projection::follows`]) are read, with
//! the store's filtered reader, in commit order. The cost is a replay of those events per call (the
//! rule and team events, not the change requests or agents that make up most of a busy log); see
//! `docs/adr/0007-history-and-time-travel-by-replay.md`.

use crate::{Docs, EmptyLoader, Projection, ProjectionError};
use edict_application::event_log::{Checkpoint, EventLog, EventLogError, LogBound, LogFilter};
use serde_json::Value;

/// Events read per page while replaying.
const PAGE: usize = 2000;

/// Why a past document could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] EventLogError),
    /// The projection could not apply an event (the live projection is stopped at it too).
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// A document as it was at a bound.
#[derive(Debug, Clone, PartialEq)]
pub struct PastDocument {
    /// The document (`None`: it did not exist then).
    pub doc: Option<Value>,
    /// The checkpoint of the last event replayed (`None`: no event was).
    pub through: Option<Checkpoint>,
    /// How many events were replayed.
    pub events: u64,
}

/// The document `(kind, key)` of `projection` after every event of the log up to `bound`, in commit
/// order.
///
/// # Errors
/// [`AsOfError::Log`] when the log cannot be read, [`AsOfError::Projection`] when an event does not
/// apply.
pub async fn document_as_of(
    log: &dyn EventLog,
    projection: &dyn Projection,
    kind: &str,
    key: &str,
    bound: LogBound,
) -> Result<PastDocument, AsOfError> {
    let filter = LogFilter {
        aggregate_types: projection
            .follows()
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
        ..LogFilter::default()
    };
    let mut loader = EmptyLoader;
    let mut docs = Docs::new(&mut loader);
    let mut after = Checkpoint::START;
    let mut through = None;
    let mut events = 0;
    'log: loop {
        let page = log.read_filtered(after, &filter, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.checkpoint();
        for event in &page {
            if bound.excludes(event) {
                break 'log;
            }
            projection.apply(event, &mut docs).await?;
            through = Some(event.checkpoint());
            events += 1;
        }
    }
    let doc = docs.get::<Value>(kind, key).await?;
    Ok(PastDocument {
        doc,
        through,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::team_rulesets::TeamRulesets;
    use crate::testkit::{ALICE, Log, TEAM_A, at, team_created};
    use crate::{RULESET_KIND, RecordedEvent};
    use async_trait::async_trait;
    use edict_domain::team::{TeamEvent, TeamName};

    /// An in-memory log over recorded events (the default filtered reader scans it).
    struct Memory(Vec<RecordedEvent>);

    #[async_trait]
    impl EventLog for Memory {
        async fn read_all(
            &self,
            after: Checkpoint,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, EventLogError> {
            Ok(self
                .0
                .iter()
                .filter(|e| e.checkpoint() > after)
                .take(limit)
                .cloned()
                .collect())
        }

        async fn position_of(
            &self,
            _: &str,
            _: &str,
            _: i64,
        ) -> Result<Option<i64>, EventLogError> {
            Ok(None)
        }

        async fn event_at(&self, position: i64) -> Result<Option<RecordedEvent>, EventLogError> {
            Ok(self
                .0
                .iter()
                .find(|e| e.global_position == position)
                .cloned())
        }
    }

    fn renamed(name: &str) -> TeamEvent {
        TeamEvent::TeamRenamed {
            team_id: TEAM_A,
            name: TeamName::parse(name).unwrap(),
            by: ALICE,
            at: at(1),
        }
    }

    #[tokio::test]
    async fn a_past_bound_answers_the_document_as_it_was_then() {
        let mut log = Log::default();
        let created = log.team(team_created(TEAM_A, "Platform"));
        let renamed = log.team(renamed("Core"));
        let memory = Memory(vec![created.clone(), renamed.clone()]);
        let key = TEAM_A.to_string();

        let then = document_as_of(
            &memory,
            &TeamRulesets,
            RULESET_KIND,
            &key,
            LogBound::Through(created.checkpoint()),
        )
        .await
        .unwrap();
        assert_eq!(then.events, 1);
        assert_eq!(then.through, Some(created.checkpoint()));
        assert_eq!(then.doc.as_ref().unwrap()["team_name"], "Platform");

        let now = document_as_of(
            &memory,
            &TeamRulesets,
            RULESET_KIND,
            &key,
            LogBound::Through(renamed.checkpoint()),
        )
        .await
        .unwrap();
        assert_eq!(now.doc.as_ref().unwrap()["team_name"], "Core");

        let before = document_as_of(
            &memory,
            &TeamRulesets,
            RULESET_KIND,
            &key,
            LogBound::RecordedBy(created.recorded_at - chrono::Duration::seconds(1)),
        )
        .await
        .unwrap();
        assert_eq!((before.doc, before.through, before.events), (None, None, 0));
    }
}
