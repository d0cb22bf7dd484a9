//! Shared support for the aggregates' given/when/then tests: the clock, a reason, running a command on
//! given events, and folding events into state, typed by the command or event passed in.

pub(crate) use crate::Versioned;
use crate::value::Reason;
use crate::{Agent, ChangeRequest, Rule, Team, User};
use chrono::{DateTime, TimeDelta, Utc};
pub(crate) use cqrs_es::Aggregate;
use cqrs_es::test::{AggregateResultValidator, TestFramework};

/// 2026-01-02T03:04:05Z plus `minutes`.
pub(crate) fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_767_323_045 + minutes * 60)
}

pub(crate) fn reason(text: &str) -> Reason {
    Reason::parse(text).unwrap()
}

/// The aggregate a command or an event belongs to.
pub(crate) trait Of {
    type Aggregate: Aggregate<Services = ()>;
}

macro_rules! of {
    ($($aggregate:ty: $command:ty, $event:ty;)*) => {$(
        impl Of for $command {
            type Aggregate = $aggregate;
        }
        impl Of for $event {
            type Aggregate = $aggregate;
        }
    )*};
}

of! {
    Agent: crate::agent::AgentCommand, crate::agent::AgentEvent;
    ChangeRequest: crate::change_request::ChangeRequestCommand, crate::change_request::ChangeRequestEvent;
    Rule: crate::rule::RuleCommand, crate::rule::RuleEvent;
    Team: crate::team::TeamCommand, crate::team::TeamEvent;
    User: crate::user::UserCommand, crate::user::UserEvent;
}

/// Handles `command` on the aggregate built from `given`.
pub(crate) async fn when<C: Of>(
    given: Vec<<C::Aggregate as Aggregate>::Event>,
    command: C,
) -> AggregateResultValidator<C::Aggregate>
where
    C::Aggregate: Aggregate<Command = C>,
{
    TestFramework::<C::Aggregate>::with(())
        .given(given)
        .when_async(command)
        .await
}

/// The aggregate `events` build.
pub(crate) fn state<E: Of>(events: Vec<E>) -> E::Aggregate
where
    E::Aggregate: Aggregate<Event = E>,
{
    let mut aggregate = E::Aggregate::default();
    for event in events {
        aggregate.apply(event);
    }
    aggregate
}
