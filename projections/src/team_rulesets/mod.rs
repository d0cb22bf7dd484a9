//! Team rule sets: for each team, the rules its agents enforce, per layer, rendered, with a revision
//! and a hash ([`RuleSetDoc`](crate::ruleset::RuleSetDoc), kind [`RULESET_KIND`], key = team id; meta:
//! team = the team id, status `active|archived`, sort key = the team id).
//!
//! What a team receives:
//! - organization layer: every organization rule in force (approved, not archived), on every
//!   non-archived team, including teams created later, with the enforcement set on the rule;
//! - team and project layers: the rules attached to the team, with the team's enforcement.
//!
//! A rule contributes its latest approved revision: approving a later revision replaces it at once in
//! every team (the attachment's `rule_revision` is only a record); drafts, submissions and reviews of a
//! later revision change nothing; archived and detached rules drop out. An archived team keeps its
//! document with every layer empty and `archived: true`.
//!
//! The revision starts at 1 when the team is created and grows by exactly 1 whenever the hash of the
//! effective content changes; a rename rewrites the document without a new revision. The projection
//! writes a rule set document only when something in it changed, so every dirty document of this kind
//! at the end of a batch is one the runner publishes.
//!
//! To stay incremental, it keeps internal documents (see [`sources`]): per rule what the rule sets need
//! of it and which teams attach it, per team its name and attachments, the list of active teams and the
//! list of organization rules in force.
//!
//! It reads and updates them through the cache's typed accessors ([`Docs::get_ref`], [`Docs::get_mut`],
//! [`Docs::insert`]): each is decoded once per cache and serialized once when the dirty documents are
//! taken. A rule set is held as its rules (in rule id order, bodies shared between teams), compared with
//! the recomputed ones after every event: equal rules are equal rendered text and canonical JSON, so
//! this moves the revision exactly when the hash changes (a stored rule set an older renderer wrote is
//! checked against its hash once). Text and hash are rendered when the document is serialized, once
//! per batch. Per cache it also keeps a scratch memo (see [`Docs::take_scratch`]): what each rule
//! contributes to a rule set, and the organization layer.

pub mod sources;
mod state;

#[cfg(test)]
mod rate;
#[cfg(test)]
mod tests;

use crate::Applied;
use crate::decode::AnyEvent;
use crate::{DocMeta, Docs, ProjectionError, RULESET_KIND, RecordedEvent, inconsistent};
use edict_domain::rule::RuleEvent;
use edict_domain::team::TeamEvent;
use edict_domain::{Enforcement, Layer, RuleId, TeamId};
use sources::{
    ApprovedSource, INDEX_KEY, ORG_RULES_KIND, OrganizationRules, RULE_SOURCE_KIND,
    RULE_TEAMS_KIND, RuleSource, RuleTeams, TEAM_INDEX_KIND, TEAM_SOURCE_KIND, TeamIndex,
    TeamSource,
};
use state::{Body, Content, Item, RuleSetState};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// The document kinds this projection writes besides [`RULESET_KIND`]; internal, never served.
pub const INTERNAL_KINDS: &[&str] = &[
    RULE_SOURCE_KIND,
    RULE_TEAMS_KIND,
    TEAM_SOURCE_KIND,
    TEAM_INDEX_KIND,
    ORG_RULES_KIND,
];

projection! {
    /// The team rule sets projection (`team_rulesets`).
    TeamRulesets, "team_rulesets", [Rule, Team], apply
}

/// Applies `event`, `decoded` when it is about an aggregate this projection follows.
async fn apply(decoded: Option<AnyEvent>, event: &RecordedEvent, docs: &mut Docs<'_>) -> Applied {
    let mut memo: Memo = docs.take_scratch();
    let applied = match decoded {
        Some(AnyEvent::Rule(rule_event)) => on_rule(rule_event, event, docs, &mut memo).await,
        Some(AnyEvent::Team(team_event)) => on_team(team_event, event, docs, &mut memo).await,
        _ => Ok(()),
    };
    // After a failure the memo may not match the documents: drop it (it is rebuilt on demand).
    if applied.is_ok() {
        docs.set_scratch(memo);
    }
    applied
}

