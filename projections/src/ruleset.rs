//! A team's effective rule set as gateways publish it to agents, and the renderer of a layer's managed
//! section.
//!
//! [`RuleSetDoc`] is the document the `team_rulesets` projection stores under
//! [`RULESET_KIND`](crate::RULESET_KIND) and the runner hands to a
//! [`RulesetPublisher`](crate::RulesetPublisher). Its `revision` grows by exactly one each time the
//! effective content (the rules and their rendered text) changes, and only then; `hash` identifies that
//! content, so an agent holding `(revision, hash)` knows whether it is up to date. Compare both: a
//! rebuild with a changed renderer keeps the revisions but changes the hashes.
//!
//! [`render_layer`] is the one place the managed-section text is produced. It renders the *body* of the
//! section only; the agent owns the markers around it and the merge with the user's text.

use chrono::{DateTime, Utc};
use edict_domain::{EnforcementMode, Layer, RuleId, TeamId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;

/// The heading of the rules without a category (and of the rules whose category is literally
/// `General`), rendered before every other category.
pub const GENERAL_CATEGORY: &str = "General";

/// A team's effective rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSetDoc {
    /// The team.
    pub team_id: TeamId,
    /// The team's current name (not part of the content: a rename does not bump the revision).
    pub team_name: String,
    /// Whether the team is archived. An archived team keeps its rule set document, with every layer
    /// empty, so its agents clear the managed sections they wrote for it.
    pub archived: bool,
    /// Starts at 1 when the team is created and grows by exactly 1 whenever the effective content
    /// changes.
    pub revision: u64,
    /// SHA-256 (lowercase hex) of the canonical JSON of `layers`.
    pub hash: String,
    /// When the event that produced this revision was recorded.
    pub updated_at: DateTime<Utc>,
    /// The global position of that event.
    pub position: i64,
    /// The effective rules and rendered text, per layer.
    pub layers: Layers,
}

/// The three managed sections of a team's rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// Organization rules (`/etc/claude-code/CLAUDE.md`): every organization rule in force, enforced as
    /// the rule says.
    pub organization: LayerRules,
    /// Team rules (`~/.claude/CLAUDE.md`) attached to the team, enforced as the team says.
    pub team: LayerRules,
    /// Project rules (`<project>/CLAUDE.md`) attached to the team, enforced as the team says.
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

    /// SHA-256 (lowercase hex) of the canonical JSON of the layers: what [`RuleSetDoc::hash`] holds.
    pub fn hash(&self) -> String {
        let mut hasher = HashWriter(Sha256::new());
        // The compact JSON of `CanonicalLayers` is the canonical JSON of the layers (its keys are
        // declared sorted), streamed into the hasher. Writing to a hasher cannot fail, nor can
        // serializing these plain structs, so the error is never seen.
        let _ = serde_json::to_writer(&mut hasher, &CanonicalLayers(self));
        hex::encode(hasher.0.finalize())
    }

    /// Whether no layer has a rule.
    pub fn is_empty(&self) -> bool {
        self.organization.rules.is_empty()
            && self.team.rules.is_empty()
            && self.project.rules.is_empty()
    }
}

/// Feeds what is written to a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`Layers`] serialized with every object's keys in byte order: compact, that is the canonical JSON
/// ([`crate::canonical`]) of the layers, without building a `Value`. Keep the field lists in step with
/// [`Layers`], [`LayerRules`] and [`EffectiveRule`] (a test compares the two).
struct CanonicalLayers<'a>(&'a Layers);

impl Serialize for CanonicalLayers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sorted<'a> {
            organization: CanonicalLayer<'a>,
            project: CanonicalLayer<'a>,
            team: CanonicalLayer<'a>,
        }
        Sorted {
            organization: CanonicalLayer(&self.0.organization),
            project: CanonicalLayer(&self.0.project),
            team: CanonicalLayer(&self.0.team),
        }
        .serialize(serializer)
    }
}

struct CanonicalLayer<'a>(&'a LayerRules);

impl Serialize for CanonicalLayer<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sorted<'a> {
            rules: Vec<CanonicalRule<'a>>,
            text: &'a str,
        }
        Sorted {
            rules: self.0.rules.iter().map(CanonicalRule).collect(),
            text: &self.0.text,
        }
        .serialize(serializer)
    }
}

struct CanonicalRule<'a>(&'a EffectiveRule);

impl Serialize for CanonicalRule<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sorted<'a> {
            category: &'a Option<String>,
            content: &'a str,
            mode: EnforcementMode,
            name: &'a str,
            priority: i32,
            revision: u32,
            rule_id: RuleId,
            temporary_timeout_secs: Option<u64>,
            triggers: &'a [String],
        }
        let rule = self.0;
        Sorted {
            category: &rule.category,
            content: &rule.content,
            mode: rule.mode,
            name: &rule.name,
            priority: rule.priority,
            revision: rule.revision,
            rule_id: rule.rule_id,
            temporary_timeout_secs: rule.temporary_timeout_secs,
            triggers: &rule.triggers,
        }
        .serialize(serializer)
    }
}

