//! The rule library: `/api/v1/rules`.

use super::common::{self, Accepted, Tagged, invalid};
use super::contract::documents::{self, RuleEntryFresh, RulePage};
use super::contract::text::Text;
use super::problem::ApiResult;
use super::queries as q;
use super::security::Caller;
use chrono::{DateTime, Utc};
use edict_domain::RuleId;
use edict_domain::rule::{
    ApprovedRevision, Category, Description, PathGlob, Rule, RuleContent, RuleName, RuleSpec, Tag,
    WorkingRevision, WorkingState,
};
use edict_domain::value::{Enforcement, EnforcementMode, Layer, Reason};
use poem_openapi::param::Header;
use poem_openapi::param::Path;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};

#[derive(Tags)]
enum RuleTags {
    /// The organization's rule library: drafting, review, revisions.
    Rules,
}

/// A managed section of `CLAUDE.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum LayerDto {
    /// `/etc/claude-code/CLAUDE.md`, every developer.
    Organization,
    /// `~/.claude/CLAUDE.md`, a team's members.
    Team,
    /// `<project>/CLAUDE.md`.
    Project,
}

impl From<LayerDto> for Layer {
    fn from(layer: LayerDto) -> Self {
        match layer {
            LayerDto::Organization => Layer::Organization,
            LayerDto::Team => Layer::Team,
            LayerDto::Project => Layer::Project,
        }
    }
}

impl From<Layer> for LayerDto {
    fn from(layer: Layer) -> Self {
        match layer {
            Layer::Organization => LayerDto::Organization,
            Layer::Team => LayerDto::Team,
            Layer::Project => LayerDto::Project,
        }
    }
}

/// What the agent does when a managed section is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ModeDto {
    /// Restore at once, report.
    Block,
    /// Keep, open a change request, revert on rejection or timeout.
    Temporary,
    /// Keep, report.
    Warning,
}

/// An enforcement: mode, and for temporary the seconds a change may stand undecided.
#[derive(Debug, Clone, Object)]
pub struct EnforcementDto {
    /// The mode.
    pub mode: ModeDto,
    /// Required for `temporary` (1 s to 30 days), forbidden otherwise.
    #[oai(skip_serializing_if_is_none)]
    #[oai(nullable)]
    pub temporary_timeout_secs: Option<u64>,
}

impl EnforcementDto {
    /// The domain value.
    ///
    /// # Errors
    /// 422 naming `temporary_timeout_secs` when it does not fit the mode.
    pub fn parse(&self) -> Result<Enforcement, super::problem::ErrorResponse> {
        let mode = match self.mode {
            ModeDto::Block => EnforcementMode::Block,
            ModeDto::Temporary => EnforcementMode::Temporary,
            ModeDto::Warning => EnforcementMode::Warning,
        };
        Enforcement::parse(mode, self.temporary_timeout_secs).map_err(invalid)
    }
}

impl From<Enforcement> for EnforcementDto {
    fn from(e: Enforcement) -> Self {
        EnforcementDto {
            mode: match e.mode() {
                EnforcementMode::Block => ModeDto::Block,
                EnforcementMode::Temporary => ModeDto::Temporary,
                EnforcementMode::Warning => ModeDto::Warning,
            },
            temporary_timeout_secs: e.temporary_timeout_secs(),
        }
    }
}

/// What an author writes in one revision.
#[derive(Debug, Clone, Object)]
pub struct RuleSpecDto {
    /// 1 to 200 characters.
    pub name: Text,
    /// What the rule is for (at most 2000 characters).
    #[oai(default)]
    #[oai(nullable)]
    pub description: Text,
    /// The managed section; fixed for the life of the rule.
    pub layer: LayerDto,
    /// The Markdown rendered into the managed section (at most 64 KiB).
    pub content: Text,
    /// The heading it is rendered under.
    #[oai(skip_serializing_if_is_none)]
    #[oai(nullable)]
    pub category: Option<Text>,
    /// Higher renders first within a category.
    #[oai(default)]
    #[oai(nullable)]
    pub priority: i32,
    /// Lowercase tags: `[a-z0-9][a-z0-9_-]{0,49}`.
    #[oai(default)]
    #[oai(nullable)]
    pub tags: Vec<Text>,
    /// Path globs a project-layer rule applies to (empty: the whole project). Only for `project`.
    #[oai(default)]
    #[oai(nullable)]
    pub triggers: Vec<Text>,
}

impl RuleSpecDto {
    fn parse(&self) -> Result<RuleSpec, super::problem::ErrorResponse> {
        Ok(RuleSpec {
            name: RuleName::parse(&self.name).map_err(invalid)?,
            description: Description::parse(&self.description).map_err(invalid)?,
            layer: self.layer.into(),
            content: RuleContent::parse(&self.content).map_err(invalid)?,
            category: self
                .category
                .as_deref()
                .map(Category::parse)
                .transpose()
                .map_err(invalid)?,
            priority: self.priority,
            tags: self
                .tags
                .iter()
                .map(|t| Tag::parse(t))
                .collect::<Result<_, _>>()
                .map_err(invalid)?,
            triggers: self
                .triggers
                .iter()
                .map(|t| PathGlob::parse(t))
                .collect::<Result<_, _>>()
                .map_err(invalid)?,
        })
    }
}

