//! The team rule sets' documents: a team's rule set, its layers, signature and time-travel marker.

use super::{DocumentFreshness, Timestamp};
use crate::server::rules::ModeDto;
use poem_openapi::Object;

/// One rule as a team enforces it.
#[derive(Debug, Clone, Object)]
pub struct EffectiveRuleEntry {
    /// The rule.
    pub rule_id: String,
    /// The approved revision in force.
    #[oai(default)]
    pub revision: u32,
    /// Its name (the `### ` heading).
    pub name: String,
    /// Its category (the `## ` heading), if any.
    #[oai(default, nullable)]
    pub category: Option<String>,
    /// Higher is rendered first within a category.
    #[oai(default)]
    pub priority: i32,
    /// What the agent does when the rule's text is edited.
    pub mode: ModeDto,
    /// How long a temporary change may stand, for the temporary mode.
    #[oai(default, nullable)]
    pub temporary_timeout_secs: Option<u64>,
    /// Path globs of the project files the rule applies to (project layer; empty: the whole project).
    #[oai(default)]
    pub triggers: Vec<String>,
    /// The Markdown body.
    #[oai(default)]
    pub content: String,
}

/// The effective rules of one layer and their rendered managed section.
#[derive(Debug, Clone, Object)]
pub struct LayerRulesEntry {
    /// The rules, in render order.
    #[oai(default)]
    pub rules: Vec<EffectiveRuleEntry>,
    /// The body of the managed section; empty when there is no rule.
    #[oai(default)]
    pub text: String,
}

/// The three managed sections of a team's rule set.
#[derive(Debug, Clone, Object)]
pub struct LayersEntry {
    /// Organization rules (`/etc/claude-code/CLAUDE.md`).
    pub organization: LayerRulesEntry,
    /// Team rules (`~/.claude/CLAUDE.md`).
    pub team: LayerRulesEntry,
    /// Project rules (`<project>/CLAUDE.md`).
    pub project: LayerRulesEntry,
}

/// The organization's signature over a rule set.
#[derive(Debug, Clone, Object)]
pub struct RuleSetSignatureEntry {
    /// The signing key's id.
    pub key_id: String,
    /// When the rule set was issued.
    pub issued_at: Timestamp,
    /// The ed25519 signature (lowercase hex).
    pub sig: String,
}

/// What a time-travel read asked for and what it replayed.
#[derive(Debug, Clone, Object)]
pub struct AsOfEntry {
    /// The `as_of` parameter as given.
    pub requested: String,
    /// The position of the last event replayed (null: none was).
    #[oai(nullable)]
    pub position: Option<i64>,
    /// How many events were replayed.
    pub events_replayed: u64,
}

/// A team's effective rule set: the document agents apply.
#[derive(Debug, Clone, Object)]
pub struct RuleSetDocument {
    /// The team.
    pub team_id: String,
    /// The team's current name (a rename does not bump the revision).
    #[oai(default)]
    pub team_name: String,
    /// Whether the team is archived (every layer is then empty).
    #[oai(default)]
    pub archived: bool,
    /// Starts at 1 and grows by exactly 1 whenever the effective content changes; the rule set's
    /// `ETag`.
    pub revision: u64,
    /// SHA-256 (lowercase hex) of the canonical JSON of `layers`.
    pub hash: String,
    /// When the event that produced this revision was recorded.
    pub updated_at: Timestamp,
    /// The global position of that event.
    #[oai(default)]
    pub position: i64,
    /// The effective rules and rendered text, per layer.
    pub layers: LayersEntry,
    /// The organization's signature, where the rule set is published signed.
    #[oai(skip_serializing_if_is_none)]
    pub signature: Option<RuleSetSignatureEntry>,
    /// How fresh the read model that answered is (absent with `as_of`).
    #[oai(skip_serializing_if_is_none)]
    pub freshness: Option<DocumentFreshness>,
    /// For an `as_of` read: what was asked and replayed (absent otherwise).
    #[oai(skip_serializing_if_is_none)]
    pub as_of: Option<AsOfEntry>,
}
