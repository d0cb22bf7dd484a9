//! Replay for auditors: the global log filtered and paged, one aggregate's history with its state after
//! each event, and time travel (a team's rule set, an agent's enforced revisions, as of a past point).
//!
//! Nothing here reads a live read model for the past. An aggregate's history is its own events replayed
//! through the domain aggregate (`Aggregate::apply`, the code every command loads it with), serializing
//! the state after each; a past rule set is the log up to the point replayed through the `team_rulesets`
//! projection in memory ([`ProjectionControl::document_as_of`](crate::read_models::ProjectionControl));
//! what an agent enforced comes from the append-only history of its acknowledgements. See
//! `docs/adr/0007-history-and-time-travel-by-replay.md`.

use crate::error::AppError;
use crate::event_log::{Checkpoint, LogBound, LogFilter, RecordedEvent};
use crate::principal::Principal;
use crate::queries::names;
use crate::read_models::Enforcement;
use crate::service::Edict;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use edict_domain::{Agent, AgentId, ChangeRequest, Rule, Team, User};
use serde::Deserialize;
use serde_json::Value;

/// The page size of the event list when none is asked for.
pub const DEFAULT_EVENT_PAGE: usize = 100;
/// The largest page of the event list.
pub const MAX_EVENT_PAGE: usize = 1000;
/// The longest a read waits for an event it names to become readable in the global log.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The aggregates whose history can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audited {
    /// A rule.
    Rule,
    /// A team.
    Team,
    /// A change request.
    ChangeRequest,
    /// A user.
    User,
    /// An agent.
    Agent,
}

impl Audited {
    /// The aggregate type the store records.
    pub fn aggregate_type(self) -> &'static str {
        match self {
            Audited::Rule => Rule::TYPE,
            Audited::Team => Team::TYPE,
            Audited::ChangeRequest => ChangeRequest::TYPE,
            Audited::User => User::TYPE,
            Audited::Agent => Agent::TYPE,
        }
    }

    /// What a 404 calls it.
    fn what(self) -> &'static str {
        match self {
            Audited::Rule => "rule",
            Audited::Team => "team",
            Audited::ChangeRequest => "change request",
            Audited::User => "user",
            Audited::Agent => "agent",
        }
    }
}

/// A page of the global log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, in commit order.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts; `None` when this page reached the end of the log (so far).
    pub next: Option<Checkpoint>,
}

/// One event of an aggregate's history and the aggregate's state after it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The event, with its metadata.
    pub event: RecordedEvent,
    /// The aggregate's state after the event (its serialized form).
    pub state: Value,
}

/// A point in the past: a time, or the global position of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Everything recorded at or before this time.
    Time(DateTime<Utc>),
    /// Everything committed up to and including the event at this global position.
    Position(i64),
}

impl AsOf {
    /// Parses `as_of`: an RFC 3339 time (`2026-11-22T10:00:00Z`) or a global position (`1234`).
    ///
    /// # Errors
    /// [`AppError::BadParameter`] naming `as_of`.
    pub fn parse(raw: &str) -> Result<AsOf, AppError> {
        let raw = raw.trim();
        if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            return raw
                .parse()
                .map(AsOf::Position)
                .map_err(|_| bad_as_of(format!("position {raw} is out of range")));
        }
        DateTime::parse_from_rfc3339(raw)
            .map(|t| AsOf::Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                bad_as_of(format!(
                    "{raw:?} is neither an RFC 3339 time nor a global position ({e})"
                ))
            })
    }
}

fn bad_as_of(message: String) -> AppError {
    AppError::BadParameter {
        parameter: "as_of".into(),
        message,
    }
}

/// A team's rule set as it was at a point in the past.
#[derive(Debug, Clone, PartialEq)]
pub struct PastRuleset {
    /// The rule set document, as `GET /api/v1/teams/{id}/ruleset` served it then.
    pub ruleset: Value,
    /// The last event replayed (of the rule and team events the rule sets follow).
    pub through: Option<Checkpoint>,
    /// How many events were replayed.
    pub events: u64,
}

fn require_auditor(principal: &Principal, what: &str) -> Result<(), AppError> {
    if principal.can_read_all() {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "only org_admins and auditors may read {what}"
        )))
    }
}

