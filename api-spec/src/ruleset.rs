//! A team's effective rule set as the `team_rulesets` projection produces it and gateways send it
//! (`GatewayMessage::RuleSet.ruleset`), the renderer of a layer's managed section, and the rule markers
//! inside it: the one definition the server and the agent share.
//!
//! [`RuleSetDoc::revision`] grows by exactly one each time the effective content (the rules and their
//! rendered text) changes, and only then; [`RuleSetDoc::hash`] identifies that content ([`Layers::hash`]),
//! so an agent holding `(revision, hash)` knows whether it is up to date.
//!
//! # The section body
//! [`render_layer`] renders the *body* of a managed section; the agent owns the outer
//! `<!-- edict:begin layer=… -->` / `<!-- edict:end -->` lines and the merge with the user's text. Inside
//! the body each rule's text is wrapped in rule markers naming the rule and its revision, so the agent
//! can tell which rule an edit touched and enforce it by that rule's own mode:
//!
//! ```text
//! ## General
//!
//! <!-- edict:rule id=0190…-7a1c revision=3 -->
//! ### No secrets
//!
//! Never commit secrets.
//! <!-- edict:rule-end -->
//! ```
//!
//! Category headings and blank lines sit between the rules. A content line that would read as any
//! Edict marker (`<!-- edict:…-->`) gets a leading backslash (Markdown renders it the same), so a body
//! never holds an outer marker nor a rule marker its rule did not produce. [`split_rules`] finds the
//! rules of a body again, and refuses a body whose rule markers are broken.
//!
//! Unknown fields are ignored and missing optional ones default, so a newer server stays readable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use uuid::Uuid;

mod decision;
mod hash;
mod keys;
mod markers;
mod removal;
mod signature;

pub use decision::DecisionStatement;
pub use keys::{KeyChain, KeyEntry, KeySet, KeySetRefused, KeyState, keyset_bytes};
pub use markers::{RuleSpan, between_rules, split_rules};
pub use removal::RemovalStatement;
pub use signature::{
    IntegrityError, OrgKey, RuleSetSignature, canonical_bytes, key_id_of, parse_public_key, sign,
    verify,
};

/// The heading of the rules without a category (and of the rules whose category is literally
/// `General`), rendered before every other category.
pub const GENERAL_CATEGORY: &str = "General";

/// The start of a rule marker line; `id=<uuid> revision=<n> -->` follows.
pub const RULE_MARKER_PREFIX: &str = "<!-- edict:rule ";
/// The line that closes a rule's text.
pub const RULE_END_MARKER: &str = "<!-- edict:rule-end -->";
/// Every Edict marker line (outer or rule) starts with this.
const ANY_MARKER_PREFIX: &str = "<!-- edict:";
/// The close of a marker comment.
const MARKER_SUFFIX: &str = "-->";

/// What the agent does when a rule's text is edited. Ordered by strictness: `Block` is the strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Keep the change and report it.
    Warning,
    /// Keep the change, report it (a change request), revert when it is rejected or times out.
    Temporary,
    /// Restore the rule's text at once and report it.
    Block,
}

impl Mode {
    /// The stable name (`block`, `temporary`, `warning`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Temporary => "temporary",
            Mode::Warning => "warning",
        }
    }
}

/// One of the three managed sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// `/etc/claude-code/CLAUDE.md`.
    Organization,
    /// `~/.claude/CLAUDE.md`.
    Team,
    /// `<project>/CLAUDE.md`.
    Project,
}

impl Layer {
    /// The stable name (`organization`, `team`, `project`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Organization => "organization",
            Layer::Team => "team",
            Layer::Project => "project",
        }
    }
}

/// A team's effective rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSetDoc {
    /// The team.
    pub team_id: Uuid,
    /// The team's current name (not part of the content: a rename does not bump the revision).
    #[serde(default)]
    pub team_name: String,
    /// Whether the team is archived. An archived team keeps its rule set document, with every layer
    /// empty, so its agents clear the managed sections they wrote for it.
    #[serde(default)]
    pub archived: bool,
    /// Starts at 1 when the team is created and grows by exactly 1 whenever the effective content
    /// changes.
    pub revision: u64,
    /// SHA-256 (lowercase hex) of the canonical JSON of `layers` ([`Layers::hash`]).
    pub hash: String,
    /// When the event that produced this revision was recorded.
    #[serde(default)]
    pub updated_at: DateTime<Utc>,
    /// The global position of that event.
    #[serde(default)]
    pub position: i64,
    /// The effective rules and rendered text, per layer.
    #[serde(default)]
    pub layers: Layers,
    /// The organization's ed25519 signature over [`canonical_bytes`], added where the rule set is
    /// published (never by a gateway). Absent in a document the projection stored and in one an
    /// older server wrote: agents refuse a rule set without it ([`verify`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<RuleSetSignature>,
}

