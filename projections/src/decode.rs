//! Turns a [`RecordedEvent`]'s JSON payload back into the domain event of its aggregate.
//!
//! A projection names the aggregate types it follows; events of the others are not even decoded, so an
//! aggregate type added later (or one a projection does not care about) never stops it. An event of a
//! followed type whose payload does not decode is [`ProjectionError::Undecodable`]: the runner stops
//! there, because skipping it would silently corrupt the read model.

use crate::{ProjectionError, RecordedEvent};
use edict_domain::agent::AgentEvent;
use edict_domain::change_request::ChangeRequestEvent;
use edict_domain::rule::RuleEvent;
use edict_domain::team::TeamEvent;
use edict_domain::user::UserEvent;
use serde::de::DeserializeOwned;

/// The aggregate types of the write side, as `RecordedEvent::aggregate_type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateType {
    /// `Rule`.
    Rule,
    /// `Team`.
    Team,
    /// `ChangeRequest`.
    ChangeRequest,
    /// `User`.
    User,
    /// `Agent`.
    Agent,
}

impl AggregateType {
    /// The name the event store records (the aggregate's `Aggregate::TYPE`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "Rule",
            Self::Team => "Team",
            Self::ChangeRequest => "ChangeRequest",
            Self::User => "User",
            Self::Agent => "Agent",
        }
    }

    /// The aggregate type named `name`, if it is one of the five.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Rule,
            Self::Team,
            Self::ChangeRequest,
            Self::User,
            Self::Agent,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

/// A decoded domain event, by aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyEvent {
    /// An event of a rule.
    Rule(RuleEvent),
    /// An event of a team.
    Team(TeamEvent),
    /// An event of a change request.
    ChangeRequest(ChangeRequestEvent),
    /// An event of a user.
    User(UserEvent),
    /// An event of an agent.
    Agent(AgentEvent),
}

/// Decodes `event` if its aggregate type is one of `follows`; `Ok(None)` for any other type, known or not.
///
/// # Errors
/// [`ProjectionError::Undecodable`] when the payload of a followed type does not decode.
pub fn decode_followed(
    event: &RecordedEvent,
    follows: &[AggregateType],
) -> Result<Option<AnyEvent>, ProjectionError> {
    let Some(kind) = AggregateType::parse(&event.aggregate_type) else {
        return Ok(None);
    };
    if !follows.contains(&kind) {
        return Ok(None);
    }
    Ok(Some(match kind {
        AggregateType::Rule => AnyEvent::Rule(payload(event)?),
        AggregateType::Team => AnyEvent::Team(payload(event)?),
        AggregateType::ChangeRequest => AnyEvent::ChangeRequest(payload(event)?),
        AggregateType::User => AnyEvent::User(payload(event)?),
        AggregateType::Agent => AnyEvent::Agent(payload(event)?),
    }))
}

/// Decodes `event` whatever its (known) aggregate type; `Ok(None)` for an unknown type.
///
/// # Errors
/// [`ProjectionError::Undecodable`] when the payload does not decode as its aggregate's event type.
pub fn decode(event: &RecordedEvent) -> Result<Option<AnyEvent>, ProjectionError> {
    decode_followed(
        event,
        &[
            AggregateType::Rule,
            AggregateType::Team,
            AggregateType::ChangeRequest,
            AggregateType::User,
            AggregateType::Agent,
        ],
    )
}

/// Decodes the payload as `E` (cqrs-es stores `serde_json::to_value(event)`).
fn payload<E: DeserializeOwned>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    E::deserialize(&event.payload).map_err(|e| ProjectionError::Undecodable {
        position: event.global_position,
        event_type: event.event_type.clone(),
        event_version: event.event_version.clone(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Log, RULE_A, TEAM_A, rule_drafted, team_created};
    use cqrs_es::Aggregate;
    use edict_domain::{Agent, ChangeRequest, Rule, Team, User};

    #[test]
    fn aggregate_type_names_match_the_aggregates() {
        assert_eq!(AggregateType::Rule.as_str(), Rule::TYPE);
        assert_eq!(AggregateType::Team.as_str(), Team::TYPE);
        assert_eq!(AggregateType::ChangeRequest.as_str(), ChangeRequest::TYPE);
        assert_eq!(AggregateType::User.as_str(), User::TYPE);
        assert_eq!(AggregateType::Agent.as_str(), Agent::TYPE);
    }

    #[test]
    fn a_recorded_payload_decodes_back_to_its_domain_event() {
        let mut log = Log::default();
        let drafted = rule_drafted(RULE_A, edict_domain::Layer::Team, "Use fmt");
        let event = log.rule(drafted.clone());
        assert_eq!(decode(&event), Ok(Some(AnyEvent::Rule(drafted))));
    }

    #[test]
    fn an_unknown_aggregate_type_is_ignored() {
        let mut log = Log::default();
        let mut event = log.team(team_created(TEAM_A, "Platform"));
        event.aggregate_type = "Invoice".into();
        event.payload = serde_json::json!({"whatever": 1});
        assert_eq!(decode(&event), Ok(None));
    }

    #[test]
    fn an_unfollowed_aggregate_type_is_not_decoded() {
        let mut log = Log::default();
        let mut event = log.team(team_created(TEAM_A, "Platform"));
        event.payload = serde_json::json!({"NotAnEvent": {}});
        assert_eq!(decode_followed(&event, &[AggregateType::Rule]), Ok(None));
    }

    #[test]
    fn an_undecodable_payload_of_a_followed_type_is_an_error() {
        let mut log = Log::default();
        let mut event = log.team(team_created(TEAM_A, "Platform"));
        event.payload = serde_json::json!({"TeamCreated": {"team_id": 7}});
        let err = decode_followed(&event, &[AggregateType::Team]).unwrap_err();
        assert!(
            matches!(
                &err,
                ProjectionError::Undecodable { position, event_type, .. }
                    if *position == event.global_position && event_type == "TeamCreated"
            ),
            "{err:?}"
        );
    }
}
