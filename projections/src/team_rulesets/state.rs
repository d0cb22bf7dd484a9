//! How `team_rulesets` holds a team's rule set while it works: [`RuleSetState`], the [`RuleSetDoc`]
//! without its rendered text and hash, which are produced when the document is serialized (once per
//! batch, however many events changed it).
//!
//! The revision moves when the effective rules change. That is the same as "when the hash changes": the
//! hash is the SHA-256 of the canonical JSON of the layers, whose texts are a function of the rules
//! (in render order), and equal rules serialize to equal JSON and different rules to different JSON. The
//! one case where comparing rules is not enough is a document read from the store that an older
//! renderer wrote: its hash is checked once against its rules (see [`RuleSetState::unchecked_hash`]).

use crate::ruleset::{
    EffectiveRule, LayerRules, Layers, RuleSetDoc, enforcement_mode, mode_of, render_layer,
};
use chrono::{DateTime, Utc};
use edict_domain::{EnforcementMode, Layer, RuleId, TeamId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::sync::Arc;

use super::sources::ApprovedSource;

/// What a rule set shows of a rule's approved revision, whatever the team's enforcement. Shared by
/// every team that includes the rule.
#[derive(Debug)]
pub(super) struct Body {
    revision: u32,
    name: String,
    category: Option<String>,
    priority: i32,
    triggers: Vec<String>,
    content: String,
    /// Whether the rule is in the general group (no category, or `General`), and its category
    /// lowercased: the group key of [`crate::ruleset::render_order`], computed once.
    general: bool,
    lowercase_category: String,
}

impl Body {
    fn new(
        revision: u32,
        name: String,
        category: Option<String>,
        priority: i32,
        triggers: Vec<String>,
        content: String,
    ) -> Self {
        let general = matches!(
            category.as_deref(),
            None | Some(crate::ruleset::GENERAL_CATEGORY)
        );
        let lowercase_category = if general {
            String::new()
        } else {
            category.as_deref().unwrap_or_default().to_lowercase()
        };
        Body {
            revision,
            name,
            category,
            priority,
            triggers,
            content,
            general,
            lowercase_category,
        }
    }

    /// The body of an approved revision.
    pub(super) fn of(approved: &ApprovedSource) -> Self {
        let spec = &approved.spec;
        Body::new(
            approved.revision,
            spec.name.as_str().to_owned(),
            spec.category.as_ref().map(|c| c.as_str().to_owned()),
            spec.priority,
            spec.triggers
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            spec.content.as_str().to_owned(),
        )
    }

    /// `(not general, lowercased category, category)`, as `render_order` groups rules.
    fn group(&self) -> (bool, &str, &str) {
        if self.general {
            (false, "", "")
        } else {
            (
                true,
                &self.lowercase_category,
                self.category.as_deref().unwrap_or_default(),
            )
        }
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        // The group key is derived from the category.
        self.revision == other.revision
            && self.priority == other.priority
            && self.name == other.name
            && self.category == other.category
            && self.content == other.content
            && self.triggers == other.triggers
    }
}

/// One rule as a team enforces it: an [`EffectiveRule`] sharing its body.
#[derive(Debug, Clone)]
pub(super) struct Item {
    rule_id: RuleId,
    body: Arc<Body>,
    mode: EnforcementMode,
    temporary_timeout_secs: Option<u64>,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.rule_id == other.rule_id
            && self.mode == other.mode
            && self.temporary_timeout_secs == other.temporary_timeout_secs
            && (Arc::ptr_eq(&self.body, &other.body) || self.body == other.body)
    }
}

impl Item {
    pub(super) fn new(
        rule_id: RuleId,
        body: Arc<Body>,
        enforcement: edict_domain::Enforcement,
    ) -> Self {
        Item {
            rule_id,
            body,
            mode: enforcement.mode(),
            temporary_timeout_secs: enforcement.temporary_timeout_secs(),
        }
    }

    fn of(rule: EffectiveRule) -> Self {
        Item {
            rule_id: RuleId(rule.rule_id),
            mode: enforcement_mode(rule.mode),
            temporary_timeout_secs: rule.temporary_timeout_secs,
            body: Arc::new(Body::new(
                rule.revision,
                rule.name,
                rule.category,
                rule.priority,
                rule.triggers,
                rule.content,
            )),
        }
    }

    fn effective(&self) -> EffectiveRule {
        let body = &*self.body;
        EffectiveRule {
            rule_id: self.rule_id.0,
            revision: body.revision,
            name: body.name.clone(),
            category: body.category.clone(),
            priority: body.priority,
            mode: mode_of(self.mode),
            temporary_timeout_secs: self.temporary_timeout_secs,
            triggers: body.triggers.clone(),
            content: body.content.clone(),
        }
    }
}

/// [`crate::ruleset::render_order`] on items, without allocating.
fn item_order(a: &Item, b: &Item) -> Ordering {
    a.body
        .group()
        .cmp(&b.body.group())
        .then_with(|| b.body.priority.cmp(&a.body.priority))
        .then_with(|| a.body.name.cmp(&b.body.name))
        .then_with(|| a.rule_id.cmp(&b.rule_id))
}

/// The effective rules of a rule set, per layer, each in rule id order (so comparing two is cheap and
/// needs no sorting: the render order is a function of the rules). The organization layer is shared by
/// every active team.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Content {
    organization: Arc<Vec<Item>>,
    team: Vec<Item>,
    project: Vec<Item>,
}

