//! The decision on a change request, as the agent is to apply it: derived from the change inbox
//! document where decisions are signed (ADR 0022), then sent by the gateways as stored.
//!
//! What the agent should do, from the change request's status:
//! - `approved` → keep;
//! - `exception_granted` → keep, `until` the granted exception's end (none for a permanent one);
//! - `rejected`, `auto_reverted`, `exception_requested` (it stays reverted meanwhile),
//!   `exception_denied`, `withdrawn` → revert;
//! - `pending` → nothing yet.
//!
//! A decision names what it is about, from the change inbox: the rule, the hash of the changed content
//! (`new_hash`, as last amended) and an id (`<change request>:<version>`). The agent applies it only to
//! that change request's change, only while the disk holds that content, and once per id.
//!
//! It reads the stored JSON rather than [`ChangeRequestDoc`](super::ChangeRequestDoc), so a document
//! stored by an older version is read the same way.

use edict_api::protocol::{DecisionAction, GatewayMessage};
use serde_json::Value;

/// What the agent should do with the change of a change request (`None` while pending).
pub fn decision_of(doc: &Value) -> Option<GatewayMessage> {
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
    let version = doc["version"].as_u64().unwrap_or_default();
    Some(GatewayMessage::Decision {
        decision_id: Some(format!("{change_request}:{version}")),
        change_request,
        file,
        action,
        until,
        rule: doc["rule"].as_str().map(str::to_owned),
        content_hash: doc["new_hash"].as_str().map(str::to_owned),
        agent: doc["agent"].as_str().map(str::to_owned),
        signature: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_approved_change_is_kept_and_a_rejected_one_reverted() {
        let doc = json!({"id": "cr", "file": "f", "status": "approved", "rule": "r",
            "new_hash": "h", "version": 3});
        assert_eq!(
            decision_of(&doc),
            Some(GatewayMessage::Decision {
                change_request: "cr".into(),
                file: "f".into(),
                action: DecisionAction::Keep,
                until: None,
                rule: Some("r".into()),
                content_hash: Some("h".into()),
                decision_id: Some("cr:3".into()),
                agent: None,
                signature: None,
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
