//! The hash chain over the global log: the canonical bytes of an event and the chained hash.
//!
//! `hash_n = SHA-256(hash_{n-1} || canonical_bytes(event_n))`, with `hash_0` 32 zero bytes ([`GENESIS`]),
//! over the events in commit order (the order [`crate::event_log::EventLog::read_all`] returns).
//!
//! The canonical bytes of an event are the UTF-8 text of one JSON object without any whitespace, whose
//! keys are sorted (byte order), at every depth:
//!
//! ```text
//! {"aggregate_id":"…","aggregate_type":"Rule","event_type":"RuleSubmitted","event_version":"1.0",
//!  "global_position":42,"metadata":{…},"payload":{…},"recorded_at":"2026-11-22T02:52:12.123456Z","sequence":3}
//! ```
//!
//! - strings are escaped as serde_json escapes them (`"`, `\` and control characters; everything else is
//!   written as UTF-8), numbers are written as serde_json writes them;
//! - object keys are sorted here, whatever order the `serde_json::Map` keeps (so enabling serde_json's
//!   `preserve_order` feature anywhere in the build does not change a hash); a duplicate key in the
//!   stored JSON keeps its last value, as parsing does;
//! - `recorded_at` is UTC with exactly six fractional digits (microseconds; SQLite records
//!   milliseconds, which end in `000`);
//! - the transaction id is not part of it: it orders the log but does not survive a dump and restore.
//!
//! Everything here is pure and synchronous; [`ChainHasher`] keeps one buffer to hash millions of events
//! without allocating per event.

use crate::event_log::RecordedEvent;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 hash of the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChainHash(pub [u8; 32]);

/// The hash before the first event: 32 zero bytes.
pub const GENESIS: ChainHash = ChainHash([0; 32]);