/// What the projection derives from its documents and keeps for the life of a cache (see
/// [`Docs::take_scratch`]); every entry is rebuilt from the documents when missing.
#[derive(Debug, Default)]
struct Memo {
    /// Per rule: what rule sets need of its `rule_source` document (`None`: there is none).
    rules: HashMap<RuleId, Option<RuleView>>,
    /// The organization layer every active team receives, and the rules of `org_rules` it was
    /// computed from (sorted).
    organization: Option<(Arc<Vec<Item>>, Vec<RuleId>)>,
    /// The teams whose rule set, as read from the store, was found to hold the hash of its rules
    /// rendered now (see [`RuleSetState::unchecked_hash`]).
    checked: HashSet<TeamId>,
}

/// A rule's `rule_source`, as rule sets use it.
#[derive(Debug, Clone)]
struct RuleView {
    layer: Layer,
    /// The approved revision in force, if any.
    in_force: Option<Arc<Body>>,
    /// The enforcement of an organization rule (block unless set).
    organization_enforcement: Enforcement,
}

impl Memo {
    /// Forgets what was derived from rule `rule_id`'s source, which just changed.
    fn rule_changed(&mut self, rule_id: RuleId) {
        self.rules.remove(&rule_id);
        if self
            .organization
            .as_ref()
            .is_some_and(|(_, members)| members.binary_search(&rule_id).is_ok())
        {
            self.organization = None;
        }
    }

    async fn rule(
        &mut self,
        docs: &mut Docs<'_>,
        rule_id: RuleId,
    ) -> Result<Option<RuleView>, ProjectionError> {
        if let Some(view) = self.rules.get(&rule_id) {
            return Ok(view.clone());
        }
        let mut buf = Uuid::encode_buffer();
        let view = docs
            .get_ref::<RuleSource>(RULE_SOURCE_KIND, key_of(rule_id.0, &mut buf))
            .await?
            .map(|rule| RuleView {
                layer: rule.layer,
                in_force: rule.in_force().map(|approved| Arc::new(Body::of(approved))),
                // Organization rules get their enforcement when drafted; block is the domain's default.
                organization_enforcement: rule
                    .organization_enforcement
                    .unwrap_or(Enforcement::BLOCK),
            });
        self.rules.insert(rule_id, view.clone());
        Ok(view)
    }

    /// The effective organization rules (what every active team receives on that layer), in rule id
    /// order.
    async fn organization(
        &mut self,
        docs: &mut Docs<'_>,
        event: &RecordedEvent,
    ) -> Result<Arc<Vec<Item>>, ProjectionError> {
        if let Some((organization, _)) = &self.organization {
            return Ok(Arc::clone(organization));
        }
        // In id order, as a set iterates.
        let ids: Vec<RuleId> = docs
            .get_ref::<OrganizationRules>(ORG_RULES_KIND, INDEX_KEY)
            .await?
            .map(|org| org.rules.iter().copied().collect())
            .unwrap_or_default();
        let mut rules = Vec::with_capacity(ids.len());
        for &rule_id in &ids {
            let view = self
                .rule(docs, rule_id)
                .await?
                .ok_or_else(|| never_drafted(event, rule_id))?;
            if let Some(body) = view.in_force {
                rules.push(Item::new(rule_id, body, view.organization_enforcement));
            }
        }
        let organization = Content::layer(rules);
        self.organization = Some((Arc::clone(&organization), ids));
        Ok(organization)
    }
}

/// The document key of an id (its hyphenated lowercase form, as `Display` writes it), without
/// allocating.
fn key_of(id: Uuid, buf: &mut [u8; 45]) -> &str {
    id.hyphenated().encode_lower(buf)
}

fn plain_meta(key: String, team: Option<String>) -> DocMeta {
    DocMeta {
        team,
        status: None,
        sort_key: key,
    }
}

fn never_drafted(event: &RecordedEvent, rule_id: RuleId) -> ProjectionError {
    inconsistent(event, format!("rule {rule_id} was never drafted"))
}

fn never_created(event: &RecordedEvent, team_id: TeamId) -> ProjectionError {
    inconsistent(event, format!("team {team_id} was never created"))
}

