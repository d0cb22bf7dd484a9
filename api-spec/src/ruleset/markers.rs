//! The rule markers of a section body: finding each rule's text again ([`split_rules`]).

use super::{MARKER_SUFFIX, RULE_END_MARKER, RULE_MARKER_PREFIX};

/// One rule's text in a section body: from the start of its marker line to just past its end marker
/// line (and that line's break).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpan {
    /// The rule id the marker names, as written.
    pub rule_id: String,
    /// The rule revision the marker names.
    pub revision: u32,
    /// Byte offset of the marker line.
    pub start: usize,
    /// Byte offset just past the end marker line.
    pub end: usize,
}

fn parse_rule_marker(trimmed: &str) -> Option<(String, u32)> {
    let inner = trimmed
        .strip_prefix(RULE_MARKER_PREFIX)?
        .strip_suffix(MARKER_SUFFIX)?;
    let mut id = None;
    let mut revision = None;
    for word in inner.split_whitespace() {
        if let Some(v) = word.strip_prefix("id=") {
            id = Some(v.to_owned());
        } else if let Some(v) = word.strip_prefix("revision=") {
            revision = v.parse().ok();
        }
    }
    Some((id?, revision?))
}

/// The rules of a section body, in order, or `None` when its rule markers are broken (an end marker
/// without a rule, a rule marker inside a rule or without its end, a marker that names no id or
/// revision): an edit of such a body cannot be tied to one rule.
pub fn split_rules(body: &str) -> Option<Vec<RuleSpan>> {
    let mut spans = Vec::new();
    let mut open: Option<(String, u32, usize)> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed == RULE_END_MARKER {
            let (rule_id, revision, start) = open.take()?;
            spans.push(RuleSpan {
                rule_id,
                revision,
                start,
                end: offset + line.len(),
            });
        } else if trimmed.starts_with(RULE_MARKER_PREFIX.trim_end()) {
            if open.is_some() {
                return None;
            }
            let (rule_id, revision) = parse_rule_marker(trimmed)?;
            open = Some((rule_id, revision, offset));
        }
        offset += line.len();
    }
    if open.is_some() {
        return None;
    }
    Some(spans)
}

/// The text between the rules of `body` (before the first, between each two, after the last).
pub fn between_rules<'a>(body: &'a str, spans: &[RuleSpan]) -> Vec<&'a str> {
    let mut out = Vec::with_capacity(spans.len() + 1);
    let mut at = 0;
    for span in spans {
        out.push(&body[at..span.start]);
        at = span.end;
    }
    out.push(&body[at..]);
    out
}
