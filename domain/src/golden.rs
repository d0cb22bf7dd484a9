//! Test support for the golden JSON tests of events: an event's payload is a public contract, so each
//! variant is pinned to a literal JSON string, both ways.

use cqrs_es::DomainEvent;
use uuid::Uuid;

/// 2026-01-02T03:04:05Z, the time every golden event happens at.
pub(crate) fn golden_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::UNIX_EPOCH + chrono::TimeDelta::seconds(1_767_323_045)
}

/// A fixed UUID whose last digits are `n` (e.g. `00000000-0000-0000-0000-000000000001`).
pub(crate) const fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// Asserts that `event` serializes to exactly `json`, that `json` deserializes back to `event`, and that
/// the event's type and version are `event_type` and `"1.0"`.
pub(crate) fn assert_golden<E: DomainEvent>(event: &E, event_type: &str, json: &str) {
    assert_eq!(event.event_type(), event_type);
    assert_eq!(event.event_version(), "1.0");
    assert_eq!(serde_json::to_string(event).unwrap(), json);
    assert_eq!(&serde_json::from_str::<E>(json).unwrap(), event);
    assert!(
        json.starts_with(&format!("{{\"{event_type}\":")),
        "the payload is tagged with the event type"
    );
}