/// A document holding a set of ids (the teams a rule is attached to, the active teams, the organization
/// rules in force).
trait IdSet: serde::Serialize + serde::de::DeserializeOwned + Default + Send + 'static {
    type Id: Ord;
    fn ids(&self) -> &BTreeSet<Self::Id>;
    fn ids_mut(&mut self) -> &mut BTreeSet<Self::Id>;
}

impl IdSet for RuleTeams {
    type Id = TeamId;
    fn ids(&self) -> &BTreeSet<TeamId> {
        &self.teams
    }
    fn ids_mut(&mut self) -> &mut BTreeSet<TeamId> {
        &mut self.teams
    }
}

impl IdSet for TeamIndex {
    type Id = TeamId;
    fn ids(&self) -> &BTreeSet<TeamId> {
        &self.teams
    }
    fn ids_mut(&mut self) -> &mut BTreeSet<TeamId> {
        &mut self.teams
    }
}

impl IdSet for OrganizationRules {
    type Id = RuleId;
    fn ids(&self) -> &BTreeSet<RuleId> {
        &self.rules
    }
    fn ids_mut(&mut self) -> &mut BTreeSet<RuleId> {
        &mut self.rules
    }
}

/// Adds `id` to (or removes it from) the set document `(kind, key)`, writing it (with `meta` when it
/// is new) only when the set changes; a missing document is an empty set.
async fn set_member<D: IdSet>(
    docs: &mut Docs<'_>,
    kind: &str,
    key: &str,
    meta: impl FnOnce() -> DocMeta,
    id: D::Id,
    present: bool,
) -> Result<(), ProjectionError> {
    let held = docs
        .get_ref::<D>(kind, key)
        .await?
        .map(|doc| doc.ids().contains(&id));
    match (held, present) {
        (Some(true), true) | (Some(false) | None, false) => {}
        (Some(_), _) => {
            if let Some(doc) = docs.get_mut::<D>(kind, key).await? {
                if present {
                    doc.ids_mut().insert(id);
                } else {
                    doc.ids_mut().remove(&id);
                }
            }
        }
        (None, true) => {
            let mut doc = D::default();
            doc.ids_mut().insert(id);
            docs.insert(kind, key, meta(), doc);
        }
    }
    Ok(())
}

async fn on_rule(
    rule_event: RuleEvent,
    event: &RecordedEvent,
    docs: &mut Docs<'_>,
    memo: &mut Memo,
) -> Result<(), ProjectionError> {
    let rule_id = match &rule_event {
        RuleEvent::RuleDrafted { rule_id, .. }
        | RuleEvent::RuleRevisionApproved { rule_id, .. }
        | RuleEvent::OrganizationEnforcementSet { rule_id, .. }
        | RuleEvent::RuleArchived { rule_id, .. } => *rule_id,
        // Work on a revision that is not in force yet changes no rule set.
        RuleEvent::RuleDraftEdited { .. }
        | RuleEvent::RuleSubmitted { .. }
        | RuleEvent::RuleApprovalRecorded { .. }
        | RuleEvent::RuleRejected { .. }
        | RuleEvent::RuleRevisionOpened { .. } => return Ok(()),
    };
    let mut buf = Uuid::encode_buffer();
    let key = key_of(rule_id.0, &mut buf);
    if let RuleEvent::RuleDrafted { spec, .. } = rule_event {
        let source = RuleSource {
            rule_id,
            layer: spec.layer,
            approved: None,
            organization_enforcement: None,
            archived: false,
        };
        docs.insert(
            RULE_SOURCE_KIND,
            key,
            plain_meta(key.to_owned(), None),
            source,
        );
        memo.rule_changed(rule_id);
        // Nothing is in force yet: no rule set changes.
        return Ok(());
    }
    let rule = docs
        .get_mut::<RuleSource>(RULE_SOURCE_KIND, key)
        .await?
        .ok_or_else(|| never_drafted(event, rule_id))?;
    let old = rule.clone();
    match rule_event {
        RuleEvent::RuleRevisionApproved { revision, spec, .. } => {
            rule.approved = Some(ApprovedSource { revision, spec });
        }
        RuleEvent::OrganizationEnforcementSet { enforcement, .. } => {
            rule.organization_enforcement = Some(enforcement);
        }
        RuleEvent::RuleArchived { .. } => rule.archived = true,
        // Handled above.
        _ => {}
    }
    let changed = old.contribution() != rule.contribution();
    let (layer, in_force) = (rule.layer, rule.in_force().is_some());
    memo.rule_changed(rule_id);
    if !changed {
        return Ok(());
    }
    let teams: Vec<TeamId> = if layer == Layer::Organization {
        memo.organization = None;
        set_member::<OrganizationRules>(
            docs,
            ORG_RULES_KIND,
            INDEX_KEY,
            || plain_meta(INDEX_KEY.to_owned(), None),
            rule_id,
            in_force,
        )
        .await?;
        docs.get_ref::<TeamIndex>(TEAM_INDEX_KIND, INDEX_KEY)
            .await?
            .map(|index| index.teams.iter().copied().collect())
            .unwrap_or_default()
    } else {
        docs.get_ref::<RuleTeams>(RULE_TEAMS_KIND, key)
            .await?
            .map(|attached| attached.teams.iter().copied().collect())
            .unwrap_or_default()
    };
    for team in teams {
        recompute(team, event, docs, memo).await?;
    }
    Ok(())
}