/// `events` of one aggregate replayed through `A`, with the state after each.
fn replay<A: Aggregate>(events: Vec<RecordedEvent>) -> Result<Vec<HistoryEntry>, AppError> {
    let mut aggregate = A::default();
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        let domain = A::Event::deserialize(&event.payload).map_err(|e| {
            AppError::Internal(format!(
                "event at position {} does not decode: {e}",
                event.global_position
            ))
        })?;
        aggregate.apply(domain);
        let state = serde_json::to_value(&aggregate)
            .map_err(|e| AppError::Internal(format!("aggregate state does not serialize: {e}")))?;
        entries.push(HistoryEntry { event, state });
    }
    Ok(entries)
}

impl Edict {
    /// A page of the global log in commit order: events after `after` matching `filter`, at most
    /// `limit` (1 to 1000, default 100). org_admins and auditors.
    ///
    /// # Errors
    /// 403 for others; 503 when the store is unavailable.
    pub async fn list_events(
        &self,
        principal: &Principal,
        filter: &LogFilter,
        after: Checkpoint,
        limit: Option<usize>,
    ) -> Result<EventPage, AppError> {
        require_auditor(principal, "the event log")?;
        let limit = limit.unwrap_or(DEFAULT_EVENT_PAGE).clamp(1, MAX_EVENT_PAGE);
        let mut events = self.log.read_filtered(after, filter, limit + 1).await?;
        let next = if events.len() > limit {
            events.truncate(limit);
            events.last().map(RecordedEvent::checkpoint)
        } else {
            None
        };
        Ok(EventPage { events, next })
    }

    /// The checkpoint just after the event at global position `position` (to start reading after it).
    ///
    /// # Errors
    /// 403 unless an org_admin or auditor; 400 naming `parameter` when no event has that position.
    pub async fn checkpoint_at(
        &self,
        principal: &Principal,
        position: i64,
        parameter: &str,
    ) -> Result<Checkpoint, AppError> {
        require_auditor(principal, "the event log")?;
        if position == 0 {
            return Ok(Checkpoint::START);
        }
        match self.log.event_at(position).await? {
            Some(event) => self.settled(&event).await,
            None => Err(AppError::BadParameter {
                parameter: parameter.to_owned(),
                message: format!("no event has global position {position}"),
            }),
        }
    }