impl From<&RuleSpec> for RuleSpecDto {
    fn from(spec: &RuleSpec) -> Self {
        RuleSpecDto {
            name: spec.name.as_str().into(),
            description: spec.description.as_str().into(),
            layer: spec.layer.into(),
            content: spec.content.as_str().into(),
            category: spec.category.as_ref().map(|c| c.as_str().into()),
            priority: spec.priority,
            tags: spec.tags.iter().map(|t| t.as_str().into()).collect(),
            triggers: spec.triggers.iter().map(|t| t.as_str().into()).collect(),
        }
    }
}

/// A reason for a decision.
#[derive(Debug, Clone, Object)]
pub struct ReasonDto {
    /// Non-blank, at most 2000 characters.
    pub reason: Text,
}

impl ReasonDto {
    /// The domain value.
    ///
    /// # Errors
    /// 422 naming `reason`.
    pub fn parse(&self) -> Result<Reason, super::problem::ErrorResponse> {
        Reason::parse(&self.reason).map_err(invalid)
    }
}

/// An approval of a revision.
#[derive(Debug, Clone, Object)]
pub struct ApprovalDto {
    /// The approver.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The revision being drafted or reviewed.
#[derive(Debug, Clone, Object)]
pub struct WorkingRevisionDto {
    /// Revision number.
    pub number: u32,
    /// `draft`, `pending` or `rejected`.
    pub state: String,
    /// Its spec.
    pub spec: RuleSpecDto,
    /// Who opened it.
    pub author: String,
    /// Approvals so far (pending only).
    pub approvals: Vec<ApprovalDto>,
    /// Why it was rejected (rejected only).
    #[oai(skip_serializing_if_is_none)]
    pub rejection_reason: Option<String>,
}

impl From<&WorkingRevision> for WorkingRevisionDto {
    fn from(w: &WorkingRevision) -> Self {
        WorkingRevisionDto {
            number: w.number(),
            state: w.status().as_str().to_owned(),
            spec: w.spec().into(),
            author: w.author().to_string(),
            approvals: w
                .approvals()
                .iter()
                .map(|a| ApprovalDto {
                    by: a.by.to_string(),
                    at: a.at,
                })
                .collect(),
            rejection_reason: match w.state() {
                WorkingState::Rejected { reason, .. } => Some(reason.as_str().to_owned()),
                _ => None,
            },
        }
    }
}

/// The revision in force.
#[derive(Debug, Clone, Object)]
pub struct ApprovedRevisionDto {
    /// Revision number.
    pub number: u32,
    /// Its spec.
    pub spec: RuleSpecDto,
    /// Who opened it.
    pub author: String,
    /// Who approved it.
    pub approvers: Vec<String>,
    /// When it came into force.
    pub approved_at: DateTime<Utc>,
}

impl From<&ApprovedRevision> for ApprovedRevisionDto {
    fn from(a: &ApprovedRevision) -> Self {
        ApprovedRevisionDto {
            number: a.number(),
            spec: a.spec().into(),
            author: a.author().to_string(),
            approvers: a.approvers().iter().map(ToString::to_string).collect(),
            approved_at: a.approved_at(),
        }
    }
}

/// A rule of the library.
#[derive(Debug, Clone, Object)]
pub struct RuleDto {
    /// The rule's id.
    pub id: String,
    /// The number of events so far; send as `If-Match`.
    pub version: u64,
    /// `draft`, `pending`, `approved`, `rejected` or `archived`.
    pub status: String,
    /// The managed section.
    pub layer: LayerDto,
    /// Who drafted it.
    pub author: String,
    /// When it was drafted.
    pub created_at: DateTime<Utc>,
    /// The revision in force, if any.
    #[oai(skip_serializing_if_is_none)]
    pub approved: Option<ApprovedRevisionDto>,
    /// The revision being drafted or reviewed, if any.
    #[oai(skip_serializing_if_is_none)]
    pub working: Option<WorkingRevisionDto>,
    /// For organization-layer rules: how every team enforces it.
    #[oai(skip_serializing_if_is_none)]
    pub organization_enforcement: Option<EnforcementDto>,
}

impl RuleDto {
    fn from_rule(rule: &Rule) -> Option<Self> {
        use edict_domain::Versioned;
        Some(RuleDto {
            id: rule.id()?.to_string(),
            version: rule.version(),
            status: rule.status()?.as_str().to_owned(),
            layer: rule.layer()?.into(),
            author: rule.author()?.to_string(),
            created_at: rule.created_at()?,
            approved: rule.approved().map(Into::into),
            working: rule.working().map(Into::into),
            organization_enforcement: rule.organization_enforcement().map(Into::into),
        })
    }
}

/// The rule library.
pub struct RulesApi;

#[OpenApi(tag = "RuleTags::Rules")]
impl RulesApi {
    /// Drafts a rule (revision 1). org_admin.
    #[oai(path = "/api/v1/rules", method = "post")]
    async fn draft(&self, caller: Caller<'_>, body: Json<RuleSpecDto>) -> Accepted {
        let spec = body.parse()?;
        caller
            .run(async |e, p, ctx| e.draft_rule(p, spec, ctx).await)
            .await
    }

