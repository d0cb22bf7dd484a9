//! Teams: `/api/v1/teams`, their members and the rules they enforce.

use super::common::{self, Accepted, Tagged, invalid};
use super::contract::documents::{self, RuleSetDocument, TeamPage};
use super::contract::text::Text;
use super::problem::ApiResult;
use super::queries as q;
use super::rules::{EnforcementDto, LayerDto};
use super::security::Caller;
use chrono::{DateTime, Utc};
use edict_domain::team::{Team, TeamName, TeamRole};
use edict_domain::{RuleId, TeamId, UserId};
use poem::web::Data;
use poem_openapi::ApiResponse;
use poem_openapi::param::Header;
use poem_openapi::param::Path;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::payload::PlainText;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum TeamTags {
    /// Teams, their members, and the rules each team enforces.
    Teams,
}

/// A team's name.
#[derive(Debug, Clone, Object)]
pub struct TeamNameDto {
    /// 1 to 100 characters.
    pub name: Text,
}

/// A member's role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TeamRoleDto {
    /// Manages the team's members and rules, decides its change requests.
    TeamAdmin,
    /// Receives the team's rules.
    Member,
}

impl From<TeamRoleDto> for TeamRole {
    fn from(role: TeamRoleDto) -> Self {
        match role {
            TeamRoleDto::TeamAdmin => TeamRole::TeamAdmin,
            TeamRoleDto::Member => TeamRole::Member,
        }
    }
}

impl From<TeamRole> for TeamRoleDto {
    fn from(role: TeamRole) -> Self {
        match role {
            TeamRole::TeamAdmin => TeamRoleDto::TeamAdmin,
            TeamRole::Member => TeamRoleDto::Member,
        }
    }
}

/// A user to add.
#[derive(Debug, Clone, Object)]
pub struct AddMemberDto {
    /// The user's id.
    pub user_id: Text,
    /// Their role in the team.
    pub role: TeamRoleDto,
}

/// A new role.
#[derive(Debug, Clone, Object)]
pub struct MemberRoleDto {
    /// The role.
    pub role: TeamRoleDto,
}

/// A rule to attach.
#[derive(Debug, Clone, Object)]
pub struct AttachRuleDto {
    /// An approved team- or project-layer rule (organization rules apply to every team already).
    pub rule_id: Text,
    /// How the team enforces it.
    pub enforcement: EnforcementDto,
}

/// A member of a team.
#[derive(Debug, Clone, Object)]
pub struct MemberDto {
    /// The user.
    pub user_id: String,
    /// Their role.
    pub role: TeamRoleDto,
}

/// A rule a team enforces.
#[derive(Debug, Clone, Object)]
pub struct AttachmentDto {
    /// The rule.
    pub rule_id: String,
    /// Its layer.
    pub layer: LayerDto,
    /// The approved revision when it was attached.
    pub rule_revision: u32,
    /// How the team enforces it.
    pub enforcement: EnforcementDto,
    /// Who attached it.
    pub attached_by: String,
    /// When.
    pub attached_at: DateTime<Utc>,
}

/// A team.
#[derive(Debug, Clone, Object)]
pub struct TeamDto {
    /// The team's id.
    pub id: String,
    /// The number of events so far; send as `If-Match`.
    pub version: u64,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Whether it was archived.
    pub archived: bool,
    /// Its members.
    pub members: Vec<MemberDto>,
    /// The rules it enforces (organization rules apply on top of these).
    pub rules: Vec<AttachmentDto>,
}

impl TeamDto {
    fn from_team(team: &Team) -> Option<Self> {
        use edict_domain::Versioned;
        Some(TeamDto {
            id: team.id()?.to_string(),
            version: team.version(),
            name: team.name()?.as_str().to_owned(),
            created_at: team.created_at()?,
            archived: team.archived(),
            members: team
                .members()
                .iter()
                .map(|(user, role)| MemberDto {
                    user_id: user.to_string(),
                    role: (*role).into(),
                })
                .collect(),
            rules: team
                .attachments()
                .iter()
                .map(|(rule, a)| AttachmentDto {
                    rule_id: rule.to_string(),
                    layer: a.rule_layer().into(),
                    rule_revision: a.rule_revision(),
                    enforcement: a.enforcement().into(),
                    attached_by: a.attached_by().to_string(),
                    attached_at: a.attached_at(),
                })
                .collect(),
        })
    }
}

/// The rendered managed section.
#[derive(ApiResponse)]
pub enum RenderedResponse {
    /// Markdown, with the rule set's revision and hash in headers.
    #[oai(status = 200, content_type = "text/markdown; charset=utf-8")]
    Ok(
        PlainText<String>,
        #[oai(header = "X-Edict-Ruleset-Revision")] u64,
        #[oai(header = "X-Edict-Ruleset-Hash")] String,
    ),
}