impl ChainHash {
    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    ///
    /// # Errors
    /// [`BadHash`] when the text is not 32 bytes of hex.
    pub fn parse(text: &str) -> Result<ChainHash, BadHash> {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| BadHash(text.chars().take(80).collect()))?;
        Ok(ChainHash(bytes))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A text that is not a chain hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 hash in hex: {0:?}")]
pub struct BadHash(pub String);

/// `recorded_at` as it is hashed: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC, microseconds (truncated).
pub fn canonical_time(time: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let micros = time.timestamp_subsec_micros().min(999_999);
    if (0..=9999).contains(&time.year()) {
        // By hand: chrono's strftime parser is a measurable share of `edict audit verify`.
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            time.year(),
            time.month(),
            time.day(),
            time.hour(),
            time.minute(),
            time.second().min(59)
        )
    } else {
        format!("{}.{micros:06}Z", time.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// The canonical bytes of `event` (see the module documentation).
pub fn canonical_bytes(event: &RecordedEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_canonical(event, &mut out);
    out
}

/// Appends the canonical bytes of `event` to `out`.
pub fn write_canonical(event: &RecordedEvent, out: &mut Vec<u8>) {
    write_canonical_fields(
        &CanonicalFields {
            aggregate_id: &event.aggregate_id,
            aggregate_type: &event.aggregate_type,
            event_type: &event.event_type,
            event_version: &event.event_version,
            global_position: event.global_position,
            metadata: &event.metadata,
            payload: &event.payload,
            recorded_at: event.recorded_at,
            sequence: event.sequence,
        },
        out,
    );
}

/// The hashed fields of an event, borrowed (for callers that do not hold a [`RecordedEvent`]).
#[derive(Debug, Clone, Copy)]
pub struct CanonicalFields<'a> {
    /// The aggregate's id.
    pub aggregate_id: &'a str,
    /// The aggregate's type.
    pub aggregate_type: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// The payload's version.
    pub event_version: &'a str,
    /// The global position.
    pub global_position: i64,
    /// The metadata.
    pub metadata: &'a Value,
    /// The payload.
    pub payload: &'a Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The sequence within its aggregate.
    pub sequence: i64,
}

/// Appends the canonical bytes of an event given by its fields to `out`.
pub fn write_canonical_fields(event: &CanonicalFields<'_>, out: &mut Vec<u8>) {
    // The keys in sorted order, written by hand: this is the hot path of `edict audit verify`.
    out.extend_from_slice(b"{\"aggregate_id\":");
    write_str(event.aggregate_id, out);
    out.extend_from_slice(b",\"aggregate_type\":");
    write_str(event.aggregate_type, out);
    out.extend_from_slice(b",\"event_type\":");
    write_str(event.event_type, out);
    out.extend_from_slice(b",\"event_version\":");
    write_str(event.event_version, out);
    out.extend_from_slice(b",\"global_position\":");
    out.extend_from_slice(event.global_position.to_string().as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    write_value(event.metadata, out);
    out.extend_from_slice(b",\"payload\":");
    write_value(event.payload, out);
    out.extend_from_slice(b",\"recorded_at\":\"");
    out.extend_from_slice(canonical_time(event.recorded_at).as_bytes());
    out.extend_from_slice(b"\",\"sequence\":");
    out.extend_from_slice(event.sequence.to_string().as_bytes());
    out.push(b'}');
}

/// Appends `value` as canonical JSON (sorted keys, no whitespace).
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => out.extend_from_slice(number.to_string().as_bytes()),
        Value::String(text) => write_str(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write_value(item, out);
            }
            out.push(b'}');
        }
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
fn write_str(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{byte:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `SHA-256(previous || canonical_bytes(event))`.
pub fn chain_hash(previous: &ChainHash, event: &RecordedEvent) -> ChainHash {
    ChainHasher::default().next(previous, event)
}

/// Hashes events one after the other, reusing one buffer for their canonical bytes.
#[derive(Debug, Default)]
pub struct ChainHasher {
    buffer: Vec<u8>,
}

impl ChainHasher {
    /// `SHA-256(previous || canonical_bytes(event))`.
    pub fn next(&mut self, previous: &ChainHash, event: &RecordedEvent) -> ChainHash {
        self.buffer.clear();
        write_canonical(event, &mut self.buffer);
        link(previous, &self.buffer)
    }
}

/// `SHA-256(previous || canonical)`, for callers that prepared the canonical bytes themselves.
pub fn link(previous: &ChainHash, canonical: &[u8]) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(previous.0);
    hasher.update(canonical);
    ChainHash(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn event() -> RecordedEvent {
        RecordedEvent {
            global_position: 42,
            transaction_id: 900,
            aggregate_type: "Rule".into(),
            aggregate_id: "5f0c7a36-0000-4000-8000-000000000001".into(),
            sequence: 3,
            event_type: "RuleSubmitted".into(),
            event_version: "1.0".into(),
            payload: json!({"RuleSubmitted": {"by": "user:1", "note": "line\n\"quoted\""}}),
            metadata: json!({"source": "api", "actor": "user:1", "request_id": "r-1"}),
            recorded_at: Utc
                .with_ymd_and_hms(2026, 11, 22, 2, 52, 12)
                .single()
                .unwrap_or_default()
                + chrono::Duration::nanoseconds(123_456_789),
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_and_fix_the_time_format() {
        let text = String::from_utf8(canonical_bytes(&event())).unwrap_or_default();
        assert_eq!(
            text,
            "{\"aggregate_id\":\"5f0c7a36-0000-4000-8000-000000000001\",\"aggregate_type\":\"Rule\",\
             \"event_type\":\"RuleSubmitted\",\"event_version\":\"1.0\",\"global_position\":42,\
             \"metadata\":{\"actor\":\"user:1\",\"request_id\":\"r-1\",\"source\":\"api\"},\
             \"payload\":{\"RuleSubmitted\":{\"by\":\"user:1\",\"note\":\"line\\n\\\"quoted\\\"\"}},\
             \"recorded_at\":\"2026-11-22T02:52:12.123456Z\",\"sequence\":3}"
        );
    }

    #[test]
    fn canonical_bytes_are_valid_json_equal_to_the_event() {
        let bytes = canonical_bytes(&event());
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(parsed["payload"], event().payload);
        assert_eq!(parsed["metadata"], event().metadata);
        assert_eq!(parsed["global_position"], 42);
    }

    #[test]
    fn the_transaction_id_is_not_hashed() {
        let mut other = event();
        other.transaction_id = 1;
        assert_eq!(chain_hash(&GENESIS, &event()), chain_hash(&GENESIS, &other));
    }

    #[test]
    fn the_hash_chains_over_the_previous_one() {
        let first = chain_hash(&GENESIS, &event());
        let second = chain_hash(&first, &event());
        assert_ne!(first, second);
        let mut expected = Sha256::new();
        expected.update([0_u8; 32]);
        expected.update(canonical_bytes(&event()));
        assert_eq!(first.0, <[u8; 32]>::from(expected.finalize()));
    }

    proptest! {
        #[test]
        fn canonical_time_is_the_fixed_chrono_format(micros in 0_i64..253_402_300_799_999_999) {
            let time = DateTime::from_timestamp_micros(micros).unwrap_or_default();
            prop_assert_eq!(
                canonical_time(time),
                time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
        }
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let hash = chain_hash(&GENESIS, &event());
        assert_eq!(ChainHash::parse(&hash.to_hex()), Ok(hash));
        assert!(ChainHash::parse("abc").is_err());
        assert!(ChainHash::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn control_characters_are_escaped_like_serde_json() {
        for text in [
            "\u{0}\u{1f}\u{7f}é\u{2028}",
            "\u{8}\u{c}\t\r\n\\\"",
            "plain",
        ] {
            let mut ours = Vec::new();
            write_str(text, &mut ours);
            assert_eq!(
                ours,
                serde_json::to_vec(text).unwrap_or_default(),
                "{text:?}"
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// One field of an event changed to a different value.
    #[derive(Debug, Clone)]
    enum Change {
        Position(i64),
        AggregateType(String),
        AggregateId(String),
        Sequence(i64),
        EventType(String),
        EventVersion(String),
        Payload(Value),
        Metadata(Value),
        RecordedAt(i64),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            any::<i64>().prop_map(Change::Position),
            ".{0,12}".prop_map(Change::AggregateType),
            ".{0,12}".prop_map(Change::AggregateId),
            any::<i64>().prop_map(Change::Sequence),
            ".{0,12}".prop_map(Change::EventType),
            ".{0,6}".prop_map(Change::EventVersion),
            json_value().prop_map(Change::Payload),
            json_value().prop_map(Change::Metadata),
            (1_i64..1_000_000_000).prop_map(Change::RecordedAt),
        ]
    }

    /// Applies `change`; false when it would not change the event (same value).
    fn apply(event: &mut RecordedEvent, change: Change) -> bool {
        let before = event.clone();
        match change {
            Change::Position(v) => event.global_position = v,
            Change::AggregateType(v) => event.aggregate_type = v,
            Change::AggregateId(v) => event.aggregate_id = v,
            Change::Sequence(v) => event.sequence = v,
            Change::EventType(v) => event.event_type = v,
            Change::EventVersion(v) => event.event_version = v,
            Change::Payload(v) => event.payload = v,
            Change::Metadata(v) => event.metadata = v,
            // Whole microseconds: below them the stores have no precision, and the hash ignores them.
            Change::RecordedAt(micros) => {
                event.recorded_at += chrono::Duration::microseconds(micros);
            }
        }
        *event != before
    }

    proptest! {
        #[test]
        fn any_change_of_a_field_changes_the_hash(change in change(), payload in json_value()) {
            let mut original = event();
            original.payload = payload;
            let mut changed = original.clone();
            prop_assume!(apply(&mut changed, change));
            prop_assert_ne!(chain_hash(&GENESIS, &original), chain_hash(&GENESIS, &changed));
        }

        #[test]
        fn key_order_does_not_change_the_hash(pairs in prop::collection::vec((".{0,6}", any::<i64>()), 0..8)) {
            let mut forward = serde_json::Map::new();
            for (key, value) in &pairs {
                forward.insert(key.clone(), Value::from(*value));
            }
            let mut backward = serde_json::Map::new();
            for (key, _) in pairs.iter().rev() {
                if let Some(value) = forward.get(key) {
                    backward.insert(key.clone(), value.clone());
                }
            }
            let mut a = event();
            a.payload = Value::Object(forward);
            let mut b = event();
            b.payload = Value::Object(backward);
            prop_assert_eq!(canonical_bytes(&a), canonical_bytes(&b));
        }

        #[test]
        fn canonical_bytes_parse_back_to_the_same_values(payload in json_value(), metadata in json_value()) {
            let mut e = event();
            e.payload = payload.clone();
            e.metadata = metadata.clone();
            let parsed: Value = serde_json::from_slice(&canonical_bytes(&e)).unwrap_or_default();
            prop_assert_eq!(&parsed["payload"], &payload);
            prop_assert_eq!(&parsed["metadata"], &metadata);
        }
    }
}