/// The three managed sections of a team's rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// Organization rules (`/etc/claude-code/CLAUDE.md`): every organization rule in force, enforced as
    /// the rule says.
    #[serde(default)]
    pub organization: LayerRules,
    /// Team rules (`~/.claude/CLAUDE.md`) attached to the team, enforced as the team says.
    #[serde(default)]
    pub team: LayerRules,
    /// Project rules (`<project>/CLAUDE.md`) attached to the team, enforced as the team says.
    #[serde(default)]
    pub project: LayerRules,
}

impl Layers {
    /// The rules and text of `layer`.
    pub fn layer(&self, layer: Layer) -> &LayerRules {
        match layer {
            Layer::Organization => &self.organization,
            Layer::Team => &self.team,
            Layer::Project => &self.project,
        }
    }

    /// The rules and text of `layer`, mutable.
    pub fn layer_mut(&mut self, layer: Layer) -> &mut LayerRules {
        match layer {
            Layer::Organization => &mut self.organization,
            Layer::Team => &mut self.team,
            Layer::Project => &mut self.project,
        }
    }

    /// Builds the layers from unsorted rules: sorts each layer in render order and renders its text.
    pub fn build(
        mut organization: Vec<EffectiveRule>,
        mut team: Vec<EffectiveRule>,
        mut project: Vec<EffectiveRule>,
    ) -> Self {
        let finish = |layer: Layer, rules: &mut Vec<EffectiveRule>| {
            rules.sort_by(render_order);
            LayerRules {
                text: render_layer(layer, rules),
                rules: std::mem::take(rules),
            }
        };
        Layers {
            organization: finish(Layer::Organization, &mut organization),
            team: finish(Layer::Team, &mut team),
            project: finish(Layer::Project, &mut project),
        }
    }

    /// SHA-256 (lowercase hex) of the canonical JSON of the layers (every object's keys in byte order,
    /// compact): what [`RuleSetDoc::hash`] holds.
    pub fn hash(&self) -> String {
        hash::of(self)
    }

    /// Whether no layer has a rule.
    pub fn is_empty(&self) -> bool {
        self.organization.rules.is_empty()
            && self.team.rules.is_empty()
            && self.project.rules.is_empty()
    }
}

/// The effective rules of one layer and their rendered managed section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRules {
    /// The rules, in render order.
    #[serde(default)]
    pub rules: Vec<EffectiveRule>,
    /// The body of the managed section ([`render_layer`]); empty when there is no rule.
    #[serde(default)]
    pub text: String,
}

/// One rule as a team enforces it: the rule's approved revision in force, with the team's (or, for an
/// organization rule, the rule's own) enforcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveRule {
    /// The rule.
    pub rule_id: Uuid,
    /// The approved revision in force.
    #[serde(default)]
    pub revision: u32,
    /// Its name (the `### ` heading).
    pub name: String,
    /// Its category (the `## ` heading), if any.
    #[serde(default)]
    pub category: Option<String>,
    /// Higher is rendered first within a category.
    #[serde(default)]
    pub priority: i32,
    /// What the agent does when the rule's text is edited.
    pub mode: Mode,
    /// How long a temporary change may stand, for the temporary mode.
    #[serde(default)]
    pub temporary_timeout_secs: Option<u64>,
    /// Path globs of the project files the rule applies to (project layer; empty = the whole project).
    #[serde(default)]
    pub triggers: Vec<String>,
    /// The Markdown body.
    #[serde(default)]
    pub content: String,
}

/// The order rules are rendered in: the general group first, then categories alphabetically
/// (case-insensitively, then exactly); within a category by priority descending, then name, then id.
pub fn render_order(a: &EffectiveRule, b: &EffectiveRule) -> Ordering {
    group_key(a)
        .cmp(&group_key(b))
        .then_with(|| b.priority.cmp(&a.priority))
        .then_with(|| a.name.cmp(&b.name))
        .then_with(|| a.rule_id.cmp(&b.rule_id))
}

