//! What each managed section should hold: the layer's rendered texts for the organization and team
//! files; for a project, the project rules whose triggers match one of its files (or that have none).

use super::Target;
use crate::ruleset::{EffectiveRule, Layer, Mode, render_layer};
use crate::snapshot::{RuleMark, StoredRuleSet};
use globset::{Glob, GlobSetBuilder};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How many entries of a project tree trigger matching looks at, at most.
const MAX_SCAN: usize = 20_000;
/// Directories trigger matching never enters.
const SKIP_DIRS: &[&str] = &[".git", "target", "node_modules", ".venv", "vendor"];

/// What a managed section should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The body; empty when no rule applies.
    pub body: String,
    /// The strictest mode of its rules.
    pub mode: Mode,
    /// The team of its first rule.
    pub team: String,
    /// Its first rule.
    pub rule: String,
    /// The shortest temporary timeout among its rules.
    pub temporary_timeout_secs: Option<u64>,
    /// Each rule once, with its strictest mode: how an edit of its text is enforced.
    pub rules: Vec<RuleMark>,
}

/// One mark per rule id (teams in team id order): a rule several teams include is enforced by the
/// strictest of their modes, reported against the first team with that mode.
fn marks(rules: &[(String, &EffectiveRule)]) -> Vec<RuleMark> {
    let mut out: Vec<RuleMark> = Vec::new();
    for (team, rule) in rules {
        let id = rule.rule_id.to_string();
        match out.iter_mut().find(|m| m.rule == id) {
            Some(mark) => {
                if rule.mode > mark.mode {
                    mark.mode = rule.mode;
                    mark.team = team.clone();
                }
                mark.temporary_timeout_secs =
                    match (mark.temporary_timeout_secs, rule.temporary_timeout_secs) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
            }
            None => out.push(RuleMark {
                rule: id,
                team: team.clone(),
                mode: rule.mode,
                temporary_timeout_secs: rule.temporary_timeout_secs,
            }),
        }
    }
    out
}

fn summarize(body: String, rules: &[(String, &EffectiveRule)]) -> Desired {
    let mode = rules
        .iter()
        .map(|(_, r)| r.mode)
        .max()
        .unwrap_or(Mode::Warning);
    // The change is reported against a rule of the strictest mode: that is the rule the section is
    // enforced under (a temporary change must name a temporary-mode rule to open a change request).
    let (team, rule) = rules
        .iter()
        .find(|(_, r)| r.mode == mode)
        .map(|(t, r)| (t.clone(), r.rule_id.to_string()))
        .unwrap_or_default();
    Desired {
        body,
        mode,
        team,
        rule,
        rules: marks(rules),
        temporary_timeout_secs: rules
            .iter()
            .filter_map(|(_, r)| r.temporary_timeout_secs)
            .min(),
    }
}

/// The section a target should hold, from the rule sets in force.
pub fn desired(target: &Target, rulesets: &[StoredRuleSet]) -> Desired {
    let mut sorted: Vec<&StoredRuleSet> = rulesets.iter().collect();
    sorted.sort_by(|a, b| a.team.cmp(&b.team));
    match (&target.layer, &target.project) {
        (Layer::Project, Some(dir)) => {
            let files = project_files(dir);
            let mut seen = BTreeSet::new();
            let mut rules: Vec<(String, &EffectiveRule)> = Vec::new();
            for rs in &sorted {
                for rule in &rs.doc.layers.project.rules {
                    if seen.contains(&rule.rule_id) || !triggered(rule, &files) {
                        continue;
                    }
                    seen.insert(rule.rule_id);
                    rules.push((rs.team.clone(), rule));
                }
            }
            let owned: Vec<EffectiveRule> = rules.iter().map(|(_, r)| (*r).clone()).collect();
            let body = render_layer(Layer::Project, &owned);
            summarize(body, &rules)
        }
        (layer, _) => {
            let mut texts: Vec<&str> = Vec::new();
            let mut rules: Vec<(String, &EffectiveRule)> = Vec::new();
            for rs in &sorted {
                let lr = rs.doc.layers.layer(*layer);
                if !lr.text.is_empty() && !texts.contains(&lr.text.as_str()) {
                    texts.push(&lr.text);
                }
                rules.extend(lr.rules.iter().map(|r| (rs.team.clone(), r)));
            }
            summarize(texts.join("\n"), &rules)
        }
    }
}

fn triggered(rule: &EffectiveRule, files: &[PathBuf]) -> bool {
    if rule.triggers.is_empty() {
        return true;
    }
    let mut builder = GlobSetBuilder::new();
    for trigger in &rule.triggers {
        // A glob that does not parse matches nothing rather than everything.
        if let Ok(glob) = Glob::new(trigger) {
            builder.add(glob);
        }
    }
    match builder.build() {
        Ok(set) => files.iter().any(|f| set.is_match(f)),
        Err(_) => false,
    }
}

/// The project's files (relative paths), skipping VCS and build dirs, bounded.
fn project_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            if out.len() >= MAX_SCAN {
                return out;
            }
            let name = entry.file_name();
            let path = rel.join(&name);
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    if !SKIP_DIRS.iter().any(|s| name == *s) {
                        stack.push(path);
                    }
                }
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out
}
