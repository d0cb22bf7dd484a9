//! Documents round-trip through their types exactly; one its type would write differently is refused.

use super::fleet::IntegrityFailureEntry;
use super::*;
use serde_json::json;

fn round_trips<T: ParseFromJSON + ToJSON>(doc: Value) {
    let parsed: T = typed(doc.clone(), "test").expect("the document parses");
    assert_eq!(parsed.to_json(), Some(doc));
}

#[test]
fn a_timestamp_keeps_the_text_serde_writes() {
    let time = DateTime::parse_from_rfc3339("2026-12-05T06:08:19.812480807Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        Timestamp::from(time).to_json(),
        Some(serde_json::to_value(time).unwrap())
    );
    assert!(Timestamp::parse_from_json(Some(json!("yesterday"))).is_err());
}

#[test]
fn a_change_request_with_every_kind_of_exception_round_trips() {
    round_trips::<ChangeRequestEntry>(json!({
        "id": "c", "agent": "a", "user": "u", "team": "t", "rule": "r", "file": "CLAUDE.md",
        "layer": "team", "original_hash": "h1", "new_hash": "h2", "diff": "-a\n+b",
        "opened_at": "2026-12-05T06:08:19Z", "timeout_at": "2026-12-05T07:08:19Z",
        "status": "exception_granted",
        "decision": {"by": null, "reason": null, "at": "2026-12-05T06:09:19Z"},
        "exceptions": [
            {"id": "e1", "requested_by": "u", "justification": "needed",
             "kind": {"type": "permanent"}, "requested_at": "2026-12-05T06:10:00Z",
             "resolution": {"outcome": "denied", "by": "a", "reason": "no",
                            "at": "2026-12-05T06:11:00Z"}},
            {"id": "e2", "requested_by": "u", "justification": "needed",
             "kind": {"type": "time_limited", "until": "2027-01-01T00:00:00Z"},
             "requested_at": "2026-12-05T06:12:00Z",
             "resolution": {"outcome": "granted", "by": "a", "until": null,
                            "at": "2026-12-05T06:13:00Z"}},
            {"id": "e3", "requested_by": "u", "justification": "needed",
             "kind": {"type": "permanent"}, "requested_at": "2026-12-05T06:14:00Z",
             "resolution": null}
        ],
        "report_ids": ["r1"], "version": 5, "updated_at": "2026-12-05T06:14:00Z"
    }));
}

#[test]
fn an_agent_with_an_integrity_failure_round_trips() {
    round_trips::<AgentEntry>(json!({
        "id": "a", "user": "u", "machine_id": "m", "machine_name": "", "enrolled_at": "2026-12-05T06:08:19Z",
        "revoked": true, "revoked_at": "2026-12-05T06:09:19Z", "revoked_by": "u2",
        "revoke_reason": null, "integrity_failures": 1,
        "last_integrity_failure": {"team": "t", "revision": 3, "reason": "bad_signature",
                                   "detail": "x", "at": "2026-12-05T06:08:59Z"},
        "version": 3
    }));
}

#[test]
fn a_document_that_its_type_would_change_is_refused() {
    // An unknown field would be dropped on the way out: the type no longer describes the document.
    let doc = json!({"team": "t", "revision": 3, "reason": "r", "detail": "d",
                     "at": "2026-12-05T06:08:59Z", "extra": 1});
    let refused = typed::<IntegrityFailureEntry>(doc, "test");
    assert!(matches!(refused, Err(ErrorResponse::Internal(_))));
}