/// Adds `team` to (or removes it from) the teams `rule` is attached to.
async fn set_rule_team(
    docs: &mut Docs<'_>,
    rule_id: RuleId,
    team_id: TeamId,
    attached: bool,
) -> Result<(), ProjectionError> {
    let mut buf = Uuid::encode_buffer();
    let key = key_of(rule_id.0, &mut buf);
    set_member::<RuleTeams>(
        docs,
        RULE_TEAMS_KIND,
        key,
        || plain_meta(key.to_owned(), None),
        team_id,
        attached,
    )
    .await
}

/// Adds `team` to (or removes it from) the index of active teams.
async fn set_active_team(
    docs: &mut Docs<'_>,
    team_id: TeamId,
    active: bool,
) -> Result<(), ProjectionError> {
    set_member::<TeamIndex>(
        docs,
        TEAM_INDEX_KIND,
        INDEX_KEY,
        || plain_meta(INDEX_KEY.to_owned(), None),
        team_id,
        active,
    )
    .await
}

async fn on_team(
    team_event: TeamEvent,
    event: &RecordedEvent,
    docs: &mut Docs<'_>,
    memo: &mut Memo,
) -> Result<(), ProjectionError> {
    let team_id = match &team_event {
        TeamEvent::TeamCreated { team_id, .. }
        | TeamEvent::TeamRenamed { team_id, .. }
        | TeamEvent::RuleAttached { team_id, .. }
        | TeamEvent::EnforcementChanged { team_id, .. }
        | TeamEvent::RuleDetached { team_id, .. }
        | TeamEvent::TeamArchived { team_id, .. } => *team_id,
        TeamEvent::MemberAdded { .. }
        | TeamEvent::MemberRoleChanged { .. }
        | TeamEvent::MemberRemoved { .. } => return Ok(()),
    };
    let mut buf = Uuid::encode_buffer();
    let key = key_of(team_id.0, &mut buf);
    if let TeamEvent::TeamCreated { name, .. } = &team_event {
        if docs
            .get_ref::<TeamSource>(TEAM_SOURCE_KIND, key)
            .await?
            .is_some()
        {
            return Err(inconsistent(event, format!("team {team_id} created twice")));
        }
        let source = TeamSource {
            team_id,
            name: name.as_str().to_owned(),
            archived: false,
            attachments: BTreeMap::new(),
        };
        docs.insert(
            TEAM_SOURCE_KIND,
            key,
            plain_meta(key.to_owned(), Some(key.to_owned())),
            source,
        );
        set_active_team(docs, team_id, true).await?;
        return recompute(team_id, event, docs, memo).await;
    }
    let source = docs
        .get_mut::<TeamSource>(TEAM_SOURCE_KIND, key)
        .await?
        .ok_or_else(|| never_created(event, team_id))?;
    match team_event {
        TeamEvent::TeamRenamed { name, .. } => {
            source.name = name.as_str().to_owned();
        }
        TeamEvent::RuleAttached {
            rule_id,
            enforcement,
            ..
        }
        | TeamEvent::EnforcementChanged {
            rule_id,
            enforcement,
            ..
        } => {
            source.attachments.insert(rule_id, enforcement);
            let active = !source.archived;
            set_rule_team(docs, rule_id, team_id, active).await?;
        }
        TeamEvent::RuleDetached { rule_id, .. } => {
            source.attachments.remove(&rule_id);
            set_rule_team(docs, rule_id, team_id, false).await?;
        }
        TeamEvent::TeamArchived { .. } => {
            source.archived = true;
            let attached: Vec<RuleId> = source.attachments.keys().copied().collect();
            set_active_team(docs, team_id, false).await?;
            for rule_id in attached {
                set_rule_team(docs, rule_id, team_id, false).await?;
            }
        }
        // Handled above.
        _ => {}
    }
    recompute(team_id, event, docs, memo).await
}