/// Which revision an agent enforces.
#[derive(Debug, Clone, Object)]
pub struct EnforcedDto {
    /// The agent.
    pub agent_id: String,
    /// The team.
    pub team_id: String,
    /// The revision it applied (durably, on the machine).
    pub revision: u64,
    /// That revision's hash.
    pub hash: String,
    /// When it applied it.
    pub applied_at: DateTime<Utc>,
    /// Whether this is the team's latest revision.
    pub current: bool,
}

impl EnforcedDto {
    /// An agent's applied revision, `current` when it is the team's latest.
    pub fn of(e: edict_application::read_models::Enforcement, current: bool) -> Self {
        EnforcedDto {
            agent_id: e.agent_id,
            team_id: e.team_id,
            revision: e.revision,
            hash: e.hash,
            applied_at: e.applied_at,
            current,
        }
    }
}

/// A team's convergence: the latest revision and which agents enforce what.
#[derive(Debug, Clone, Object)]
pub struct ConvergenceDto {
    /// The team.
    pub team_id: String,
    /// The latest revision of its rule set (absent before the read model has it).
    #[oai(skip_serializing_if_is_none)]
    pub latest_revision: Option<u64>,
    /// Its hash.
    #[oai(skip_serializing_if_is_none)]
    pub latest_hash: Option<String>,
    /// Agents enforcing the latest revision.
    pub converged: u64,
    /// Every agent that applied a revision of this team's rule set.
    pub agents: Vec<EnforcedDto>,
}

/// Teams.
pub struct TeamsApi;

#[OpenApi(tag = "TeamTags::Teams")]
impl TeamsApi {
    /// Creates a team. org_admin.
    #[oai(path = "/api/v1/teams", method = "post")]
    async fn create(&self, caller: Caller<'_>, body: Json<TeamNameDto>) -> Accepted {
        let name = TeamName::parse(&body.name).map_err(invalid)?;
        caller
            .run(async |e, p, ctx| e.create_team(p, name, ctx).await)
            .await
    }

