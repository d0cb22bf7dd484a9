//! A connection's periodic reads (the token re-check, the teams refresh, the decisions poll), run
//! beside its loop rather than inside it.
//!
//! Each read is a boxed future that owns what it needs (the shared state, the agent, a copy of its
//! teams) and answers a [`Polled`]; the loop keeps at most one in flight, goes on taking pushes and
//! frames meanwhile, and applies the answer when it comes. So a push never waits behind a slow
//! database read: with many connections each reading every few seconds, the pool is busy, and a read
//! awaited inline would hold back the next rule set of that connection by as long as it queued.
//! The future lives on the heap only while the read runs.

use super::Shared;
use super::connection::{Flow, Session};
use super::rulesets::Payload;
use crate::ruleset::KeySet;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The answer of a periodic read.
pub(super) enum Polled {
    /// Whether the agent token still stands, and until when.
    Admitted(Result<edict_application::gateway::AgentAdmission, AppError>),
    /// The agent's teams and the latest rule set of each.
    Teams(Result<(BTreeSet<String>, Vec<Arc<Payload>>), AppError>),
    /// The agent's change requests, and the organization's key sets.
    Decisions(Result<Vec<Value>, AppError>, Option<Arc<Vec<KeySet>>>),
}

/// A read in flight.
pub(super) type Poll = Pin<Box<dyn Future<Output = Polled> + Send>>;

impl Session {
    /// Starts re-checking the agent token.
    pub(super) fn start_recheck(&self) -> Poll {
        let shared = self.shared.clone();
        let principal = Principal::Agent {
            id: self.agent.id,
            user: self.agent.user,
        };
        let bearer = self.agent.bearer.clone();
        Box::pin(async move {
            Polled::Admitted(shared.edict.agent_still_admitted(&principal, &bearer).await)
        })
    }

    /// Starts re-reading the agent's teams and the latest revision of each.
    pub(super) fn start_refresh(&self) -> Poll {
        let shared = self.shared.clone();
        let user = self.agent.user;
        Box::pin(async move { Polled::Teams(teams_and_latest(&shared, user).await) })
    }

    /// Starts reading the agent's change requests.
    pub(super) fn start_decisions(&self) -> Poll {
        let shared = self.shared.clone();
        let agent = self.agent.id.to_string();
        let teams: Vec<edict_domain::TeamId> =
            self.teams.iter().filter_map(|t| t.parse().ok()).collect();
        Box::pin(async move {
            let keysets = match shared.keysets.all(&shared.edict).await {
                Ok(keysets) => Some(keysets),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the key sets");
                    None
                }
            };
            let mut mine = Vec::new();
            for team in teams {
                match shared.team_requests.of(&shared.edict, team).await {
                    Ok(docs) => mine.extend(
                        docs.iter()
                            .filter(|doc| doc["agent"].as_str() == Some(agent.as_str()))
                            .cloned(),
                    ),
                    Err(error) => return Polled::Decisions(Err(error), keysets),
                }
            }
            Polled::Decisions(Ok(mine), keysets)
        })
    }

    /// Acts on a read's answer.
    pub(super) async fn on_polled(&mut self, polled: Polled) -> Flow {
        match polled {
            Polled::Admitted(admission) => self.on_admission(admission),
            Polled::Teams(Ok((teams, latest))) => match self.apply_teams(teams, &latest) {
                Flow::Continue => self.send_removals().await,
                close => close,
            },
            Polled::Teams(Err(error)) => {
                tracing::warn!(%error, "cannot re-read the agent's teams");
                Flow::Continue
            }
            Polled::Decisions(docs, keysets) => {
                if let Flow::Close(reason) = self.send_removals().await {
                    return Flow::Close(reason);
                }
                if let Some(keysets) = keysets
                    && let Flow::Close(reason) = self.send_keys(&keysets).await
                {
                    return Flow::Close(reason);
                }
                match docs {
                    Ok(docs) => self.send_decisions(&docs).await,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the agent's change requests");
                        Flow::Continue
                    }
                }
            }
        }
    }
}

/// The teams of `user` and the latest rule set of each (a team whose rule set cannot be read is
/// logged and left out: the next refresh tries again).
async fn teams_and_latest(
    shared: &Shared,
    user: edict_domain::UserId,
) -> Result<(BTreeSet<String>, Vec<Arc<Payload>>), AppError> {
    let teams = shared
        .edict
        .teams_of(user)
        .await?
        .iter()
        .map(ToString::to_string)
        .collect::<BTreeSet<_>>();
    let mut latest = Vec::with_capacity(teams.len());
    for team in &teams {
        match shared.rulesets.latest(&*shared.feed, team).await {
            Ok(Some(payload)) => latest.push(payload),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, team, "cannot read the latest rule set"),
        }
    }
    Ok((teams, latest))
}
