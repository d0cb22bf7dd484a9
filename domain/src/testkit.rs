//! Shared support for the aggregates' given/when/then tests: the clock, a reason, running a command on
//! given events, and folding events into state, typed by the command or event passed in.

pub(crate) use crate::Versioned;
use crate::value::Reason;
use crate::{Agent, ChangeRequest, Rule, Team, User};
use chrono::{DateTime, TimeDelta, Utc};
pub(crate) use cqrs_es::Aggregate;
use cqrs_es::test::{AggregateResultValidator, TestFramework};
use std::fmt::Debug;

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

type Events<C> = Vec<<<C as Of>::Aggregate as Aggregate>::Event>;

/// What a case expects: `Ok` with the events the command records, or `Err` with its typed error.
pub(crate) type Then<C> = Result<Events<C>, <<C as Of>::Aggregate as Aggregate>::Error>;

/// Runs given/when/then cases `(name, given, command, then)` in order, naming the case that fails; see
/// [`cases!`] for the table form.
pub(crate) async fn check<C: Of>(cases: Vec<(&str, Events<C>, C, Then<C>)>)
where
    C::Aggregate: Aggregate<Command = C>,
    <C::Aggregate as Aggregate>::Event: PartialEq,
    <C::Aggregate as Aggregate>::Error: PartialEq,
{
    for (name, given, command, then) in cases {
        assert_eq!(
            when(given, command).await.inspect_result(),
            then,
            "case: {name}"
        );
    }
}

/// Handles each of `commands` on each of `givens`, expecting `then` from every pair, and names the pair
/// that differs.
pub(crate) async fn check_every<C: Of + Clone + Debug>(
    givens: Vec<Events<C>>,
    commands: Vec<C>,
    then: Then<C>,
) where
    C::Aggregate: Aggregate<Command = C>,
    <C::Aggregate as Aggregate>::Event: PartialEq,
    <C::Aggregate as Aggregate>::Error: PartialEq + Clone,
{
    for (given, command) in givens
        .iter()
        .flat_map(|g| commands.iter().map(move |c| (g, c)))
    {
        let result = when(given.clone(), command.clone()).await.inspect_result();
        assert_eq!(result, then, "{command:?} given {given:?}");
    }
}

/// Handles each of `commands` on `given`, expecting each to be accepted.
pub(crate) async fn accepts_each<C: Of + Debug + Clone>(given: Events<C>, commands: Vec<C>)
where
    C::Aggregate: Aggregate<Command = C>,
{
    for command in commands {
        let result = when(given.clone(), command.clone()).await.inspect_result();
        assert!(result.is_ok(), "{command:?} was refused: {result:?}");
    }
}

/// A table of given/when/then cases, one a line, run by [`check`]:
/// `"name": [given events] => command => Ok(vec![events]) or Err(error);`.
macro_rules! cases {
    ($($name:literal: $given:expr => $command:expr => $then:expr;)*) => {
        $crate::testkit::check(vec![$(($name, $given.into(), $command, $then)),*]).await
    };
}
pub(crate) use cases;
