//! Decisions on an agent's change requests, as `decision` messages.
//!
//! The connection polls the `change_inbox` read model for the change requests its agent opened (in
//! the agent's teams) every `decision_interval` (the read runs beside its loop, see `polls`; the
//! reads of a team are shared by the gateway's connections, see [`TeamRequests`]), and sends a
//! `decision` whenever what the agent should do with a change differs from what this connection last
//! told it. The first poll of a connection
//! sends the decision of every decided change request (the agent ignores those it knows already), so a
//! decision taken while the agent was offline reaches it after the reconnect.
//!
//! What the agent should do with each change is derived from the change inbox document where the
//! decision is signed (`edict_projections::change_inbox::decision`, ADR 0022); the gateway sends the
//! signed decisions as they are stored. The agent applies a decision only to that change request's
//! change, only while the disk holds that content, and once per id: replaying every decision on each
//! connection never reverts a later, approved change of the same file.

use super::connection::{Flow, Session, encoded};
use crate::protocol::GatewayMessage;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_domain::TeamId;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A team's change requests and when they were read.
type TeamRead = (Instant, Arc<Vec<Value>>);

/// The change requests of each team, read at most once per `fresh_for` for all of a gateway's
/// connections: each connection's poll filters its own agent's out of them. Without it every
/// connection read every change request of its teams every `decision_interval` (at 10,000 agents,
/// 2,000 reads a second of the same few teams).
#[derive(Debug)]
pub(crate) struct TeamRequests {
    fresh_for: Duration,
    read: Mutex<HashMap<TeamId, TeamRead>>,
    /// One read at a time: the connections that wait for it find it fresh when they get the lock.
    loading: tokio::sync::Mutex<()>,
}

impl TeamRequests {
    /// Reads are kept `fresh_for`.
    pub(crate) fn new(fresh_for: Duration) -> Self {
        TeamRequests {
            fresh_for,
            read: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self, team: TeamId) -> Option<Arc<Vec<Value>>> {
        let read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        read.get(&team)
            .filter(|(at, _)| at.elapsed() < self.fresh_for)
            .map(|(_, docs)| docs.clone())
    }

    /// The change requests of `team`, read again when the last read is older than `fresh_for`.
    pub(crate) async fn of(
        &self,
        edict: &Edict,
        team: TeamId,
    ) -> Result<Arc<Vec<Value>>, AppError> {
        if let Some(docs) = self.fresh(team) {
            return Ok(docs);
        }
        let _loading = self.loading.lock().await;
        if let Some(docs) = self.fresh(team) {
            return Ok(docs);
        }
        let docs = Arc::new(edict.team_decisions(team).await?);
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(team, (Instant::now(), docs.clone()));
        Ok(docs)
    }
}

impl Session {
    /// Sends the decisions among the agent's change requests (`docs`, as read by `polls`) that
    /// changed since this connection last sent them.
    pub(super) async fn send_decisions(&mut self, docs: &[Value]) -> Flow {
        for doc in docs {
            let Ok(decision) = serde_json::from_value::<GatewayMessage>(doc.clone()) else {
                tracing::error!("a stored signed decision does not parse; not sent");
                continue;
            };
            let GatewayMessage::Decision { change_request, .. } = &decision else {
                continue;
            };
            if self.decided.get(change_request) == Some(&decision) {
                continue;
            }
            self.decided
                .insert(change_request.clone(), decision.clone());
            // A reply, not a push: a reconnect may bring many decisions at once.
            if let Flow::Close(reason) = self.reply(encoded(&decision)).await {
                return Flow::Close(reason);
            }
        }
        Flow::Continue
    }
}
