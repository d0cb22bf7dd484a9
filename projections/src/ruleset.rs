//! A team's effective rule set as gateways publish it to agents, and the renderer of a layer's managed
//! section: both live in `edict_api::ruleset` (serde only), the one definition the server and the agent
//! share; this module re-exports them and converts the domain's values to theirs.
//!
//! [`RuleSetDoc`] is the document the `team_rulesets` projection stores under
//! [`RULESET_KIND`](crate::RULESET_KIND) and the runner hands to a
//! [`RulesetPublisher`](crate::RulesetPublisher). Its `revision` grows by exactly one each time the
//! effective content (the rules and their rendered text) changes, and only then; `hash` identifies that
//! content, so an agent holding `(revision, hash)` knows whether it is up to date. Compare both: a
//! rebuild with a changed renderer keeps the revisions but changes the hashes.
//!
//! [`render_layer`] is the one place the managed-section text is produced. It renders the *body* of the
//! section only (each rule's text between rule markers naming the rule and its revision); the agent owns
//! the markers around it and the merge with the user's text.

use edict_domain::{EnforcementMode, Layer};

pub use edict_api::ruleset::{
    EffectiveRule, GENERAL_CATEGORY, LayerRules, Layers, Mode, RuleSetDoc, render_order,
};

/// The wire mode of a domain enforcement mode.
pub fn mode_of(mode: EnforcementMode) -> Mode {
    match mode {
        EnforcementMode::Block => Mode::Block,
        EnforcementMode::Temporary => Mode::Temporary,
        EnforcementMode::Warning => Mode::Warning,
    }
}

/// The domain enforcement mode of a wire mode.
pub fn enforcement_mode(mode: Mode) -> EnforcementMode {
    match mode {
        Mode::Block => EnforcementMode::Block,
        Mode::Temporary => EnforcementMode::Temporary,
        Mode::Warning => EnforcementMode::Warning,
    }
}

/// The wire layer of a domain layer.
pub fn layer_of(layer: Layer) -> edict_api::ruleset::Layer {
    match layer {
        Layer::Organization => edict_api::ruleset::Layer::Organization,
        Layer::Team => edict_api::ruleset::Layer::Team,
        Layer::Project => edict_api::ruleset::Layer::Project,
    }
}

/// Renders the body of one layer's managed section ([`edict_api::ruleset::render_layer`]).
pub fn render_layer(layer: Layer, rules: &[EffectiveRule]) -> String {
    edict_api::ruleset::render_layer(layer_of(layer), rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use uuid::Uuid;

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

    #[test]
    fn modes_and_layers_convert_both_ways() {
        for mode in [
            EnforcementMode::Block,
            EnforcementMode::Temporary,
            EnforcementMode::Warning,
        ] {
            assert_eq!(enforcement_mode(mode_of(mode)), mode);
            assert_eq!(mode_of(mode).as_str(), mode.as_str());
        }
        for layer in [Layer::Organization, Layer::Team, Layer::Project] {
            assert_eq!(layer_of(layer).as_str(), layer.as_str());
        }
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
        odd.mode = Mode::Temporary;
        odd.temporary_timeout_secs = Some(u64::MAX);
        let mut warning = rule(7, "Warn", None, i32::MAX, "");
        warning.mode = Mode::Warning;
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
        other_rule.mode = Mode::Warning;
        let other = Layers::build(vec![other_rule], vec![], vec![]);
        assert_eq!(a.hash(), same.hash());
        assert_ne!(a.hash(), other.hash());
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn the_published_document_has_a_stable_json_shape() {
        let mut scoped = rule(1, "Rust style", Some("Style"), 3, "Use `?`.\n");
        scoped.triggers = vec!["src/**/*.rs".into()];
        scoped.mode = Mode::Temporary;
        scoped.temporary_timeout_secs = Some(3600);
        let layers = Layers::build(vec![], vec![], vec![scoped]);
        let doc = RuleSetDoc {
            team_id: Uuid::from_u128(0x7a),
            team_name: "Platform".into(),
            archived: false,
            revision: 4,
            hash: layers.hash(),
            updated_at: "2026-01-02T03:04:05Z".parse().unwrap(),
            position: 42,
            layers,
            signature: None,
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
                    "text": "## Style\n\n<!-- edict:rule id=00000000-0000-0000-0000-000000000001 revision=1 -->\n\
                             ### Rust style\n\nApplies to: `src/**/*.rs`\n\nUse `?`.\n<!-- edict:rule-end -->\n"
                }
            }
        });
        assert_eq!(json, expected);
        assert_eq!(serde_json::from_value::<RuleSetDoc>(json).unwrap(), doc);
    }
}
