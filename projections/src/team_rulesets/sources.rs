//! The internal documents `team_rulesets` keeps so that each event only recomputes the teams it can
//! affect. None of them is served by the query API.

use edict_domain::rule::RuleSpec;
use edict_domain::{Enforcement, Layer, RuleId, TeamId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Kind of [`RuleSource`] (key = rule id).
pub const RULE_SOURCE_KIND: &str = "rule_source";
/// Kind of [`RuleTeams`] (key = rule id).
pub const RULE_TEAMS_KIND: &str = "rule_teams";
/// Kind of [`TeamSource`] (key = team id).
pub const TEAM_SOURCE_KIND: &str = "team_source";
/// Kind of [`TeamIndex`] (key = [`INDEX_KEY`]).
pub const TEAM_INDEX_KIND: &str = "team_index";
/// Kind of [`OrganizationRules`] (key = [`INDEX_KEY`]).
pub const ORG_RULES_KIND: &str = "org_rules";
/// The key of the singleton index documents.
pub const INDEX_KEY: &str = "all";

/// What the rule sets need of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSource {
    /// The rule.
    pub rule_id: RuleId,
    /// Its layer.
    pub layer: Layer,
    /// Its latest approved revision, if any.
    pub approved: Option<ApprovedSource>,
    /// The organization enforcement (organization rules).
    pub organization_enforcement: Option<Enforcement>,
    /// Whether it is archived.
    pub archived: bool,
}

impl RuleSource {
    /// The revision in force: the approved one, unless the rule is archived.
    pub fn in_force(&self) -> Option<&ApprovedSource> {
        if self.archived {
            None
        } else {
            self.approved.as_ref()
        }
    }

    /// Everything about the rule that can change a rule set it is part of.
    pub fn contribution(&self) -> Option<(&ApprovedSource, Option<Enforcement>)> {
        self.in_force().map(|approved| {
            let enforcement = (self.layer == Layer::Organization)
                .then_some(self.organization_enforcement)
                .flatten();
            (approved, enforcement)
        })
    }
}

/// An approved revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedSource {
    /// Its number.
    pub revision: u32,
    /// Its spec.
    pub spec: RuleSpec,
}

/// The teams a (team or project) rule is attached to: who to recompute when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTeams {
    /// The non-archived teams it is attached to.
    pub teams: BTreeSet<TeamId>,
}

/// What the rule sets need of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamSource {
    /// The team.
    pub team_id: TeamId,
    /// Its name.
    pub name: String,
    /// Whether it is archived.
    pub archived: bool,
    /// The attached rules and the team's enforcement of each.
    pub attachments: BTreeMap<RuleId, Enforcement>,
}

/// Every non-archived team: who to recompute when an organization rule changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamIndex {
    /// The teams.
    pub teams: BTreeSet<TeamId>,
}

/// The organization rules in force (approved and not archived): what every team receives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationRules {
    /// The rules.
    pub rules: BTreeSet<RuleId>,
}
