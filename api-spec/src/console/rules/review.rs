//! What a reviewer compares: a revision rendered exactly as the agents will write it into the managed
//! section (the one renderer, `crate::ruleset::render_layer`), and the line diff between two of them.

use crate::ruleset::{EffectiveRule, Layer as SectionLayer, Mode, render_layer};
use edict_domain::RuleId;
use edict_domain::rule::RuleSpec;
use edict_domain::value::Layer;
use similar::{ChangeTag, TextDiff};

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `ins` (only in the newer), `del` (only in the older) or `same`.
    pub kind: &'static str,
    /// The line, without its line break.
    pub text: String,
}

/// The managed section `spec` renders to, alone in its layer.
pub fn rendered(rule: RuleId, revision: u32, spec: &RuleSpec) -> String {
    section(
        spec.layer,
        EffectiveRule {
            rule_id: rule.0,
            revision,
            name: spec.name.as_str().to_owned(),
            category: spec.category.as_ref().map(|c| c.as_str().to_owned()),
            priority: spec.priority,
            mode: Mode::Block,
            temporary_timeout_secs: None,
            triggers: spec
                .triggers
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            content: spec.content.as_str().to_owned(),
        },
    )
}

/// The managed section of `layer` with `rule` alone in it.
pub fn section(layer: Layer, rule: EffectiveRule) -> String {
    let layer = match layer {
        Layer::Organization => SectionLayer::Organization,
        Layer::Team => SectionLayer::Team,
        Layer::Project => SectionLayer::Project,
    };
    render_layer(layer, &[rule])
}

/// The lines from `old` to `new`.
pub fn diff(old: &str, new: &str) -> Vec<DiffLine> {
    TextDiff::from_lines(old, new)
        .iter_all_changes()
        .map(|change| DiffLine {
            kind: match change.tag() {
                ChangeTag::Insert => "ins",
                ChangeTag::Delete => "del",
                ChangeTag::Equal => "same",
            },
            text: change.value().trim_end_matches(['\n', '\r']).to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_marks_removed_and_added_lines() {
        let lines = diff("a\nb\nc\n", "a\nx\nc\n");
        let kinds: Vec<_> = lines.iter().map(|l| (l.kind, l.text.as_str())).collect();
        assert_eq!(
            kinds,
            [("same", "a"), ("del", "b"), ("ins", "x"), ("same", "c")]
        );
    }
}