    /// Waits (bounded) until `event` is readable in the global log, then answers its checkpoint.
    ///
    /// A committed event can still be above the read horizon (an earlier-ordered transaction is in
    /// flight). Reading "up to" or "after" it before then could leave out an event that will commit
    /// before it in the log's order; once it is readable, everything ordered before it is final.
    async fn settled(&self, event: &RecordedEvent) -> Result<Checkpoint, AppError> {
        let checkpoint = event.checkpoint();
        let just_before = Checkpoint {
            transaction_id: checkpoint.transaction_id,
            position: checkpoint.position - 1,
        };
        let only_it = LogFilter {
            aggregate_types: vec![event.aggregate_type.clone()],
            aggregate_id: Some(event.aggregate_id.clone()),
            ..LogFilter::default()
        };
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let found = self.log.read_filtered(just_before, &only_it, 1).await?;
            if found.first().map(RecordedEvent::checkpoint) == Some(checkpoint) {
                return Ok(checkpoint);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AppError::NotYetConsistent {
                    projection: "global log".into(),
                    position: event.global_position,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Every event of one aggregate in sequence order, each with the aggregate's state after it.
    /// org_admins and auditors.
    ///
    /// # Errors
    /// 403 for others; 404 when the aggregate has no event; 500 when an event does not decode.
    pub async fn history(
        &self,
        principal: &Principal,
        kind: Audited,
        id: &str,
    ) -> Result<Vec<HistoryEntry>, AppError> {
        require_auditor(principal, "history")?;
        let events = self.log.read_aggregate(kind.aggregate_type(), id).await?;
        if events.is_empty() {
            return Err(AppError::NotFound(kind.what().to_owned()));
        }
        match kind {
            Audited::Rule => replay::<Rule>(events),
            Audited::Team => replay::<Team>(events),
            Audited::ChangeRequest => replay::<ChangeRequest>(events),
            Audited::User => replay::<User>(events),
            Audited::Agent => replay::<Agent>(events),
        }
    }

    /// Where `as_of` falls in the log.
    async fn bound(&self, as_of: AsOf) -> Result<LogBound, AppError> {
        match as_of {
            AsOf::Time(time) => Ok(LogBound::RecordedBy(time)),
            AsOf::Position(position) => match self.log.event_at(position).await? {
                Some(event) => Ok(LogBound::Through(self.settled(&event).await?)),
                None => Err(bad_as_of(format!(
                    "no event has global position {position}"
                ))),
            },
        }
    }

    /// The team's rule set as it was at `as_of`, replayed from the log (not read from the live read
    /// model). The team's members, auditors and org_admins, as for the live rule set.
    ///
    /// # Errors
    /// 403; 404 when the team had no rule set then; 400 when `as_of` names no event.
    pub async fn team_ruleset_as_of(
        &self,
        principal: &Principal,
        team: &str,
        as_of: AsOf,
    ) -> Result<PastRuleset, AppError> {
        self.may_read_team(principal, team).await?;
        let deadline = tokio::time::Instant::now() + self.limits.as_of_budget;
        let bound = self.bound(as_of).await?;
        self.past_ruleset(team, bound, deadline)
            .await?
            .ok_or_else(|| AppError::NotFound("rule set at that point".into()))
    }

    /// The rule set of `team` at `bound`, if it had one, replayed by `deadline` (the request's share
    /// of [`crate::queries::WorkLimits::as_of_budget`]).
    ///
    /// # Errors
    /// 422 `as_of_too_costly` when the replay does not end by `deadline`.
    async fn past_ruleset(
        &self,
        team: &str,
        bound: LogBound,
        deadline: tokio::time::Instant,
    ) -> Result<Option<PastRuleset>, AppError> {
        let replay = self
            .projections
            .document_as_of(names::TEAM_RULESETS, "ruleset", team, bound);
        // A budget already spent refuses the replay outright (a timeout polls its future once first,
        // so a replay that finishes in one poll would pass a budget of zero).
        let spent = tokio::time::Instant::now() >= deadline;
        let replay = async move {
            if spent {
                std::future::pending::<()>().await;
            }
            replay.await
        };
        let past = tokio::time::timeout_at(deadline, replay)
            .await
            .map_err(|_| AppError::Rule {
                rule: "as_of_too_costly".into(),
                message: format!(
                    "replaying the log to this point takes longer than the {} ms a time-travel \
                     read may take; ask for a later point, or raise EDICT_AS_OF_BUDGET_MS",
                    self.limits.as_of_budget.as_millis()
                ),
            })??;
        Ok(past.doc.map(|ruleset| PastRuleset {
            ruleset,
            through: past.through,
            events: past.events,
        }))
    }

    /// Which rule sets an agent had applied at `as_of` (per team, the last revision it acknowledged by
    /// then), each with whether it was its team's latest revision at that point. Its owner, auditors
    /// and org_admins.
    ///
    /// # Errors
    /// 403, 404; 400 when `as_of` names no event.
    pub async fn agent_enforced_as_of(
        &self,
        principal: &Principal,
        agent: AgentId,
        as_of: AsOf,
    ) -> Result<Vec<(Enforcement, bool)>, AppError> {
        self.agent(principal, agent).await?;
        let deadline = tokio::time::Instant::now() + self.limits.as_of_budget;
        let (at, bound) = match as_of {
            AsOf::Time(time) => (time, LogBound::RecordedBy(time)),
            AsOf::Position(position) => match self.log.event_at(position).await? {
                Some(event) => (
                    event.recorded_at,
                    LogBound::Through(self.settled(&event).await?),
                ),
                None => {
                    return Err(bad_as_of(format!(
                        "no event has global position {position}"
                    )));
                }
            },
        };
        let mut enforced = Vec::new();
        for e in self
            .convergence
            .by_agent_as_of(&agent.to_string(), at)
            .await?
        {
            let latest = self.past_ruleset(&e.team_id, bound, deadline).await?;
            let current = latest.is_some_and(|past| {
                past.ruleset["revision"].as_u64() == Some(e.revision)
                    && past.ruleset["hash"].as_str() == Some(e.hash.as_str())
            });
            enforced.push((e, current));
        }
        Ok(enforced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_is_a_time_or_a_position() {
        assert_eq!(AsOf::parse("42"), Ok(AsOf::Position(42)));
        let time = DateTime::parse_from_rfc3339("2026-11-22T10:00:00+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            AsOf::parse("2026-11-22T10:00:00+01:00"),
            Ok(AsOf::Time(time))
        );
    }

    #[test]
    fn a_malformed_as_of_names_the_parameter() {
        for raw in [
            "",
            "yesterday",
            "-3",
            "2026-11-22",
            "99999999999999999999999",
        ] {
            match AsOf::parse(raw) {
                Err(AppError::BadParameter { parameter, .. }) => assert_eq!(parameter, "as_of"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }
}