impl Content {
    /// The content of these layers (each is sorted by rule id; the organization layer must be
    /// already).
    pub(super) fn new(organization: Arc<Vec<Item>>, team: Vec<Item>, project: Vec<Item>) -> Self {
        let mut content = Content {
            organization,
            team,
            project,
        };
        content.team.sort_by_key(|item| item.rule_id);
        content.project.sort_by_key(|item| item.rule_id);
        content
    }

    /// A layer's rules sorted by rule id, as [`Content::new`] wants the organization layer.
    pub(super) fn layer(mut items: Vec<Item>) -> Arc<Vec<Item>> {
        items.sort_by_key(|item| item.rule_id);
        Arc::new(items)
    }

    /// No rule at all (an archived team).
    pub(super) fn empty() -> Self {
        Content::new(Arc::new(Vec::new()), Vec::new(), Vec::new())
    }

    /// The layers, in render order and rendered: what [`Layers::build`] makes of the same rules.
    pub(super) fn layers(&self) -> Layers {
        let layer = |layer: Layer, items: &[Item]| {
            let mut sorted: Vec<&Item> = items.iter().collect();
            sorted.sort_by(|a, b| item_order(a, b));
            let rules: Vec<EffectiveRule> = sorted.into_iter().map(Item::effective).collect();
            LayerRules {
                text: render_layer(layer, &rules),
                rules,
            }
        };
        Layers {
            organization: layer(Layer::Organization, &self.organization),
            team: layer(Layer::Team, &self.team),
            project: layer(Layer::Project, &self.project),
        }
    }

    fn of(layers: Layers) -> Self {
        let items = |layer: LayerRules| layer.rules.into_iter().map(Item::of).collect::<Vec<_>>();
        Content::new(
            Content::layer(items(layers.organization)),
            items(layers.team),
            items(layers.project),
        )
    }
}

/// A team's rule set: serializes to (and deserializes from) its [`RuleSetDoc`].
#[derive(Debug, Clone)]
pub(super) struct RuleSetState {
    pub(super) team_id: TeamId,
    pub(super) team_name: String,
    pub(super) archived: bool,
    pub(super) revision: u64,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) position: i64,
    pub(super) content: Content,
    /// The hash a document read from the store holds, until the projection has checked that it is the
    /// hash of its rules rendered now (it is, unless an older renderer wrote it). `None` for a state
    /// this projection computed or checked.
    pub(super) unchecked_hash: Option<String>,
}

impl RuleSetState {
    fn doc(&self) -> RuleSetDoc {
        let layers = self.content.layers();
        RuleSetDoc {
            team_id: self.team_id.0,
            team_name: self.team_name.clone(),
            archived: self.archived,
            revision: self.revision,
            hash: layers.hash(),
            updated_at: self.updated_at,
            position: self.position,
            layers,
            signature: None,
        }
    }
}

impl Serialize for RuleSetState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.doc().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RuleSetState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let doc = RuleSetDoc::deserialize(deserializer)?;
        Ok(RuleSetState {
            team_id: TeamId(doc.team_id),
            team_name: doc.team_name,
            archived: doc.archived,
            revision: doc.revision,
            updated_at: doc.updated_at,
            position: doc.position,
            content: Content::of(doc.layers),
            unchecked_hash: Some(doc.hash),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::render_order;
    use uuid::Uuid;

    fn rule(id: u128, name: &str, category: Option<&str>, priority: i32) -> EffectiveRule {
        EffectiveRule {
            rule_id: Uuid::from_u128(id),
            revision: 1,
            name: name.to_owned(),
            category: category.map(str::to_owned),
            priority,
            mode: crate::ruleset::Mode::Block,
            temporary_timeout_secs: None,
            triggers: vec!["src/**".into()],
            content: format!("{name}.\n"),
        }
    }

    #[test]
    fn items_sort_and_render_as_layers_build_does() {
        let categories = [
            None,
            Some("General"),
            Some("Security"),
            Some("security"),
            Some("Style"),
            Some("ΣΟΦΟΣ"),
            Some("σοφος"),
            Some("ß"),
        ];
        let names = ["Beta", "Alpha", "beta", "Gamma"];
        let mut rules = Vec::new();
        for i in 0..64u128 {
            let i_usize = i as usize;
            rules.push(rule(
                0x1000 - i * 7,
                names[i_usize % names.len()],
                categories[(i_usize / 2) % categories.len()],
                (i % 3) as i32 - 1,
            ));
        }
        let items: Vec<Item> = rules.iter().cloned().map(Item::of).collect();
        let mut sorted = rules.clone();
        sorted.sort_by(render_order);
        let content = Content::new(Content::layer(items.clone()), items.clone(), items);
        let expected = Layers::build(sorted.clone(), sorted.clone(), sorted);
        assert_eq!(content.layers(), expected);
        assert_eq!(content.layers().hash(), expected.hash());
    }

    #[test]
    fn a_state_round_trips_through_its_document() {
        let layers = Layers::build(
            vec![rule(1, "A", None, 0)],
            vec![rule(2, "B", Some("X"), 1)],
            vec![],
        );
        let doc = RuleSetDoc {
            team_id: Uuid::from_u128(0x7a),
            team_name: "Platform".into(),
            archived: false,
            revision: 3,
            hash: layers.hash(),
            updated_at: "2026-01-02T03:04:05Z".parse().unwrap_or_default(),
            position: 9,
            layers,
            signature: None,
        };
        let json = serde_json::to_value(&doc).unwrap();
        let state = RuleSetState::deserialize(&json).unwrap();
        assert_eq!(state.unchecked_hash.as_deref(), Some(doc.hash.as_str()));
        assert_eq!(serde_json::to_value(&state).unwrap(), json);
    }
}
