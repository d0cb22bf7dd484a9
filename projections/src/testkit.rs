//! Test support: domain events wrapped as the global log records them (payload = `serde_json::to_value`
//! of the event, as cqrs-es stores it; per-aggregate sequences and global positions increasing), and a
//! few fixtures.

use crate::decode::AggregateType;
use crate::{DocKey, Docs, Projection, RecordedEvent, StoredDoc};
use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::DomainEvent;
use edict_domain::rule::{
    Category, Description, PathGlob, RuleContent, RuleEvent, RuleName, RuleSpec, Tag,
};
use edict_domain::team::{TeamEvent, TeamName};
use edict_domain::{Enforcement, Layer, RuleId, TeamId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use uuid::Uuid;

pub const RULE_A: RuleId = RuleId(Uuid::from_u128(0x1a));
pub const RULE_B: RuleId = RuleId(Uuid::from_u128(0x1b));
pub const RULE_C: RuleId = RuleId(Uuid::from_u128(0x1c));
pub const TEAM_A: TeamId = TeamId(Uuid::from_u128(0x7a));
pub const TEAM_B: TeamId = TeamId(Uuid::from_u128(0x7b));
pub const ALICE: UserId = UserId(Uuid::from_u128(0xa));
pub const BOB: UserId = UserId(Uuid::from_u128(0xb));
pub const CAROL: UserId = UserId(Uuid::from_u128(0xc));

/// 2026-01-02T03:04:05Z plus `minutes`.
pub fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_767_323_045 + minutes * 60)
}

/// Builds recorded events with increasing global positions and per-aggregate sequences.
#[derive(Debug, Default)]
pub struct Log {
    position: i64,
    sequences: HashMap<(String, String), i64>,
}

impl Log {
    /// Records `event` of an aggregate of type `kind`; the aggregate id is read from the payload.
    pub fn record<E: Serialize + DomainEvent>(
        &mut self,
        kind: AggregateType,
        event: &E,
    ) -> RecordedEvent {
        let payload = serde_json::to_value(event).unwrap();
        let id_field = match kind {
            AggregateType::Rule => "rule_id",
            AggregateType::Team => "team_id",
            AggregateType::ChangeRequest => "change_request_id",
            AggregateType::User => "user_id",
            AggregateType::Agent => "agent_id",
        };
        let body = payload.as_object().unwrap().values().next().unwrap();
        let id = body[id_field].as_str().unwrap().to_owned();
        self.position += 1;
        let sequence = self
            .sequences
            .entry((kind.as_str().to_owned(), id.clone()))
            .or_default();
        *sequence += 1;
        RecordedEvent {
            global_position: self.position,
            transaction_id: 0,
            aggregate_type: kind.as_str().to_owned(),
            aggregate_id: id,
            sequence: *sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload,
            metadata: serde_json::json!({
                "actor": "test", "request_id": "r", "correlation_id": "c", "source": "api"
            }),
            recorded_at: at(0) + TimeDelta::seconds(self.position),
        }
    }

    pub fn rule(&mut self, event: RuleEvent) -> RecordedEvent {
        self.record(AggregateType::Rule, &event)
    }

    pub fn team(&mut self, event: TeamEvent) -> RecordedEvent {
        self.record(AggregateType::Team, &event)
    }
}

pub fn spec(layer: Layer, name: &str) -> RuleSpec {
    RuleSpec {
        name: RuleName::parse(name).unwrap(),
        description: Description::parse("What it is for").unwrap(),
        layer,
        content: RuleContent::parse(&format!("{name}: do it.\n")).unwrap(),
        category: Some(Category::parse("Practice").unwrap()),
        priority: 0,
        tags: [Tag::parse("practice").unwrap()].into(),
        triggers: if layer == Layer::Project {
            vec![PathGlob::parse("src/**").unwrap()]
        } else {
            Vec::new()
        },
    }
}

