//! Decisions on an agent's change requests, as `decision` messages.
//!
//! The connection polls the `change_inbox` read model for the change requests its agent opened (in
//! the agent's teams) every `decision_interval`, and sends a `decision` whenever what the agent should
//! do with a change differs from what this connection last told it. The first poll of a connection
//! sends the decision of every decided change request (the agent ignores those it knows already), so a
//! decision taken while the agent was offline reaches it after the reconnect.
//!
//! What the agent should do, from the change request's status:
//! - `approved` → keep;
//! - `exception_granted` → keep, `until` the granted exception's end (none for a permanent one);
//! - `rejected`, `auto_reverted`, `exception_requested` (it stays reverted meanwhile),
//!   `exception_denied`, `withdrawn` → revert;
//! - `pending` → nothing yet.

use super::connection::{Flow, Session, text};
use edict_api::protocol::{DecisionAction, GatewayMessage};
use serde_json::Value;

impl Session {
    /// Sends the decisions of the agent's change requests that changed since this connection last
    /// sent them.
    pub(super) async fn poll_decisions(&mut self) -> Flow {
        let teams = self.teams.iter().filter_map(|t| t.parse().ok()).collect();
        let docs = match self
            .shared
            .edict
            .agent_change_requests(self.agent.id, &teams)
            .await
        {
            Ok(docs) => docs,
            Err(error) => {
                tracing::warn!(%error, "cannot read the agent's change requests");
                return Flow::Continue;
            }
        };
        for doc in &docs {
            let Some(decision) = decision_of(doc) else {
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
            if let Flow::Close(reason) = self.reply(text(&decision)).await {
                return Flow::Close(reason);
            }
        }
        Flow::Continue
    }
}

/// What the agent should do with the change of a change request (`None` while pending).
pub(crate) fn decision_of(doc: &Value) -> Option<GatewayMessage> {
    let change_request = doc["id"].as_str()?.to_owned();
    let file = doc["file"].as_str()?.to_owned();
    let (action, until) = match doc["status"].as_str()? {
        "approved" => (DecisionAction::Keep, None),
        "exception_granted" => {
            let until = doc["exceptions"]
                .as_array()
                .and_then(|exceptions| exceptions.last())
                .and_then(|exception| exception["resolution"]["until"].as_str())
                .map(str::to_owned);
            (DecisionAction::Keep, until)
        }
        "rejected" | "auto_reverted" | "exception_requested" | "exception_denied" | "withdrawn" => {
            (DecisionAction::Revert, None)
        }
        _ => return None,
    };
    Some(GatewayMessage::Decision {
        change_request,
        file,
        action,
        until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_approved_change_is_kept_and_a_rejected_one_reverted() {
        let doc = json!({"id": "cr", "file": "f", "status": "approved"});
        assert_eq!(
            decision_of(&doc),
            Some(GatewayMessage::Decision {
                change_request: "cr".into(),
                file: "f".into(),
                action: DecisionAction::Keep,
                until: None
            })
        );
        let doc = json!({"id": "cr", "file": "f", "status": "auto_reverted"});
        assert!(matches!(
            decision_of(&doc),
            Some(GatewayMessage::Decision {
                action: DecisionAction::Revert,
                ..
            })
        ));
    }

    #[test]
    fn a_granted_exception_is_kept_until_its_end_and_a_pending_change_waits() {
        let doc = json!({"id": "cr", "file": "f", "status": "exception_granted", "exceptions": [
            {"resolution": {"outcome": "granted", "until": "2026-12-01T00:00:00Z"}}
        ]});
        assert!(matches!(
            decision_of(&doc),
            Some(GatewayMessage::Decision { action: DecisionAction::Keep, until: Some(until), .. })
                if until == "2026-12-01T00:00:00Z"
        ));
        assert_eq!(
            decision_of(&json!({"id": "cr", "file": "f", "status": "pending"})),
            None
        );
    }
}
