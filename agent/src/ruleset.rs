//! The rule set document a gateway sends (`GatewayMessage::RuleSet.ruleset`): the agent's own mirror of
//! the `team_rulesets` projection's document, and a port of the server's layer renderer (for the project
//! layer, whose rules the agent filters by trigger before rendering).
//!
//! Unknown fields are ignored and missing ones default, so a newer server stays readable.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// The heading of the rules without a category, rendered first.
pub const GENERAL_CATEGORY: &str = "General";

/// What the agent does when a rule's section is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Keep the change and report it.
    Warning,
    /// Keep the change, report it (a change request), revert when it is rejected or times out.
    Temporary,
    /// Restore the section at once and report it.
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
    pub team_id: String,
    /// The team's name.
    #[serde(default)]
    pub team_name: String,
    /// Whether the team is archived (then every layer is empty).
    #[serde(default)]
    pub archived: bool,
    /// The revision.
    pub revision: u64,
    /// The content hash.
    pub hash: String,
    /// When this revision was produced (RFC 3339).
    #[serde(default)]
    pub updated_at: serde_json::Value,
    /// The global position of the event that produced it.
    #[serde(default)]
    pub position: i64,
    /// The rules and rendered text per layer.
    #[serde(default)]
    pub layers: Layers,
}

/// The three layers of a rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// Organization rules.
    #[serde(default)]
    pub organization: LayerRules,
    /// Team rules.
    #[serde(default)]
    pub team: LayerRules,
    /// Project rules.
    #[serde(default)]
    pub project: LayerRules,
}

impl Layers {
    /// The rules of `layer`.
    pub fn layer(&self, layer: Layer) -> &LayerRules {
        match layer {
            Layer::Organization => &self.organization,
            Layer::Team => &self.team,
            Layer::Project => &self.project,
        }
    }
}

/// One layer's rules and rendered text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRules {
    /// The rules, in render order.
    #[serde(default)]
    pub rules: Vec<EffectiveRule>,
    /// The rendered body of the managed section.
    #[serde(default)]
    pub text: String,
}

/// A rule as a team enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveRule {
    /// The rule id.
    pub rule_id: String,
    /// Its revision.
    #[serde(default)]
    pub revision: u32,
    /// Its name.
    pub name: String,
    /// Its category.
    #[serde(default)]
    pub category: Option<String>,
    /// Higher renders first within a category.
    #[serde(default)]
    pub priority: i32,
    /// The enforcement mode.
    pub mode: Mode,
    /// How long a temporary change may stand.
    #[serde(default)]
    pub temporary_timeout_secs: Option<u64>,
    /// Project path globs (empty = the whole project).
    #[serde(default)]
    pub triggers: Vec<String>,
    /// The Markdown body.
    #[serde(default)]
    pub content: String,
}

fn group_key(rule: &EffectiveRule) -> (bool, String, String) {
    match rule.category.as_deref() {
        None | Some(GENERAL_CATEGORY) => (false, String::new(), String::new()),
        Some(category) => (true, category.to_lowercase(), category.to_owned()),
    }
}

/// The server's render order: general group first, categories alphabetically, priority descending,
/// then name, then id.
pub fn render_order(a: &EffectiveRule, b: &EffectiveRule) -> Ordering {
    group_key(a)
        .cmp(&group_key(b))
        .then_with(|| b.priority.cmp(&a.priority))
        .then_with(|| a.name.cmp(&b.name))
        .then_with(|| a.rule_id.cmp(&b.rule_id))
}

/// Renders one layer's section body exactly as the server's `render_layer` does.
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

fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

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

    fn rule(id: &str, name: &str, category: Option<&str>, priority: i32) -> EffectiveRule {
        EffectiveRule {
            rule_id: id.to_owned(),
            revision: 1,
            name: name.to_owned(),
            category: category.map(str::to_owned),
            priority,
            mode: Mode::Block,
            temporary_timeout_secs: None,
            triggers: Vec::new(),
            content: format!("{name} body\n"),
        }
    }

    #[test]
    fn the_renderer_matches_the_servers_format() {
        let mut scoped = rule("1", "Rust style", Some("Style"), 0);
        scoped.triggers = vec!["src/**/*.rs".into(), "odd`glob".into()];
        let rules = vec![
            scoped,
            rule("2", "Small", None, 0),
            rule("3", "Sec", Some("Security"), 5),
        ];
        assert_eq!(
            render_layer(Layer::Project, &rules),
            "## General\n\n### Small\n\nSmall body\n\n## Security\n\n### Sec\n\nSec body\n\n\
             ## Style\n\n### Rust style\n\nApplies to: `src/**/*.rs`, `` odd`glob ``\n\nRust style body\n"
        );
        assert_eq!(render_layer(Layer::Team, &[]), "");
    }

    #[test]
    fn a_projection_document_deserializes() {
        let json = serde_json::json!({
            "team_id": "00000000-0000-0000-0000-000000000001", "team_name": "T", "archived": false,
            "revision": 3, "hash": "h", "updated_at": "2026-11-21T00:00:00Z", "position": 9,
            "layers": {
                "organization": {"rules": [], "text": ""},
                "team": {"rules": [{"rule_id": "r", "revision": 1, "name": "N", "category": null,
                    "priority": 0, "mode": "temporary", "temporary_timeout_secs": 60, "triggers": [],
                    "content": "c"}], "text": "## General\n\n### N\n\nc\n"},
                "project": {"rules": [], "text": ""}
            }
        });
        let doc: Result<RuleSetDoc, _> = serde_json::from_value(json);
        assert!(matches!(doc, Ok(ref d) if d.layers.team.rules[0].mode == Mode::Temporary));
    }

    #[test]
    fn block_is_the_strictest_mode() {
        assert!(Mode::Block > Mode::Temporary && Mode::Temporary > Mode::Warning);
    }
}
