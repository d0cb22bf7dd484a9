//! The history, for auditors: `GET /api/v1/events` (the global log, filtered and cursor-paginated by
//! checkpoint), `GET /api/v1/{rules,teams,change-requests,users,agents}/{id}/history` (every event of one
//! resource with its state after each), and the `as_of` variants of `GET /api/v1/teams/{id}/ruleset`
//! and `GET /api/v1/agents/{id}/enforced` (time travel), whose handlers live with their resources and
//! call [`ruleset_as_of`] and [`enforced_as_of`] here.

use super::contract::documents::{AsOfEntry, RuleSetDocument, typed};
use super::problem::{ApiResult, ErrorResponse};
use super::rate_limit::{LimitedResult, RateLimits};
use super::security::BearerAuth;
use super::teams::EnforcedDto;
use chrono::{DateTime, Utc};
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::event_log::{Checkpoint, LogFilter, RecordedEvent};
use edict_application::history::{AsOf, Audited, HistoryEntry};
use edict_application::principal::Principal;
use edict_domain::AgentId;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Tags)]
enum HistoryTags {
    /// The history of every change: the global event log, each resource's events with its state after
    /// each, and views of the past (`as_of`). Auditors and org_admins.
    History,
}

/// Who and what caused an event.
#[derive(Debug, Clone, Object)]
pub struct EventMetadataDto {
    /// `user:<id>`, `agent:<id>` or `system:<reason>`.
    pub actor: String,
    /// The HTTP request (or system run) that carried the command.
    pub request_id: String,
    /// The causal chain: the request id that started it (or the client's `X-Correlation-Id`).
    pub correlation_id: String,
    /// `api`, `agent` or `system`.
    pub source: String,
}

/// One event of the global log.
#[derive(Debug, Clone, Object)]
pub struct EventDto {
    /// Its global position (unique; increasing in insertion order; may have holes).
    pub global_position: i64,
    /// The appending transaction (PostgreSQL `xid8`; 0 on SQLite). The log is in commit order:
    /// by transaction, then position.
    pub transaction_id: u64,
    /// Pass as `after` to read the events committed after this one.
    pub cursor: String,
    /// `Rule`, `Team`, `ChangeRequest`, `User` or `Agent`.
    pub aggregate_type: String,
    /// The resource's id.
    pub aggregate_id: String,
    /// The event's number within its resource, from 1 (the resource's version after it).
    pub sequence: i64,
    /// The event type, e.g. `RuleSubmitted`.
    pub event_type: String,
    /// The payload's schema version, e.g. `1.0`.
    pub event_version: String,
    /// The event's data as stored: one key, the event type, holding the event's fields (a free JSON
    /// object; every field around it is typed).
    pub payload: JsonObject,
    /// Who, which request, which causal chain, from where.
    pub metadata: EventMetadataDto,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl From<RecordedEvent> for EventDto {
    fn from(e: RecordedEvent) -> Self {
        let field = |name: &str| e.metadata[name].as_str().unwrap_or_default().to_owned();
        let metadata = EventMetadataDto {
            actor: field("actor"),
            request_id: field("request_id"),
            correlation_id: field("correlation_id"),
            source: field("source"),
        };
        EventDto {
            cursor: encode_cursor(e.checkpoint()),
            global_position: e.global_position,
            transaction_id: e.transaction_id,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: object(e.payload),
            metadata,
            recorded_at: e.recorded_at,
        }
    }
}

/// A page of the global log.
#[derive(Debug, Clone, Object)]
pub struct EventPageDto {
    /// The events, in commit order.
    pub items: Vec<EventDto>,
    /// Pass as `after` to get the next page; absent when this page reached the end of the log. To
    /// follow the log, poll with the `cursor` of the last item.
    #[oai(skip_serializing_if_is_none)]
    pub next: Option<String>,
}

/// One event of a resource and the resource's state after it.
#[derive(Debug, Clone, Object)]
pub struct HistoryEntryDto {
    /// The event, with its metadata.
    pub event: EventDto,
    /// The resource's state after the event, as the write side holds it (replayed event by event; a
    /// free JSON object).
    pub state: JsonObject,
}

/// Every event of one resource, oldest first.
#[derive(Debug, Clone, Object)]
pub struct HistoryDto {
    /// `Rule`, `Team`, `ChangeRequest`, `User` or `Agent`.
    pub aggregate_type: String,
    /// The resource's id.
    pub aggregate_id: String,
    /// Its current version (the sequence of its last event).
    pub version: i64,
    /// The events, each with the state after it.
    pub entries: Vec<HistoryEntryDto>,
}

impl From<HistoryEntry> for HistoryEntryDto {
    fn from(entry: HistoryEntry) -> Self {
        HistoryEntryDto {
            event: entry.event.into(),
            state: object(entry.state),
        }
    }
}

/// A free JSON object (documented as `type: object`).
pub type JsonObject = BTreeMap<String, Value>;

/// The members of a JSON object; anything else (never stored: payloads and states are objects) under
/// `value`.
fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        other => BTreeMap::from([("value".to_owned(), other)]),
    }
}