/// `(not general, lowercased category, category)`: the general group sorts first.
fn group_key(rule: &EffectiveRule) -> (bool, String, String) {
    match rule.category.as_deref() {
        None | Some(GENERAL_CATEGORY) => (false, String::new(), String::new()),
        Some(category) => (true, category.to_lowercase(), category.to_owned()),
    }
}

/// The marker line that opens a rule's text (without the line break).
pub fn rule_marker(rule_id: Uuid, revision: u32) -> String {
    format!("{RULE_MARKER_PREFIX}id={rule_id} revision={revision} {MARKER_SUFFIX}")
}

/// Renders the body of one layer's managed section.
///
/// Rules are grouped under `## <category>` headings (the rules without a category under
/// `## General`, first; then the categories alphabetically), ordered within a group by priority
/// descending, then name, then id. Each rule is its rule marker, `### <name>`, then, for a project rule
/// with path triggers, an `Applies to:` line listing them, then its content, then the rule end marker.
/// Blocks are separated by one blank line and the text ends with one newline; no rule renders as the
/// empty string. The output depends on nothing but the rules (the input order does not matter).
pub fn render_layer(layer: Layer, rules: &[EffectiveRule]) -> String {
    let mut sorted: Vec<&EffectiveRule> = rules.iter().collect();
    sorted.sort_by(|a, b| render_order(a, b));
    let mut blocks: Vec<String> = Vec::new();
    let mut current_group: Option<(bool, String, String)> = None;
    for rule in sorted {
        let group = group_key(rule);
        if current_group.as_ref() != Some(&group) {
            let heading = if group.0 {
                group.2.as_str()
            } else {
                GENERAL_CATEGORY
            };
            blocks.push(format!("## {}", one_line(heading)));
            current_group = Some(group);
        }
        let mut block = rule_marker(rule.rule_id, rule.revision);
        block.push('\n');
        block.push_str("### ");
        block.push_str(&one_line(&rule.name));
        if layer == Layer::Project && !rule.triggers.is_empty() {
            let globs: Vec<String> = rule.triggers.iter().map(|g| code_span(g)).collect();
            block.push_str("\n\nApplies to: ");
            block.push_str(&globs.join(", "));
        }
        let content = rule.content.trim_end().trim_start_matches(['\n', '\r']);
        if !content.is_empty() {
            block.push_str("\n\n");
            block.push_str(&neutralize_markers(content));
        }
        block.push('\n');
        block.push_str(RULE_END_MARKER);
        blocks.push(block);
    }
    if blocks.is_empty() {
        return String::new();
    }
    let mut text = blocks.join("\n\n");
    text.push('\n');
    text
}

/// Whether a line (its line break and surrounding spaces ignored) reads as an Edict marker.
fn is_marker_line(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.starts_with(ANY_MARKER_PREFIX) && trimmed.ends_with(MARKER_SUFFIX)
}

/// A rule's content with every line that would read as a marker escaped by a leading backslash.
fn neutralize_markers(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        if is_marker_line(line) {
            out.push('\\');
        }
        out.push_str(line);
    }
    out
}

