//! How the admin CLI shows an answer: `--output json` prints the API's JSON as it is (pretty);
//! `--output table` prints a list (an array, or a page's `items`) as aligned columns of its scalar
//! fields, and one object as `key: value` lines, with its lists of objects (a history's `entries`, a
//! team's `members`) as tables below.

use serde_json::{Map, Value};

/// The widest a table cell gets before it is cut (with `…`).
const MAX_CELL: usize = 60;

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
        _ if value.is_string() => {
            crate::output::line(value.as_str().unwrap_or_default().trim_end_matches('\n'));
            Ok(())
        }
        Format::Json => crate::output::json(value),
        Format::Table => {
            let text = render(value);
            if !text.is_empty() {
                crate::output::line(text.trim_end_matches('\n'));
            }
            Ok(())
        }
    }
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

/// `key: value` lines (keys aligned), then each list of objects as a titled table.
pub fn object(map: &Map<String, Value>) -> String {
    let width = map.keys().map(String::len).max().unwrap_or(0);
    let mut text = String::new();
    let mut lists = Vec::new();
    for (key, value) in map {
        match value {
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                lists.push((key, items));
            }
            _ => text.push_str(&format!("{key:<width$}  {}\n", cell(value))),
        }
    }
    for (key, items) in lists {
        text.push_str(&format!("\n{key}:\n"));
        text.push_str(&table(items));
    }
    text
}

/// Aligned columns: one per field that holds a scalar (or a list of scalars) in some item (`id`,
/// `email` and `name` first, then in the order they appear); `(none)` for no items.
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
    let mut columns: Vec<&str> = Vec::new();
    for item in items {
        for (key, value) in item.as_object().into_iter().flatten() {
            if is_flat(value) && !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    // Keys come in alphabetical order (serde_json's map): the identifying ones go first.
    for first in ["name", "email", "id"] {
        if let Some(at) = columns.iter().position(|c| *c == first) {
            let column = columns.remove(at);
            columns.insert(0, column);
        }
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|column| item.get(*column).map(cell).unwrap_or_default())
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

/// One value on one line: strings bare, lists of scalars comma-separated, anything else as compact
/// JSON; line breaks shown as `\n`, cut at [`MAX_CELL`] characters.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) if is_flat(value) => {
            items.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    let text = text.replace('\r', "").replace('\n', "\\n");
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
    fn a_list_renders_as_aligned_columns_of_its_scalar_fields() {
        let page = json!({
            "items": [
                {"status": "draft", "id": "r1", "tags": ["a", "b"], "working": {"n": 1}},
                {"id": "rule-2", "status": "approved", "tags": []},
            ],
            "next": null,
        });
        assert_eq!(
            render(&page),
            "ID      STATUS    TAGS\n\
             r1      draft     a,b\n\
             rule-2  approved\n"
        );
    }

    #[test]
    fn a_page_with_more_names_its_cursor() {
        let page = json!({"items": [{"id": 1}], "next": "abc"});
        assert_eq!(render(&page), "ID\n1\nnext: abc\n");
    }

    #[test]
    fn an_empty_list_says_so() {
        assert_eq!(render(&json!([])), "(none)\n");
        assert_eq!(render(&json!({"items": []})), "(none)\n");
    }

    #[test]
    fn an_object_renders_as_aligned_key_value_lines_then_its_lists() {
        let history = json!({
            "aggregate_id": "r1",
            "version": 2,
            "entries": [{"version": 1, "event_type": "RuleDrafted"}, {"version": 2, "event_type": "RuleSubmitted"}],
            "spec": {"name": "x"},
        });
        assert_eq!(
            render(&history),
            "aggregate_id  r1\n\
             spec          {\"name\":\"x\"}\n\
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
        let rendered = table(&[json!({"content": format!("a\nb{long}")})]);
        let row = rendered.lines().nth(1).unwrap();
        assert!(row.starts_with("a\\nb"));
        assert_eq!(row.chars().count(), MAX_CELL);
        assert!(row.ends_with('…'));
    }
}