/// The opaque cursor of a checkpoint: `<transaction id>.<position>` (the console's log pages too).
pub(crate) fn encode_cursor(checkpoint: Checkpoint) -> String {
    format!("{}.{}", checkpoint.transaction_id, checkpoint.position)
}

/// The checkpoint of a cursor [`encode_cursor`] wrote: two runs of decimal digits (no sign, no
/// other character) that fit a transaction id and a non-negative position; anything else is `None`.
pub(crate) fn decode_cursor(raw: &str) -> Option<Checkpoint> {
    let (transaction_id, position) = raw.split_once('.')?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(transaction_id) || !digits(position) {
        return None;
    }
    Some(Checkpoint {
        transaction_id: transaction_id.parse().ok()?,
        position: position.parse().ok()?,
    })
}

fn bad(parameter: &str, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::from(AppError::BadParameter {
        parameter: parameter.to_owned(),
        message: message.into(),
    })
}

fn time(parameter: &str, raw: Option<String>) -> ApiResult<Option<DateTime<Utc>>> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(parameter, format!("{raw:?} is not an RFC 3339 time ({e})")))
    })
    .transpose()
}

/// A comma-separated list (empty: none).
fn list(raw: Option<String>) -> Vec<String> {
    raw.map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

const AGGREGATE_TYPES: [&str; 5] = ["Rule", "Team", "ChangeRequest", "User", "Agent"];

/// The history endpoints.
pub struct EventsApi;

#[OpenApi(tag = "HistoryTags::History")]
impl EventsApi {
    /// The global event log in commit order, each event with its metadata; cursor-paginated by
    /// checkpoint. Filters (all optional, combined with AND): `aggregate_type` (`Rule`, `Team`,
    /// `ChangeRequest`, `User`, `Agent`; comma-separated for several), `aggregate_id`, `actor`
    /// (`user:<id>`, `agent:<id>`, `system:<reason>`), `event_type` (comma-separated for several),
    /// `since` and `until` (RFC 3339, inclusive, on the recorded time). Start after a cursor (`after`)
    /// or after a global position (`after_position`); `limit` 1 to 1000 (default 100). Pages never
    /// skip or repeat an event, even while commands commit. Auditors and org_admins.
    #[oai(path = "/api/v1/events", method = "get")]
    async fn list(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        auth: BearerAuth,
        aggregate_type: Query<Option<String>>,
        aggregate_id: Query<Option<String>>,
        actor: Query<Option<String>>,
        event_type: Query<Option<String>>,
        since: Query<Option<String>>,
        until: Query<Option<String>>,
        after: Query<Option<String>>,
        after_position: Query<Option<i64>>,
        limit: Query<Option<u32>>,
    ) -> LimitedResult<Json<EventPageDto>> {
        let filtered = [
            &aggregate_type.0,
            &aggregate_id.0,
            &actor.0,
            &event_type.0,
            &since.0,
            &until.0,
        ]
        .iter()
        .any(|filter| filter.as_deref().is_some_and(|value| !value.is_empty()));
        if filtered {
            limits.costly_read(&auth.0)?;
        }
        let aggregate_types = list(aggregate_type.0);
        if let Some(unknown) = aggregate_types
            .iter()
            .find(|t| !AGGREGATE_TYPES.contains(&t.as_str()))
        {
            return Err(bad(
                "aggregate_type",
                format!("{unknown:?} is not one of {}", AGGREGATE_TYPES.join(", ")),
            )
            .into());
        }
        let filter = LogFilter {
            aggregate_types,
            aggregate_id: aggregate_id.0.filter(|s| !s.is_empty()),
            actor: actor.0.filter(|s| !s.is_empty()),
            event_types: list(event_type.0),
            since: time("since", since.0)?,
            until: time("until", until.0)?,
        };
        let start = match (after.0, after_position.0) {
            (Some(_), Some(_)) => {
                return Err(bad("after", "give either after or after_position, not both").into());
            }
            (Some(cursor), None) => decode_cursor(&cursor)
                .ok_or_else(|| bad("after", "not a cursor this API returned"))?,
            (None, Some(position)) if position < 0 => {
                return Err(bad("after_position", "must be 0 or more").into());
            }
            (None, Some(position)) => {
                edict
                    .checkpoint_at(&auth.0, position, "after_position")
                    .await?
            }
            (None, None) => Checkpoint::START,
        };
        let page = edict
            .list_events(&auth.0, &filter, start, limit.0.map(|l| l as usize))
            .await?;
        Ok(Json(EventPageDto {
            items: page.events.into_iter().map(EventDto::from).collect(),
            next: page.next.map(encode_cursor),
        }))
    }

    /// Every event of the rule, oldest first, each with its actor, time and the rule's state after it.
    /// Auditors and org_admins.
    #[oai(path = "/api/v1/rules/:id/history", method = "get")]
    async fn rule_history(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> LimitedResult<Json<HistoryDto>> {
        limits.costly_read(&auth.0)?;
        Ok(history(&edict, &auth.0, Audited::Rule, &id).await?)
    }

    /// Every event of the team, oldest first, each with its actor, time and the team's state after it.
    /// Auditors and org_admins.
    #[oai(path = "/api/v1/teams/:id/history", method = "get")]
    async fn team_history(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> LimitedResult<Json<HistoryDto>> {
        limits.costly_read(&auth.0)?;
        Ok(history(&edict, &auth.0, Audited::Team, &id).await?)
    }

    /// Every event of the change request, oldest first, each with its actor, time and the change
    /// request's state after it. Auditors and org_admins.
    #[oai(path = "/api/v1/change-requests/:id/history", method = "get")]
    async fn change_request_history(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> LimitedResult<Json<HistoryDto>> {
        limits.costly_read(&auth.0)?;
        Ok(history(&edict, &auth.0, Audited::ChangeRequest, &id).await?)
    }

    /// Every event of the user, oldest first, each with its actor, time and the user's state after it
    /// (credentials are not events and never appear). Auditors and org_admins.
    #[oai(path = "/api/v1/users/:id/history", method = "get")]
    async fn user_history(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> LimitedResult<Json<HistoryDto>> {
        limits.costly_read(&auth.0)?;
        Ok(history(&edict, &auth.0, Audited::User, &id).await?)
    }

    /// Every event of the agent, oldest first, each with its actor, time and the agent's state after
    /// it. Auditors and org_admins.
    #[oai(path = "/api/v1/agents/:id/history", method = "get")]
    async fn agent_history(
        &self,
        edict: Data<&Arc<Edict>>,
        limits: Data<&Arc<RateLimits>>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> LimitedResult<Json<HistoryDto>> {
        limits.costly_read(&auth.0)?;
        Ok(history(&edict, &auth.0, Audited::Agent, &id).await?)
    }
}

/// The history of one resource; an id that is not a UUID is a 404 (no such resource can exist).
async fn history(
    edict: &Edict,
    principal: &Principal,
    kind: Audited,
    raw_id: &str,
) -> ApiResult<Json<HistoryDto>> {
    let what = match kind {
        Audited::Rule => "rule",
        Audited::Team => "team",
        Audited::ChangeRequest => "change request",
        Audited::User => "user",
        Audited::Agent => "agent",
    };
    let id: uuid::Uuid = super::common::id(raw_id, what)?;
    let entries = edict.history(principal, kind, &id.to_string()).await?;
    Ok(Json(HistoryDto {
        aggregate_type: kind.aggregate_type().to_owned(),
        aggregate_id: id.to_string(),
        version: entries.last().map_or(0, |e| e.event.sequence),
        entries: entries.into_iter().map(HistoryEntryDto::from).collect(),
    }))
}

/// `GET /api/v1/teams/{id}/ruleset?as_of=…`: the rule set document as the live endpoint served it at
/// that point, replayed from the log, with `as_of` (what was asked, the position of the last event
/// replayed and how many were) instead of `freshness`.
///
/// # Errors
/// 400 naming `as_of` when it is neither an RFC 3339 time nor the position of an event; 403; 404 when
/// the team had no rule set then.
pub async fn ruleset_as_of(
    edict: &Edict,
    principal: &Principal,
    team: &str,
    as_of: &str,
) -> ApiResult<RuleSetDocument> {
    let as_of_parsed = AsOf::parse(as_of)?;
    let past = edict
        .team_ruleset_as_of(principal, team, as_of_parsed)
        .await?;
    let mut ruleset: RuleSetDocument = typed(past.ruleset, "RuleSetDocument")?;
    ruleset.as_of = Some(AsOfEntry {
        requested: as_of.to_owned(),
        position: past.through.map(|c| c.position),
        events_replayed: past.events,
    });
    Ok(ruleset)
}

/// `GET /api/v1/agents/{id}/enforced?as_of=…`: per team, the revision the agent had applied at that
/// point (from the history of its acknowledgements), `current` when it was the team's latest then.
///
/// # Errors
/// 400 naming `as_of`; 403; 404.
pub async fn enforced_as_of(
    edict: &Edict,
    principal: &Principal,
    agent: AgentId,
    as_of: &str,
) -> ApiResult<Json<Vec<EnforcedDto>>> {
    let as_of = AsOf::parse(as_of)?;
    let enforced = edict.agent_enforced_as_of(principal, agent, as_of).await?;
    Ok(Json(
        enforced
            .into_iter()
            .map(|(e, current)| EnforcedDto::of(e, current))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_its_checkpoint() {
        let checkpoint = Checkpoint {
            transaction_id: 987_654,
            position: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(checkpoint)), Some(checkpoint));
        assert_eq!(decode_cursor("42"), None);
        assert_eq!(decode_cursor("a.b"), None);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_any_string_never_panics(raw in ".*") {
            let _ = decode_cursor(&raw);
        }

        #[test]
        fn every_checkpoint_round_trips(transaction_id in any::<u64>(), position in 0..=i64::MAX) {
            let checkpoint = Checkpoint { transaction_id, position };
            prop_assert_eq!(decode_cursor(&encode_cursor(checkpoint)), Some(checkpoint));
        }

        #[test]
        fn a_decoded_cursor_is_the_cursor_it_came_from(raw in "[0-9+-]{0,22}\\.[0-9+-]{0,22}") {
            // Whatever decodes writes back to exactly the same text: no sign, no leading zero
            // ambiguity beyond what the digits say, no negative position.
            if let Some(checkpoint) = decode_cursor(&raw) {
                prop_assert!(checkpoint.position >= 0);
                let (t, p) = raw.split_once('.').unwrap();
                prop_assert_eq!(t.parse::<u64>().ok(), Some(checkpoint.transaction_id));
                prop_assert_eq!(p.parse::<i64>().ok(), Some(checkpoint.position));
                prop_assert!(!raw.contains('-') && !raw.contains('+'));
            }
        }

        #[test]
        fn negative_or_overflowing_parts_are_refused(
            transaction_id in any::<u64>(),
            position in 0..=i64::MAX,
            negative in 1..=i64::MAX,
        ) {
            prop_assert_eq!(decode_cursor(&format!("-{transaction_id}.{position}")), None);
            prop_assert_eq!(decode_cursor(&format!("{transaction_id}.-{negative}")), None);
            prop_assert_eq!(decode_cursor(&format!("+{transaction_id}.{position}")), None);
            prop_assert_eq!(decode_cursor(&format!("{transaction_id}.+{position}")), None);
            prop_assert_eq!(decode_cursor(&format!("{transaction_id}0.{position}")).is_some(),
                transaction_id.checked_mul(10).is_some());
            prop_assert_eq!(decode_cursor(&format!("{}.{position}", u128::from(u64::MAX) + 1)), None);
            prop_assert_eq!(decode_cursor(&format!("{transaction_id}.{}", i128::from(i64::MAX) + 1)), None);
        }
    }

    #[test]
    fn lists_are_comma_separated() {
        assert_eq!(list(Some("Rule, Team,".into())), ["Rule", "Team"]);
        assert!(list(None).is_empty());
    }
}