/// The effective rules of one layer and their rendered managed section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRules {
    /// The rules, in render order.
    pub rules: Vec<EffectiveRule>,
    /// The body of the managed section ([`render_layer`]); empty when there is no rule.
    pub text: String,
}

/// One rule as a team enforces it: the rule's approved revision in force, with the team's (or, for an
/// organization rule, the rule's own) enforcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveRule {
    /// The rule.
    pub rule_id: RuleId,
    /// The approved revision in force.
    pub revision: u32,
    /// Its name (the `### ` heading).
    pub name: String,
    /// Its category (the `## ` heading), if any.
    pub category: Option<String>,
    /// Higher is rendered first within a category.
    pub priority: i32,
    /// What the agent does when the rule's text is edited.
    pub mode: EnforcementMode,
    /// How long a temporary change may stand, for the temporary mode.
    pub temporary_timeout_secs: Option<u64>,
    /// Path globs of the project files the rule applies to (project layer; empty = the whole project).
    pub triggers: Vec<String>,
    /// The Markdown body.
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

/// Renders the body of one layer's managed section.
///
/// Rules are grouped under `## <category>` headings (the rules without a category under
/// `## General`, first; then the categories alphabetically), ordered within a group by priority
/// descending, then name, then id. Each rule is `### <name>`, then, for a project rule with path
/// triggers, an `Applies to:` line listing them, then its content. Blocks are separated by one blank
/// line and the text ends with one newline; no rule renders as the empty string. The output depends on
/// nothing but the rules (the input order does not matter).
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
        blocks.push(format!("### {}", one_line(&rule.name)));
        if layer == Layer::Project && !rule.triggers.is_empty() {
            let globs: Vec<String> = rule.triggers.iter().map(|g| code_span(g)).collect();
            blocks.push(format!("Applies to: {}", globs.join(", ")));
        }
        let content = rule.content.trim_end().trim_start_matches(['\n', '\r']);
        if !content.is_empty() {
            blocks.push(content.to_owned());
        }
    }
    if blocks.is_empty() {
        return String::new();
    }
    let mut text = blocks.join("\n\n");
    text.push('\n');
    text
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
    use uuid::Uuid;

    fn rule(
        id: u128,
        name: &str,
        category: Option<&str>,
        priority: i32,
        content: &str,
    ) -> EffectiveRule {
        EffectiveRule {
            rule_id: RuleId(Uuid::from_u128(id)),
            revision: 1,
            name: name.to_owned(),
            category: category.map(str::to_owned),
            priority,
            mode: EnforcementMode::Block,
            temporary_timeout_secs: None,
            triggers: Vec::new(),
            content: content.to_owned(),
        }
    }

    #[test]
    fn an_empty_layer_renders_as_the_empty_string() {
        assert_eq!(render_layer(Layer::Team, &[]), "");
    }

    #[test]
    fn rules_are_grouped_by_category_with_the_general_group_first() {
        let rules = vec![
            rule(
                1,
                "No secrets",
                Some("Security"),
                10,
                "Never commit secrets.\n",
            ),
            rule(2, "Small commits", None, 0, "Keep commits small.\n"),
            rule(3, "Use cargo fmt", Some("Style"), 5, "Run `cargo fmt`.\n"),
            rule(
                4,
                "Review secrets",
                Some("Security"),
                20,
                "Ask security for review.\n",
            ),
            rule(5, "Be kind", Some("General"), 0, "Be kind in reviews.\n"),
            rule(6, "Audit deps", Some("security"), 0, "Run cargo audit.\n"),
        ];
        let expected = "\
## General

### Be kind

Be kind in reviews.

### Small commits

Keep commits small.

## Security

### Review secrets

Ask security for review.

### No secrets

Never commit secrets.

## security

### Audit deps

Run cargo audit.

## Style

### Use cargo fmt

Run `cargo fmt`.
";
        assert_eq!(render_layer(Layer::Team, &rules), expected);
    }

    #[test]
    fn equal_priorities_are_ordered_by_name_then_id() {
        let rules = vec![
            rule(9, "Beta", Some("A"), 1, "b9"),
            rule(3, "Beta", Some("A"), 1, "b3"),
            rule(1, "Alpha", Some("A"), 1, "a1"),
        ];
        assert_eq!(
            render_layer(Layer::Organization, &rules),
            "## A\n\n### Alpha\n\na1\n\n### Beta\n\nb3\n\n### Beta\n\nb9\n"
        );
    }

    #[test]
    fn project_rules_list_their_triggers() {
        let mut scoped = rule(1, "Rust style", Some("Style"), 0, "Use `?` for errors.\n");
        scoped.triggers = vec!["src/**/*.rs".into(), "odd`glob".into()];
        let whole = rule(2, "Readme", Some("Style"), 0, "Keep the README current.");
        assert_eq!(
            render_layer(Layer::Project, &[scoped, whole]),
            "## Style\n\n### Readme\n\nKeep the README current.\n\n### Rust style\n\n\
             Applies to: `src/**/*.rs`, `` odd`glob ``\n\nUse `?` for errors.\n"
        );
    }

    #[test]
    fn triggers_are_not_rendered_outside_the_project_layer() {
        let mut r = rule(1, "Rule", None, 0, "Body");
        r.triggers = vec!["src/**".into()];
        assert_eq!(
            render_layer(Layer::Team, &[r]),
            "## General\n\n### Rule\n\nBody\n"
        );
    }

    #[test]
    fn content_is_kept_verbatim_inside_but_trimmed_at_its_ends() {
        let r = rule(1, "Rule", None, 0, "\n\n  indented code\n\n- item  \n\n\n");
        assert_eq!(
            render_layer(Layer::Team, &[r]),
            "## General\n\n### Rule\n\n  indented code\n\n- item\n"
        );
    }

    #[test]
    fn a_name_with_line_breaks_stays_one_heading() {
        let r = rule(1, "Two\nlines", None, 0, "Body");
        assert_eq!(
            render_layer(Layer::Team, &[r]),
            "## General\n\n### Two lines\n\nBody\n"
        );
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

    /// The definition: SHA-256 of the canonical JSON of the layers' `Value`.
    fn reference_hash(layers: &Layers) -> String {
        let value = serde_json::to_value(layers).unwrap();
        hex::encode(Sha256::digest(
            crate::canonical::to_string(&value).as_bytes(),
        ))
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_canonical_json_of_the_layers() {
        let mut odd = rule(
            u128::MAX,
            "Quote \" back\\slash \u{1} tab\t é 😀",
            Some("Ünïcode \u{7f}"),
            i32::MIN,
            "line\nbreak \r\n </script> \u{2028}",
        );
        odd.triggers = vec!["src/**/*.rs".into(), "a\"b".into()];
        odd.mode = EnforcementMode::Temporary;
        odd.temporary_timeout_secs = Some(u64::MAX);
        let mut warning = rule(7, "Warn", None, i32::MAX, "");
        warning.mode = EnforcementMode::Warning;
        warning.revision = u32::MAX;
        let cases = [
            Layers::default(),
            Layers::build(vec![odd.clone()], vec![], vec![]),
            Layers::build(
                vec![rule(1, "A", None, 0, "a")],
                vec![warning.clone(), rule(2, "B", Some("General"), -3, "b")],
                vec![odd, warning],
            ),
        ];
        for layers in &cases {
            assert_eq!(layers.hash(), reference_hash(layers));
        }
    }

    #[test]
    fn the_hash_changes_with_the_content_and_only_with_it() {
        let a = Layers::build(vec![rule(1, "A", None, 0, "a")], vec![], vec![]);
        let same = Layers::build(vec![rule(1, "A", None, 0, "a")], vec![], vec![]);
        let mut other_rule = rule(1, "A", None, 0, "a");
        other_rule.mode = EnforcementMode::Warning;
        let other = Layers::build(vec![other_rule], vec![], vec![]);
        assert_eq!(a.hash(), same.hash());
        assert_ne!(a.hash(), other.hash());
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn the_published_document_has_a_stable_json_shape() {
        let mut scoped = rule(1, "Rust style", Some("Style"), 3, "Use `?`.\n");
        scoped.triggers = vec!["src/**/*.rs".into()];
        scoped.mode = EnforcementMode::Temporary;
        scoped.temporary_timeout_secs = Some(3600);
        let layers = Layers::build(vec![], vec![], vec![scoped]);
        let doc = RuleSetDoc {
            team_id: TeamId(Uuid::from_u128(0x7a)),
            team_name: "Platform".into(),
            archived: false,
            revision: 4,
            hash: layers.hash(),
            updated_at: "2026-01-02T03:04:05Z".parse().unwrap(),
            position: 42,
            layers,
        };
        let json = serde_json::to_value(&doc).unwrap();
        let expected = serde_json::json!({
            "team_id": "00000000-0000-0000-0000-00000000007a",
            "team_name": "Platform",
            "archived": false,
            "revision": 4,
            "hash": doc.hash,
            "updated_at": "2026-01-02T03:04:05Z",
            "position": 42,
            "layers": {
                "organization": {"rules": [], "text": ""},
                "team": {"rules": [], "text": ""},
                "project": {
                    "rules": [{
                        "rule_id": "00000000-0000-0000-0000-000000000001",
                        "revision": 1,
                        "name": "Rust style",
                        "category": "Style",
                        "priority": 3,
                        "mode": "temporary",
                        "temporary_timeout_secs": 3600,
                        "triggers": ["src/**/*.rs"],
                        "content": "Use `?`.\n"
                    }],
                    "text": "## Style\n\n### Rust style\n\nApplies to: `src/**/*.rs`\n\nUse `?`.\n"
                }
            }
        });
        assert_eq!(json, expected);
        assert_eq!(serde_json::from_value::<RuleSetDoc>(json).unwrap(), doc);
    }
}
