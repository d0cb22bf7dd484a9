//! The managed section of a `CLAUDE.md`: the text between Edict's markers, which the agent owns.
//!
//! ```text
//! <!-- edict:begin layer=team -->
//! …body rendered from the rule sets in force…
//! <!-- edict:end -->
//! ```
//!
//! Every other byte of the file is the user's and survives every [`merge`] verbatim: the file is handled
//! as bytes (it need not be UTF-8; the marker lines are ASCII), so the user's text is never re-encoded.
//! A marker is a whole line (surrounding spaces and a `\r` are tolerated). The section is the *last* begin marker whose next
//! marker line is an end marker; a file without one (no markers, an unterminated begin, an end before any
//! begin, nested begins) keeps all its text and gets a fresh section appended after a blank line. Because
//! the choice depends only on the marker lines and a body never holds one ([`sanitize_body`]), merging
//! twice changes nothing and [`extract`] finds what [`merge`] wrote.

use sha2::{Digest, Sha256};

/// The start of a begin marker line; the layer follows as `layer=<name>`.
const BEGIN_PREFIX: &str = "<!-- edict:begin";
/// The start of an end marker line.
const END_PREFIX: &str = "<!-- edict:end";
/// The close of a marker comment.
const MARKER_SUFFIX: &str = "-->";

/// A managed section found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The layer named by the begin marker (`organization`, `team`, `project`), if any.
    pub layer: Option<String>,
    /// The text between the marker lines (decoded lossily: the body is Edict's, a byte in it that is not
    /// UTF-8 is an edit like any other).
    pub body: String,
    /// Byte offset of the begin marker line in the file.
    pub start: usize,
    /// Byte offset of the body (just past the begin marker line).
    pub body_start: usize,
    /// Byte offset just past the body (the start of the end marker line).
    pub body_end: usize,
    /// Byte offset just past the end marker line (and its line break) in the file.
    pub end: usize,
}

impl Section {
    /// SHA-256 (lowercase hex) of the body.
    pub fn hash(&self) -> String {
        hash_body(&self.body)
    }
}

/// SHA-256 (lowercase hex) of a section body; what reports carry as `original_hash` / `new_hash`.
pub fn hash_body(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// The begin marker line for `layer` (without the line break).
pub fn begin_marker(layer: &str) -> String {
    format!("{BEGIN_PREFIX} layer={layer} {MARKER_SUFFIX}")
}

/// The end marker line (without the line break).
pub fn end_marker() -> String {
    format!("{END_PREFIX} {MARKER_SUFFIX}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Begin,
    End,
}

/// A marker line: its kind, byte range (line break included) and, for a begin marker, its layer.
#[derive(Debug)]
struct MarkerLine<'a> {
    kind: Marker,
    start: usize,
    end: usize,
    /// The text of the line between the start of the marker and `-->`, for a begin marker.
    inner: &'a str,
}

fn classify(line: &str) -> Option<(Marker, &str)> {
    let trimmed = line.trim();
    if !trimmed.ends_with(MARKER_SUFFIX) {
        return None;
    }
    if let Some(rest) = trimmed.strip_prefix(BEGIN_PREFIX) {
        return Some((Marker::Begin, rest.trim_end_matches(MARKER_SUFFIX)));
    }
    if trimmed.starts_with(END_PREFIX) {
        return Some((Marker::End, ""));
    }
    None
}

fn marker_lines(text: &[u8]) -> Vec<MarkerLine<'_>> {
    let mut found = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive(|b| *b == b'\n') {
        // A line that is not UTF-8 is never a marker (markers are ASCII).
        if let Some((kind, inner)) = std::str::from_utf8(line).ok().and_then(classify) {
            found.push(MarkerLine {
                kind,
                start: offset,
                end: offset + line.len(),
                inner,
            });
        }
        offset += line.len();
    }
    found
}

fn layer_of(inner: &str) -> Option<String> {
    inner
        .split_whitespace()
        .find_map(|word| word.strip_prefix("layer="))
        .map(str::to_owned)
}

/// The managed section of `text`, if it has a well-formed one (see the module docs for which one).
pub fn extract(text: &[u8]) -> Option<Section> {
    let markers = marker_lines(text);
    markers
        .windows(2)
        .rev()
        .find(|pair| pair[0].kind == Marker::Begin && pair[1].kind == Marker::End)
        .map(|pair| Section {
            layer: layer_of(pair[0].inner),
            body: String::from_utf8_lossy(&text[pair[0].end..pair[1].start]).into_owned(),
            start: pair[0].start,
            body_start: pair[0].end,
            body_end: pair[1].start,
            end: pair[1].end,
        })
}

