//! How the admin CLI shows an answer: `--output json` prints the API's JSON as it is (pretty);
//! `--output table` prints a list (an array, or a page's `items`) as aligned columns of its scalar
//! fields, and one object as `key: value` lines, with its lists of objects (a history's `entries`, a
//! team's `members`) as tables below.

use serde_json::{Map, Value, json};

/// The widest a table cell gets before it is cut (with `…`).
const MAX_CELL: usize = 60;

/// The most columns a table shows (`--output json` has every field).
const MAX_COLUMNS: usize = 8;

/// The columns that lead a table, when the items have them.
const FIRST: &[&str] = &[
    "id",
    "name",
    "email",
    "status",
    "state",
    "event_type",
    "layer",
    "version",
    "revision",
    "global_position",
    "actor",
    "recorded_at",
];

/// Fields too long for a column (`show` and `--output json` have them).
const LONG_TEXT: &[&str] = &["content", "description", "diff", "justification", "note"];

/// The output format of the admin commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for lists, `key: value` for one object.
    #[default]
    Table,
    /// The API's JSON as it is, pretty.
    Json,
}

/// Prints `value` in `format` (a string, the body of an answer that is not JSON, as it is).
///
/// # Errors
/// When stdout cannot take it.
pub fn print(value: &Value, format: Format) -> anyhow::Result<()> {
    match format {
        // Not JSON (a rendered section's Markdown): as it came, in either format.
        _ if value.is_string() => out(value.as_str().unwrap_or_default()),
        Format::Json => out(&serde_json::to_string_pretty(value)?),
        Format::Table => out(&render(value)),
    }
}

/// Prints `text` (with one final line break); a reader that went away (`| head`) is no error.
fn out(text: &str) -> anyhow::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    crate::output::stream_line(text.trim_end_matches('\n'))?;
    Ok(())
}

/// The table form of an answer.
pub fn render(value: &Value) -> String {
    match value {
        Value::Array(items) => table(items),
        Value::Object(map) => match map.get("items") {
            Some(Value::Array(items)) => {
                let mut text = table(items);
                if let Some(next) = map.get("next").filter(|n| !n.is_null()) {
                    text.push_str(&format!("next: {}\n", cell(next)));
                }
                text
            }
            _ => object(map),
        },
        Value::Null => String::new(),
        other => format!("{}\n", cell(other)),
    }
}

/// `key: value` lines (nested objects flattened to `a.b` keys, aligned; values whole), then each
/// list of objects as a titled table.
pub fn object(map: &Map<String, Value>) -> String {
    let mut fields = Vec::new();
    flatten(map, "", &mut fields);
    let (lists, fields): (Vec<_>, Vec<_>) = fields.into_iter().partition(|(_, value)| {
        value
            .as_array()
            .is_some_and(|items| !items.is_empty() && items.iter().all(Value::is_object))
    });
    let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in fields {
        text.push_str(&format!("{key:<width$}  {}\n", one_line(value)));
    }
    for (key, items) in lists {
        text.push_str(&format!("\n{key}:\n"));
        text.push_str(&table(
            items.as_array().map(Vec::as_slice).unwrap_or_default(),
        ));
    }
    text
}

/// The fields of `map` with nested objects' fields as `prefix.key` (lists stay whole).
fn flatten<'a>(map: &'a Map<String, Value>, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    for (key, value) in map {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(inner, &key, out),
            _ => out.push((key, value)),
        }
    }
}