    /// A team with its members and rules. org_admin, auditor, or a member of the team.
    #[oai(path = "/api/v1/teams/:id", method = "get")]
    async fn get(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<TeamDto>> {
        let team = caller.edict.team(&caller.principal, team_id(&id)?).await?;
        let team = TeamDto::from_team(&team);
        common::found(team, "team", |t| t.version, if_none_match.as_deref())
    }

    /// Renames a team. org_admin or team_admin.
    #[oai(path = "/api/v1/teams/:id", method = "put")]
    async fn rename(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<TeamNameDto>,
    ) -> Accepted {
        let id = team_id(&id)?;
        let name = TeamName::parse(&body.name).map_err(invalid)?;
        caller
            .run(async |e, p, ctx| e.rename_team(p, id, name, ctx).await)
            .await
    }

    /// Archives a team. org_admin.
    #[oai(path = "/api/v1/teams/:id/archive", method = "post")]
    async fn archive(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = team_id(&id)?;
        caller
            .run(async |e, p, ctx| e.archive_team(p, id, ctx).await)
            .await
    }

    /// Adds a member. org_admin or team_admin.
    #[oai(path = "/api/v1/teams/:id/members", method = "post")]
    async fn add_member(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<AddMemberDto>,
    ) -> Accepted {
        let id = team_id(&id)?;
        let user = common::body_id::<UserId>(&body.user_id, "user_id")?;
        let role = body.role.into();
        caller
            .run(async |e, p, ctx| e.add_member(p, id, user, role, ctx).await)
            .await
    }

    /// Changes a member's role. org_admin or team_admin.
    #[oai(path = "/api/v1/teams/:id/members/:user_id", method = "put")]
    async fn change_member_role(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        user_id: Path<String>,
        body: Json<MemberRoleDto>,
    ) -> Accepted {
        let (id, user, role) = (team_id(&id)?, member_id(&user_id)?, body.role.into());
        caller
            .run(async |e, p, ctx| e.change_member_role(p, id, user, role, ctx).await)
            .await
    }

    /// Removes a member. org_admin or team_admin.
    #[oai(path = "/api/v1/teams/:id/members/:user_id", method = "delete")]
    async fn remove_member(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        user_id: Path<String>,
    ) -> Accepted {
        let (id, user) = (team_id(&id)?, member_id(&user_id)?);
        caller
            .run(async |e, p, ctx| e.remove_member(p, id, user, ctx).await)
            .await
    }

    /// Attaches an approved rule with an enforcement mode. org_admin or team_admin.
    #[oai(path = "/api/v1/teams/:id/rules", method = "post")]
    async fn attach(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<AttachRuleDto>,
    ) -> Accepted {
        let id = team_id(&id)?;
        let rule = common::body_id::<RuleId>(&body.rule_id, "rule_id")?;
        let enforcement = body.enforcement.parse()?;
        caller
            .run(async |e, p, ctx| e.attach_rule(p, id, rule, enforcement, ctx).await)
            .await
    }

    /// Changes how the team enforces an attached rule. org_admin or team_admin.
    #[oai(path = "/api/v1/teams/:id/rules/:rule_id", method = "patch")]
    async fn change_enforcement(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        rule_id: Path<String>,
        body: Json<EnforcementDto>,
    ) -> Accepted {
        let (id, rule, enforcement) = (team_id(&id)?, attached(&rule_id)?, body.parse()?);
        caller
            .run(async |e, p, ctx| e.change_enforcement(p, id, rule, enforcement, ctx).await)
            .await
    }

    /// Detaches a rule. org_admin or team_admin.
    #[oai(path = "/api/v1/teams/:id/rules/:rule_id", method = "delete")]
    async fn detach(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        rule_id: Path<String>,
    ) -> Accepted {
        let (id, rule) = (team_id(&id)?, attached(&rule_id)?);
        caller
            .run(async |e, p, ctx| e.detach_rule(p, id, rule, ctx).await)
            .await
    }

    /// Teams: all of them for org_admins and auditors, your own for others. Filter `status`
    /// (`active`, `archived`); cursor-paginated.
    #[oai(path = "/api/v1/teams", method = "get")]
    async fn list(
        &self,
        caller: Caller<'_>,
        status: Query<Option<String>>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<Json<TeamPage>> {
        let page = q::page(after.0, limit.0, min_position.0);
        let teams = caller.edict.list_teams(&caller.principal, status.0, &page);
        Ok(Json(TeamPage::of(teams.await?)?))
    }

    /// The team's effective rule set: organization rules plus its attached rules, per layer, with each
    /// rule's enforcement, the rendered managed-section text, a monotonic `revision` and a content `hash`.
    /// The team's members, auditors and org_admins.
    ///
    /// With `as_of` (an RFC 3339 time or a global position), the rule set that was in force then,
    /// replayed from the event log (with `as_of` instead of `freshness`).
    #[oai(path = "/api/v1/teams/:id/ruleset", method = "get")]
    async fn ruleset(
        &self,
        limits: Data<&Arc<super::rate_limit::RateLimits>>,
        caller: Caller<'_>,
        id: Path<String>,
        min_position: Query<Option<i64>>,
        as_of: Query<Option<String>>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> super::rate_limit::LimitedResult<Tagged<RuleSetDocument>> {
        let ruleset = if let Some(as_of) = as_of.0 {
            limits.costly_read(&caller.principal)?;
            super::events::ruleset_as_of(caller.edict, &caller.principal, &id, &as_of).await?
        } else {
            let fetched = caller
                .edict
                .team_ruleset(&caller.principal, &id, min_position.0);
            let fetched = fetched.await?;
            documents::ruleset(fetched)?
        };
        let revision = ruleset.revision;
        Ok(common::tagged(ruleset, revision, if_none_match.as_deref()))
    }

    /// The rendered managed section of one layer (`organization`, `team` or `project`), as Markdown.
    #[oai(path = "/api/v1/teams/:id/ruleset/rendered", method = "get")]
    async fn rendered(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        layer: Query<LayerDto>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<RenderedResponse> {
        let fetched = caller
            .edict
            .team_ruleset(&caller.principal, &id, min_position.0);
        let fetched = fetched.await?;
        let key = match layer.0 {
            LayerDto::Organization => "organization",
            LayerDto::Team => "team",
            LayerDto::Project => "project",
        };
        let text = fetched.item["layers"][key]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let revision = fetched.item["revision"].as_u64().unwrap_or_default();
        let hash = fetched.item["hash"].as_str().unwrap_or_default().to_owned();
        Ok(RenderedResponse::Ok(PlainText(text), revision, hash))
    }

    /// Which revision of the team's rule set each agent enforces, and since when (from the agents'
    /// acknowledgements after a durable write). The team's members, auditors and org_admins.
    #[oai(path = "/api/v1/teams/:id/convergence", method = "get")]
    async fn convergence(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
    ) -> ApiResult<Json<ConvergenceDto>> {
        let convergence = caller.edict.team_convergence(&caller.principal, &id);
        let (latest, enforced) = convergence.await?;
        let latest_revision = latest.as_ref().and_then(|doc| doc["revision"].as_u64());
        let latest_hash = latest
            .as_ref()
            .and_then(|doc| doc["hash"].as_str().map(str::to_owned));
        let agents: Vec<EnforcedDto> = enforced
            .into_iter()
            .map(|e| {
                let current = Some(e.revision) == latest_revision
                    && latest_hash.as_deref() == Some(e.hash.as_str());
                EnforcedDto::of(e, current)
            })
            .collect();
        Ok(Json(ConvergenceDto {
            team_id: id.0,
            latest_revision,
            latest_hash,
            converged: agents.iter().filter(|a| a.current).count() as u64,
            agents,
        }))
    }
}

fn team_id(raw: &str) -> Result<TeamId, super::problem::ErrorResponse> {
    common::id(raw, "team")
}

fn member_id(raw: &str) -> Result<UserId, super::problem::ErrorResponse> {
    common::id(raw, "member")
}

fn attached(raw: &str) -> Result<RuleId, super::problem::ErrorResponse> {
    common::id(raw, "rule")
}