    /// A rule with its revision in force and its working revision. Any signed-in user.
    #[oai(path = "/api/v1/rules/:id", method = "get")]
    async fn get(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<RuleDto>> {
        let rule = caller.edict.rule(&caller.principal, rule_id(&id)?).await?;
        let rule = RuleDto::from_rule(&rule);
        common::found(rule, "rule", |r| r.version, if_none_match.as_deref())
    }

    /// Replaces the spec of the draft or rejected revision (a rejected one returns to draft). org_admin.
    #[oai(path = "/api/v1/rules/:id", method = "put")]
    async fn edit(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<RuleSpecDto>,
    ) -> Accepted {
        let (id, spec) = (rule_id(&id)?, body.parse()?);
        caller
            .run(async |e, p, ctx| e.edit_rule(p, id, spec, ctx).await)
            .await
    }

    /// Submits the working revision for review. org_admin.
    #[oai(path = "/api/v1/rules/:id/submit", method = "post")]
    async fn submit(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = rule_id(&id)?;
        caller
            .run(async |e, p, ctx| e.submit_rule(p, id, ctx).await)
            .await
    }

    /// Approves the pending revision. org_admin, never the revision's author or an editor. The revision
    /// comes into force when the layer's quorum is reached (organization 2, team 1, project 1 by default).
    #[oai(path = "/api/v1/rules/:id/approve", method = "post")]
    async fn approve(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = rule_id(&id)?;
        caller
            .run(async |e, p, ctx| e.approve_rule(p, id, ctx).await)
            .await
    }

    /// Rejects the pending revision; a reason is required. org_admin.
    #[oai(path = "/api/v1/rules/:id/reject", method = "post")]
    async fn reject(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<ReasonDto>,
    ) -> Accepted {
        let (id, reason) = (rule_id(&id)?, body.parse()?);
        caller
            .run(async |e, p, ctx| e.reject_rule(p, id, reason, ctx).await)
            .await
    }

    /// Opens the next revision of an approved rule as a draft; the approved one stays in force. org_admin.
    #[oai(path = "/api/v1/rules/:id/revisions", method = "post")]
    async fn revise(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<RuleSpecDto>,
    ) -> Accepted {
        let (id, spec) = (rule_id(&id)?, body.parse()?);
        caller
            .run(async |e, p, ctx| e.revise_rule(p, id, spec, ctx).await)
            .await
    }

    /// Sets how an organization-layer rule is enforced in every team (block unless changed). org_admin.
    #[oai(path = "/api/v1/rules/:id/enforcement", method = "put")]
    async fn enforcement(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<EnforcementDto>,
    ) -> Accepted {
        let (id, enforcement) = (rule_id(&id)?, body.parse()?);
        caller
            .run(async |e, p, ctx| {
                e.set_organization_enforcement(p, id, enforcement, ctx)
                    .await
            })
            .await
    }

    /// Archives a rule; it accepts no further change. org_admin.
    #[oai(path = "/api/v1/rules/:id/archive", method = "post")]
    async fn archive(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = rule_id(&id)?;
        caller
            .run(async |e, p, ctx| e.archive_rule(p, id, ctx).await)
            .await
    }

    /// The rule catalog: filter by `status`, `layer`, `tag`, free text `q`; cursor-paginated. Any
    /// signed-in user. Read from the rule catalog read model (see `freshness`).
    #[oai(path = "/api/v1/rules", method = "get")]

    async fn list(
        &self,
        caller: Caller<'_>,
        status: Query<Option<String>>,
        layer: Query<Option<String>>,
        tag: Query<Option<String>>,
        q: Query<Option<String>>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<Json<RulePage>> {
        let query = edict_application::queries::RuleQuery {
            status: status.0,
            layer: layer.0,
            tag: tag.0,
            text: q.0,
        };
        let page = q::page(after.0, limit.0, min_position.0);
        let rules = caller.edict.list_rules(&caller.principal, &query, &page);
        Ok(Json(RulePage::of(rules.await?)?))
    }

    /// A rule's catalog entry with every revision (number, spec, state, approvals). Any signed-in user.
    #[oai(path = "/api/v1/rules/:id/revisions", method = "get")]
    async fn revisions(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<Json<RuleEntryFresh>> {
        let entry = caller
            .edict
            .rule_entry(&caller.principal, &id, min_position.0);
        Ok(Json(documents::rule_entry(entry.await?)?))
    }
}

fn rule_id(raw: &str) -> Result<RuleId, super::problem::ErrorResponse> {
    common::id(raw, "rule")
}