/// Aligned columns: one per field (nested objects' fields as `a.b`) that holds a scalar or a list
/// of scalars (not empty) in some item, but long texts; shallower fields first, [`FIRST`] first
/// among them (by the field's last name), at most [`MAX_COLUMNS`]; `(none)` for no items.
pub fn table(items: &[Value]) -> String {
    if items.is_empty() {
        return "(none)\n".to_owned();
    }
    if !items.iter().all(Value::is_object) {
        return items
            .iter()
            .map(|item| format!("{}\n", cell(item)))
            .collect();
    }
    let items: Vec<Vec<(String, &Value)>> = items
        .iter()
        .map(|item| {
            let mut fields = Vec::new();
            if let Some(map) = item.as_object() {
                flatten(map, "", &mut fields);
            }
            fields
        })
        .collect();
    let mut columns: Vec<&str> = Vec::new();
    for fields in &items {
        for (key, value) in fields {
            let last = key.rsplit('.').next().unwrap_or(key);
            let shown = is_flat(value) && !value.is_null() && *value != "" && **value != json!([]);
            if shown && !LONG_TEXT.contains(&last) && !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    // Keys come in alphabetical order (serde_json's map): the identifying ones go first.
    columns.sort_by_key(|column| {
        let last = column.rsplit('.').next().unwrap_or(column);
        let rank = FIRST
            .iter()
            .position(|first| *first == last)
            .unwrap_or(FIRST.len());
        (column.matches('.').count(), rank)
    });
    columns.truncate(MAX_COLUMNS);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|column| {
                    item.iter()
                        .find(|(key, _)| key == column)
                        .map(|(_, value)| cell(value))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(at, column)| {
            rows.iter()
                .map(|row| row[at].chars().count())
                .chain([column.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut text = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        text.push_str(&line(row));
    }
    text
}

/// A scalar, or a list of scalars.
fn is_flat(value: &Value) -> bool {
    match value {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().all(|i| !i.is_object() && !i.is_array()),
        _ => true,
    }
}

/// One value on one line, whole: strings bare (line breaks shown as `\n`), lists of scalars
/// comma-separated, anything else as compact JSON.
fn one_line(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.replace('\r', "").replace('\n', "\\n"),
        Value::Array(items) if is_flat(value) => {
            items.iter().map(one_line).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// One value on one line: strings bare, lists of scalars comma-separated, anything else as compact
/// JSON; line breaks shown as `\n`, cut at [`MAX_CELL`] characters.
fn cell(value: &Value) -> String {
    let text = one_line(value);
    if text.chars().count() > MAX_CELL {
        let mut cut: String = text.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_renders_as_aligned_columns_of_its_scalar_and_nested_fields() {
        let page = json!({
            "items": [
                {"status": "draft", "id": "r1", "tags": ["a", "b"], "working": {"n": 1}},
                {"id": "rule-2", "status": "approved", "tags": []},
            ],
            "next": null,
        });
        assert_eq!(
            render(&page),
            "ID      STATUS    TAGS  WORKING.N\n\
             r1      draft     a,b   1\n\
             rule-2  approved\n"
        );
    }

    #[test]
    fn a_page_with_more_names_its_cursor() {
        let page = json!({"items": [{"id": 1}], "next": "abc"});
        assert_eq!(render(&page), "ID\n1\nnext: abc\n");
    }

    #[test]
    fn long_texts_empty_columns_and_columns_past_the_limit_are_left_out() {
        let item = json!({
            "id": 1, "content": "long", "empty": null, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5,
            "f": 6, "g": 7, "h": 8,
        });
        assert_eq!(
            render(&json!([item])),
            "ID  A  B  C  D  E  F  G\n1   1  2  3  4  5  6  7\n"
        );
    }

    #[test]
    fn nested_fields_of_items_become_dotted_columns() {
        let entries = json!([{"event": {"event_type": "RuleDrafted", "metadata": {"actor": "u"}}}]);
        assert_eq!(
            render(&entries),
            "EVENT.EVENT_TYPE  EVENT.METADATA.ACTOR\nRuleDrafted       u\n"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        assert_eq!(render(&json!([])), "(none)\n");
        assert_eq!(render(&json!({"items": []})), "(none)\n");
    }

    #[test]
    fn an_object_renders_as_flattened_key_value_lines_then_its_lists() {
        let history = json!({
            "aggregate_id": "r1",
            "version": 2,
            "entries": [{"version": 1, "event_type": "RuleDrafted"}, {"version": 2, "event_type": "RuleSubmitted"}],
            "spec": {"name": "x", "tags": ["a"]},
        });
        assert_eq!(
            render(&history),
            "aggregate_id  r1\n\
             spec.name     x\n\
             spec.tags     a\n\
             version       2\n\
             \n\
             entries:\n\
             EVENT_TYPE     VERSION\n\
             RuleDrafted    1\n\
             RuleSubmitted  2\n"
        );
    }

    #[test]
    fn long_and_multiline_cells_stay_on_one_short_line() {
        let long = "x".repeat(100);
        let rendered = table(&[json!({"title": format!("a\nb{long}")})]);
        let row = rendered.lines().nth(1).unwrap();
        assert!(row.starts_with("a\\nb"));
        assert_eq!(row.chars().count(), MAX_CELL);
        assert!(row.ends_with('…'));
    }
}