pub fn rule_drafted(rule_id: RuleId, layer: Layer, name: &str) -> RuleEvent {
    RuleEvent::RuleDrafted {
        rule_id,
        revision: 1,
        spec: spec(layer, name),
        by: ALICE,
        at: at(1),
    }
}

/// The events that take a fresh rule to revision 1 approved (with its spec), as the aggregate writes
/// them (organization rules also get their block enforcement at draft time).
pub fn approved_rule(rule_id: RuleId, spec: RuleSpec) -> Vec<RuleEvent> {
    let mut events = vec![RuleEvent::RuleDrafted {
        rule_id,
        revision: 1,
        spec: spec.clone(),
        by: ALICE,
        at: at(1),
    }];
    if spec.layer == Layer::Organization {
        events.push(RuleEvent::OrganizationEnforcementSet {
            rule_id,
            enforcement: Enforcement::BLOCK,
            by: ALICE,
            at: at(1),
        });
    }
    events.extend([
        RuleEvent::RuleSubmitted {
            rule_id,
            revision: 1,
            by: ALICE,
            at: at(2),
        },
        RuleEvent::RuleApprovalRecorded {
            rule_id,
            revision: 1,
            approver: BOB,
            approvals: 1,
            quorum: 1,
            at: at(3),
        },
        RuleEvent::RuleRevisionApproved {
            rule_id,
            revision: 1,
            spec,
            approvers: vec![BOB],
            at: at(3),
        },
    ]);
    events
}

pub fn team_created(team_id: TeamId, name: &str) -> TeamEvent {
    TeamEvent::TeamCreated {
        team_id,
        name: TeamName::parse(name).unwrap(),
        by: ALICE,
        at: at(0),
    }
}

pub fn attached(
    team_id: TeamId,
    rule_id: RuleId,
    layer: Layer,
    enforcement: Enforcement,
) -> TeamEvent {
    TeamEvent::RuleAttached {
        team_id,
        rule_id,
        rule_layer: layer,
        rule_revision: 1,
        enforcement,
        by: ALICE,
        at: at(5),
    }
}

/// A document store kept across batches, as the runner's database would be.
#[derive(Debug, Default, Clone)]
pub struct MapLoader(pub std::collections::BTreeMap<DocKey, StoredDoc>);

#[async_trait::async_trait]
impl crate::DocLoader for MapLoader {
    async fn load(
        &mut self,
        kind: &str,
        key: &str,
    ) -> Result<Option<StoredDoc>, crate::ProjectionError> {
        Ok(self.0.get(&(kind.to_owned(), key.to_owned())).cloned())
    }
}

/// Applies `events` one by one through a persistent cache, keeping every document.
pub struct Harness {
    pub store: MapLoader,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            store: MapLoader::default(),
        }
    }

    /// Applies `events` as one batch (a fresh cache over the store), writes the dirty documents back and
    /// returns the keys written.
    pub async fn batch(
        &mut self,
        projection: &dyn Projection,
        events: &[RecordedEvent],
    ) -> Vec<DocKey> {
        let mut loader = self.store.clone();
        let mut docs = Docs::new(&mut loader);
        for event in events {
            projection.apply(event, &mut docs).await.unwrap();
        }
        let dirty = docs.take_dirty().unwrap();
        let mut keys = Vec::new();
        for (key, doc) in dirty {
            keys.push(key.clone());
            match doc {
                Some(doc) => {
                    self.store.0.insert(key, doc);
                }
                None => {
                    self.store.0.remove(&key);
                }
            }
        }
        keys
    }

    pub fn doc<T: DeserializeOwned>(&self, kind: &str, key: impl ToString) -> Option<T> {
        self.store
            .0
            .get(&(kind.to_owned(), key.to_string()))
            .map(|stored| serde_json::from_value(stored.doc.clone()).unwrap())
    }

    pub fn meta(&self, kind: &str, key: impl ToString) -> Option<crate::DocMeta> {
        self.store
            .0
            .get(&(kind.to_owned(), key.to_string()))
            .map(|s| s.meta.clone())
    }
}