/// A heading must stay on one line whatever the name holds.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Markdown code span holding `text` verbatim, even when it contains backticks.
fn code_span(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    if longest == 0 {
        return format!("`{text}`");
    }
    let fence = "`".repeat(longest + 1);
    format!("{fence} {text} {fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        id: u128,
        name: &str,
        category: Option<&str>,
        priority: i32,
        content: &str,
    ) -> EffectiveRule {
        EffectiveRule {
            rule_id: Uuid::from_u128(id),
            revision: 1,
            name: name.to_owned(),
            category: category.map(str::to_owned),
            priority,
            mode: Mode::Block,
            temporary_timeout_secs: None,
            triggers: Vec::new(),
            content: content.to_owned(),
        }
    }

    fn marker(id: u128) -> String {
        rule_marker(Uuid::from_u128(id), 1)
    }

    #[test]
    fn an_empty_layer_renders_as_the_empty_string() {
        assert_eq!(render_layer(Layer::Team, &[]), "");
    }

    #[test]
    fn each_rule_is_wrapped_in_its_markers_under_its_category() {
        let rules = vec![
            rule(
                1,
                "No secrets",
                Some("Security"),
                10,
                "Never commit secrets.\n",
            ),
            rule(2, "Small commits", None, 0, "Keep commits small.\n"),
            rule(3, "Review secrets", Some("Security"), 20, "Ask security."),
        ];
        let expected = format!(
            "## General\n\n{}\n### Small commits\n\nKeep commits small.\n{RULE_END_MARKER}\n\n\
             ## Security\n\n{}\n### Review secrets\n\nAsk security.\n{RULE_END_MARKER}\n\n\
             {}\n### No secrets\n\nNever commit secrets.\n{RULE_END_MARKER}\n",
            marker(2),
            marker(3),
            marker(1)
        );
        assert_eq!(render_layer(Layer::Team, &rules), expected);
        assert_eq!(
            marker(1),
            "<!-- edict:rule id=00000000-0000-0000-0000-000000000001 revision=1 -->"
        );
    }

    #[test]
    fn project_rules_list_their_triggers_and_others_do_not() {
        let mut scoped = rule(1, "Rust style", Some("Style"), 0, "Use `?`.\n");
        scoped.triggers = vec!["src/**/*.rs".into(), "odd`glob".into()];
        assert_eq!(
            render_layer(Layer::Project, std::slice::from_ref(&scoped)),
            format!(
                "## Style\n\n{}\n### Rust style\n\nApplies to: `src/**/*.rs`, `` odd`glob ``\n\nUse `?`.\n{RULE_END_MARKER}\n",
                marker(1)
            )
        );
        assert!(!render_layer(Layer::Team, &[scoped]).contains("Applies to"));
    }

    #[test]
    fn content_that_reads_as_a_marker_is_escaped() {
        let r = rule(
            1,
            "Two\nlines",
            None,
            0,
            "<!-- edict:rule-end -->\n<!-- edict:end -->\n <!-- edict:rule id=x revision=1 -->\nok",
        );
        let text = render_layer(Layer::Team, &[r]);
        assert!(text.contains("### Two lines\n"));
        let spans = split_rules(&text).unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].revision, 1);
        assert!(text.contains("\\<!-- edict:end -->"));
    }

    #[test]
    fn rendering_does_not_depend_on_input_order() {
        let rules = vec![
            rule(1, "A", Some("X"), 1, "a"),
            rule(2, "B", None, 3, "b"),
            rule(3, "C", Some("W"), 2, "c"),
        ];
        let mut reversed = rules.clone();
        reversed.reverse();
        assert_eq!(
            render_layer(Layer::Team, &rules),
            render_layer(Layer::Team, &reversed)
        );
    }

    #[test]
    fn split_rules_finds_each_rule_and_the_text_between() {
        let rules = vec![rule(1, "A", None, 0, "a"), rule(2, "B", Some("Z"), 0, "b")];
        let text = render_layer(Layer::Team, &rules);
        let spans = split_rules(&text).unwrap();
        assert_eq!(
            spans.iter().map(|s| s.rule_id.as_str()).collect::<Vec<_>>(),
            vec![
                "00000000-0000-0000-0000-000000000001",
                "00000000-0000-0000-0000-000000000002"
            ]
        );
        assert!(text[spans[0].start..spans[0].end].ends_with("a\n<!-- edict:rule-end -->\n"));
        assert_eq!(
            between_rules(&text, &spans),
            vec!["## General\n\n", "\n## Z\n\n", ""]
        );
    }

    #[test]
    fn broken_rule_markers_are_refused() {
        let text = render_layer(Layer::Team, &[rule(1, "A", None, 0, "a")]);
        assert!(split_rules(&text.replace(RULE_END_MARKER, "")).is_none());
        assert!(split_rules(&text.replace("revision=1", "revision=x")).is_none());
        assert!(split_rules(&format!("{RULE_END_MARKER}\n{text}")).is_none());
        assert!(split_rules(&format!("{text}{text}")).is_some());
        assert_eq!(split_rules("plain\n"), Some(Vec::new()));
    }

    #[test]
    fn block_is_the_strictest_mode() {
        assert!(Mode::Block > Mode::Temporary && Mode::Temporary > Mode::Warning);
    }

    #[test]
    fn a_minimal_document_deserializes() {
        let json = serde_json::json!({
            "team_id": "00000000-0000-0000-0000-000000000001", "revision": 3, "hash": "h",
            "layers": {"team": {"rules": [{"rule_id": "00000000-0000-0000-0000-000000000002",
                "name": "N", "mode": "temporary", "temporary_timeout_secs": 60}]}}
        });
        let doc: RuleSetDoc = serde_json::from_value(json).unwrap();
        assert_eq!(doc.layers.team.rules[0].mode, Mode::Temporary);
    }
}
