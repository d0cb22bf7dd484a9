//! Canonical JSON: compact, object keys sorted by their UTF-8 bytes at every level, strings escaped as
//! serde_json escapes them. Two values that are equal as JSON serialize to the same text however their
//! keys were ordered (a PostgreSQL `jsonb` column reorders them), which is what the hashes need.

use serde_json::Value;

/// Appends the canonical JSON of `value` to `out`.
pub fn write(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            // A scalar's compact serialization is already canonical.
            out.push_str(&value.to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
    }
}

/// The canonical JSON of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_level() {
        let value = json!({"b": 1, "a": {"z": [true, null], "y": "\"q\""}});
        assert_eq!(
            to_string(&value),
            r#"{"a":{"y":"\"q\"","z":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn key_order_does_not_change_the_text() {
        let one: Value = serde_json::from_str(r#"{"x":1,"y":{"b":2,"a":3}}"#).unwrap();
        let two: Value = serde_json::from_str(r#"{"y":{"a":3,"b":2},"x":1}"#).unwrap();
        assert_eq!(to_string(&one), to_string(&two));
    }
}