/// Recomputes the rule set of `team_id` and writes it if anything in it changed, with a new revision
/// if its content did.
async fn recompute(
    team_id: TeamId,
    event: &RecordedEvent,
    docs: &mut Docs<'_>,
    memo: &mut Memo,
) -> Result<(), ProjectionError> {
    let mut buf = Uuid::encode_buffer();
    let key = key_of(team_id.0, &mut buf);
    let source = docs
        .get_ref::<TeamSource>(TEAM_SOURCE_KIND, key)
        .await?
        .ok_or_else(|| never_created(event, team_id))?;
    let (name, archived) = (source.name.clone(), source.archived);
    let attachments: Vec<(RuleId, Enforcement)> = if archived {
        Vec::new()
    } else {
        source
            .attachments
            .iter()
            .map(|(rule_id, enforcement)| (*rule_id, *enforcement))
            .collect()
    };
    let content = if archived {
        Content::empty()
    } else {
        let mut team = Vec::new();
        let mut project = Vec::new();
        for (rule_id, enforcement) in attachments {
            // A rule the team attached but that is not in force (archived since; or, in a history the
            // application would not write, never approved) contributes nothing.
            let Some(RuleView {
                layer,
                in_force: Some(body),
                ..
            }) = memo.rule(docs, rule_id).await?
            else {
                continue;
            };
            match layer {
                Layer::Team => team.push(Item::new(rule_id, body, enforcement)),
                Layer::Project => project.push(Item::new(rule_id, body, enforcement)),
                // Organization rules are never attached (the Team aggregate refuses it).
                Layer::Organization => {}
            }
        }
        Content::new(memo.organization(docs, event).await?, team, project)
    };
    let next = match docs.get_ref::<RuleSetState>(RULESET_KIND, key).await? {
        Some(old) => {
            let mut same = old.content == content;
            if same
                && let Some(stored) = &old.unchecked_hash
                && !memo.checked.contains(&team_id)
            {
                // Read from the store: its hash must also be what these rules hash to now.
                same = content.layers().hash() == *stored;
                if same {
                    memo.checked.insert(team_id);
                }
            }
            if same {
                if old.team_name == name && old.archived == archived {
                    return Ok(());
                }
                RuleSetState {
                    team_name: name,
                    archived,
                    unchecked_hash: None,
                    ..old.clone()
                }
            } else {
                RuleSetState {
                    team_id,
                    team_name: name,
                    archived,
                    revision: old.revision.saturating_add(1),
                    updated_at: event.recorded_at,
                    position: event.global_position,
                    content,
                    unchecked_hash: None,
                }
            }
        }
        None => RuleSetState {
            team_id,
            team_name: name,
            archived,
            revision: 1,
            updated_at: event.recorded_at,
            position: event.global_position,
            content,
            unchecked_hash: None,
        },
    };
    let meta = DocMeta {
        team: Some(key.to_owned()),
        status: Some(if next.archived { "archived" } else { "active" }.to_owned()),
        sort_key: key.to_owned(),
    };
    docs.insert(RULESET_KIND, key, meta, next);
    Ok(())
}