/// Makes `body` safe to put between the markers: a line that would read as a marker gets a leading
/// backslash (Markdown renders it the same), and a non-empty body ends with a line break.
pub fn sanitize_body(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1);
    for line in body.split_inclusive('\n') {
        if classify(line).is_some() {
            out.push('\\');
        }
        out.push_str(line);
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The whole section text (markers included) for `layer` and `body`.
fn render_section(layer: &str, body: &str) -> String {
    format!(
        "{}\n{}{}\n",
        begin_marker(layer),
        sanitize_body(body),
        end_marker()
    )
}

/// `text` with its managed section's body replaced by `body`, or, when it has no well-formed section,
/// `text` verbatim followed by a blank line and a fresh section for `layer`.
pub fn merge(text: &[u8], layer: &str, body: &str) -> Vec<u8> {
    match extract(text) {
        Some(section) => {
            // The marker lines stay byte for byte (and so the layer they name): only the body changes.
            let mut out = Vec::with_capacity(text.len() + body.len());
            out.extend_from_slice(&text[..section.body_start]);
            out.extend_from_slice(sanitize_body(body).as_bytes());
            out.extend_from_slice(&text[section.body_end..]);
            out
        }
        None => {
            let mut out = Vec::with_capacity(text.len() + body.len() + 64);
            out.extend_from_slice(text);
            if !text.is_empty() {
                if !text.ends_with(b"\n") {
                    out.push(b'\n');
                }
                if !text.ends_with(b"\n\n") {
                    out.push(b'\n');
                }
            }
            out.extend_from_slice(render_section(layer, body).as_bytes());
            out
        }
    }
}

/// `text` without its managed section (the marker lines and the body); the user's text is kept.
pub fn remove(text: &[u8]) -> Vec<u8> {
    match extract(text) {
        Some(section) => {
            let mut out = Vec::with_capacity(text.len());
            out.extend_from_slice(&text[..section.start]);
            out.extend_from_slice(&text[section.end..]);
            out
        }
        None => text.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_file_without_markers_gets_a_section_after_a_blank_line() {
        let merged = merge(b"# Mine\nkeep me", "team", "## General\n");
        assert_eq!(
            merged,
            b"# Mine\nkeep me\n\n<!-- edict:begin layer=team -->\n## General\n<!-- edict:end -->\n"
        );
    }

    #[test]
    fn an_empty_file_gets_only_the_section() {
        assert_eq!(
            merge(b"", "project", "x\n"),
            b"<!-- edict:begin layer=project -->\nx\n<!-- edict:end -->\n"
        );
    }

    #[test]
    fn an_existing_section_is_replaced_and_text_around_it_kept() {
        let text = b"before\n<!-- edict:begin layer=team -->\nold\n<!-- edict:end -->\nafter\n";
        assert_eq!(
            merge(text, "team", "new\n"),
            b"before\n<!-- edict:begin layer=team -->\nnew\n<!-- edict:end -->\nafter\n"
        );
        let section = extract(text);
        assert_eq!(
            section.map(|s| (s.layer, s.body)),
            Some((Some("team".to_owned()), "old\n".to_owned()))
        );
    }

    #[test]
    fn an_unterminated_section_is_kept_as_user_text_and_a_fresh_one_appended() {
        let text = b"a\n<!-- edict:begin layer=team -->\nedited\n";
        let merged = merge(text, "team", "body\n");
        assert!(merged.starts_with(text));
        assert_eq!(extract(&merged).map(|s| s.body), Some("body\n".to_owned()));
    }

    #[test]
    fn an_end_marker_before_any_begin_is_user_text() {
        let text = b"<!-- edict:end -->\nmine\n";
        let merged = merge(text, "team", "b\n");
        assert!(merged.starts_with(text));
        assert_eq!(extract(&merged).map(|s| s.body), Some("b\n".to_owned()));
    }

    #[test]
    fn crlf_marker_lines_are_recognised() {
        let text = b"u\r\n<!-- edict:begin layer=team -->\r\nold\r\n<!-- edict:end -->\r\nv\r\n";
        let merged = merge(text, "team", "new\n");
        assert_eq!(
            merged,
            b"u\r\n<!-- edict:begin layer=team -->\r\nnew\n<!-- edict:end -->\r\nv\r\n"
        );
    }

    #[test]
    fn marker_lines_in_a_body_are_neutralised() {
        let body = "<!-- edict:end -->\ntext";
        let merged = merge(b"", "team", body);
        assert_eq!(
            extract(&merged).map(|s| s.body),
            Some("\\<!-- edict:end -->\ntext\n".to_owned())
        );
    }

    #[test]
    fn removing_the_section_keeps_the_user_text() {
        let text = b"before\n<!-- edict:begin layer=team -->\nold\n<!-- edict:end -->\nafter\n";
        assert_eq!(remove(text), b"before\nafter\n");
        assert_eq!(remove(b"no section\n"), b"no section\n");
    }

    #[test]
    fn the_hash_is_sha256_hex_of_the_body() {
        assert_eq!(
            hash_body(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    fn arbitrary_text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"<!-- edict:begin layer=team -->".to_vec()),
            Just(b"<!-- edict:end -->".to_vec()),
            Just(b"<!-- edict:rule id=x revision=1 -->".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b" ".to_vec()),
            "[a-z#<>!-]{0,8}".prop_map(String::into_bytes),
            any::<String>().prop_map(String::into_bytes),
            // Not UTF-8: the user's bytes are never re-encoded.
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    fn arbitrary_body() -> impl Strategy<Value = String> {
        arbitrary_text().prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    proptest! {
        #[test]
        fn user_text_outside_the_markers_survives_merge(text in arbitrary_text(), body in arbitrary_body()) {
            let merged = merge(&text, "team", &body);
            let section = extract(&merged);
            prop_assert!(section.is_some());
            if let Some(section) = section {
                let outside = [&merged[..section.start], &merged[section.end..]].concat();
                match extract(&text) {
                    Some(old) => {
                        let old_outside = [&text[..old.start], &text[old.end..]].concat();
                        prop_assert_eq!(outside, old_outside);
                    }
                    None => prop_assert!(merged.starts_with(&text)),
                }
            }
        }

        #[test]
        fn merge_is_idempotent(text in arbitrary_text(), body in arbitrary_body()) {
            let once = merge(&text, "team", &body);
            prop_assert_eq!(merge(&once, "team", &body), once.clone());
        }

        #[test]
        fn extract_finds_what_merge_wrote(text in arbitrary_text(), body in arbitrary_body()) {
            let merged = merge(&text, "project", &body);
            prop_assert_eq!(extract(&merged).map(|s| s.body), Some(sanitize_body(&body)));
        }
    }
}
