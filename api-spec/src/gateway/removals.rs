//! Removals: a `removed` message for each team an agent holds and its user left.
//!
//! Removals are signed for each agent where they are projected (ADR 0024); a gateway holds no key and
//! sends each as it is stored. A connection notes the teams it owes a removal (a team named in the
//! agent's `hello` that its user no longer belongs to, a team a refresh finds gone) and sends the
//! signed removal of each once the store holds it: at once, and again after each later refresh and
//! decisions poll for those not signed yet. A team the user rejoined meanwhile is no longer owed.

use super::connection::{Flow, Session, encoded};
use crate::protocol::GatewayMessage;

impl Session {
    /// Sends the signed removal of every team owed one that the store holds.
    pub(super) async fn send_removals(&mut self) -> Flow {
        let teams = &self.teams;
        self.owed_removals.retain(|team| !teams.contains(team));
        if self.owed_removals.is_empty() {
            return Flow::Continue;
        }
        let docs = match self.shared.edict.agent_removals(self.agent.id).await {
            Ok(docs) => docs,
            Err(error) => {
                tracing::warn!(%error, "cannot read the agent's signed removals; sent at the next poll");
                return Flow::Continue;
            }
        };
        for doc in docs {
            let Ok(removal) = serde_json::from_value::<GatewayMessage>(doc) else {
                tracing::error!("a stored signed removal does not parse; not sent");
                continue;
            };
            let GatewayMessage::Removed { team, .. } = &removal else {
                continue;
            };
            if !self.owed_removals.remove(team) {
                continue;
            }
            if let Flow::Close(reason) = self.reply(encoded(&removal)).await {
                return Flow::Close(reason);
            }
        }
        if !self.owed_removals.is_empty() {
            tracing::debug!(
                teams = ?self.owed_removals,
                "removals not signed yet; sent once they are"
            );
        }
        Flow::Continue
    }
}
