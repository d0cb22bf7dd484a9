//! Change requests: `/api/v1/change-requests`, opened from agents' reports, decided by team admins.

use super::common::{self, Accepted, Tagged, invalid};
use super::contract::documents::ChangeRequestPage;
use super::contract::text::Text;
use super::problem::ApiResult;
use super::queries as q;
use super::rules::{LayerDto, ReasonDto};
use super::security::Caller;
use chrono::{DateTime, Utc};
use edict_application::change_requests::ChangeReport;
use edict_domain::change_request::{
    ChangeRequest, Diff, ExceptionKind, ExceptionResolution, FilePath, ReportId,
};
use edict_domain::value::Sha256Hex;
use edict_domain::{ChangeRequestId, RuleId, TeamId};
use poem_openapi::param::Header;
use poem_openapi::param::Path;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};

#[derive(Tags)]
enum ChangeRequestTags {
    /// Changes developers made to temporary-mode managed sections, and their decisions.
    ChangeRequests,
}

/// An agent's report of a change to a temporary-mode managed section.
#[derive(Debug, Clone, Object)]
pub struct ReportDto {
    /// The team whose rule set the file carries.
    pub team_id: Text,
    /// The rule whose section changed.
    pub rule_id: Text,
    /// The changed file.
    pub file: Text,
    /// The file's layer.
    pub layer: LayerDto,
    /// SHA-256 (hex) of the section as Edict wrote it.
    pub original_hash: Text,
    /// SHA-256 (hex) of the section after the change.
    pub new_hash: Text,
    /// The change, as a unified diff (at most 256 KiB).
    #[oai(default)]
    #[oai(nullable)]
    pub diff: Text,
    /// The agent's id for this report; the same report sent twice opens one change request.
    pub report_id: Text,
}

/// A later report on the same file.
#[derive(Debug, Clone, Object)]
pub struct AmendDto {
    /// SHA-256 (hex) of the section now.
    pub new_hash: Text,
    /// The change from the original.
    #[oai(default)]
    #[oai(nullable)]
    pub diff: Text,
    /// The agent's id for this report.
    pub report_id: Text,
}

/// The kind of exception asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ExceptionKindDto {
    /// Until a time (`until` required).
    TimeLimited,
    /// For good.
    Permanent,
}

/// An exception request.
#[derive(Debug, Clone, Object)]
pub struct ExceptionRequestDto {
    /// Why the change should stand.
    pub justification: Text,
    /// Time-limited or permanent.
    pub kind: ExceptionKindDto,
    /// For time-limited: until when.
    #[oai(nullable)]
    pub until: Option<DateTime<Utc>>,
}

/// A grant.
#[derive(Debug, Clone, Object)]
pub struct GrantDto {
    /// Until when the change may stand (absent: for good).
    #[oai(nullable)]
    pub until: Option<DateTime<Utc>>,
}

/// An exception on a change request.
#[derive(Debug, Clone, Object)]
pub struct ExceptionDto {
    /// The exception's id.
    pub id: String,
    /// Who asked.
    pub requested_by: String,
    /// Why.
    pub justification: String,
    /// `time_limited` or `permanent`.
    pub kind: ExceptionKindDto,
    /// For time-limited requests: until when.
    #[oai(skip_serializing_if_is_none)]
    pub requested_until: Option<DateTime<Utc>>,
    /// `pending`, `granted` or `denied`.
    pub outcome: String,
    /// Who decided.
    #[oai(skip_serializing_if_is_none)]
    pub decided_by: Option<String>,
    /// Until when a grant holds (absent: for good).
    #[oai(skip_serializing_if_is_none)]
    pub granted_until: Option<DateTime<Utc>>,
}

/// A change request.
#[derive(Debug, Clone, Object)]
pub struct ChangeRequestDto {
    /// Its id.
    pub id: String,
    /// The number of events so far; send as `If-Match`.
    pub version: u64,
    /// `pending`, `approved`, `rejected`, `auto_reverted`, `exception_requested`, `exception_granted`,
    /// `exception_denied` or `withdrawn`.
    pub status: String,
    /// The reporting agent.
    pub agent_id: String,
    /// The developer.
    pub user_id: String,
    /// The team.
    pub team_id: String,
    /// The rule.
    pub rule_id: String,
    /// The file.
    pub file: String,
    /// Its layer.
    pub layer: LayerDto,
    /// Hash of the section as Edict wrote it.
    pub original_hash: String,
    /// Hash after the change.
    pub new_hash: String,
    /// The change.
    pub diff: String,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When it is reverted if nobody decides.
    pub timeout_at: DateTime<Utc>,
    /// Who decided, if anyone (absent for a timeout).
    #[oai(skip_serializing_if_is_none)]
    pub decided_by: Option<String>,
    /// Why, for a rejection.
    #[oai(skip_serializing_if_is_none)]
    pub decision_reason: Option<String>,
    /// Exceptions asked for, oldest first.
    pub exceptions: Vec<ExceptionDto>,
}

impl ChangeRequestDto {
    fn from_change(c: &ChangeRequest) -> Option<Self> {
        use edict_domain::Versioned;
        let decision = c.decision();
        Some(ChangeRequestDto {
            id: c.id()?.to_string(),
            version: c.version(),
            status: c.status()?.as_str().to_owned(),
            agent_id: c.agent()?.to_string(),
            user_id: c.user()?.to_string(),
            team_id: c.team()?.to_string(),
            rule_id: c.rule()?.to_string(),
            file: c.file()?.as_str().to_owned(),
            layer: c.layer()?.into(),
            original_hash: c.original_hash()?.as_str().to_owned(),
            new_hash: c.new_hash()?.as_str().to_owned(),
            diff: c.diff()?.as_str().to_owned(),
            opened_at: c.opened_at()?,
            timeout_at: c.timeout_at()?,
            decided_by: decision.and_then(|d| d.by).map(|u| u.to_string()),
            decision_reason: decision
                .and_then(|d| d.reason.as_ref())
                .map(|r| r.as_str().to_owned()),
            exceptions: c
                .exceptions()
                .iter()
                .map(|e| {
                    let (kind, requested_until) = match e.kind {
                        ExceptionKind::TimeLimited { until } => {
                            (ExceptionKindDto::TimeLimited, Some(until))
                        }
                        ExceptionKind::Permanent => (ExceptionKindDto::Permanent, None),
                    };
                    let (outcome, decided_by, granted_until) = match &e.resolution {
                        None => ("pending", None, None),
                        Some(ExceptionResolution::Granted { by, until, .. }) => {
                            ("granted", Some(by.to_string()), *until)
                        }
                        Some(ExceptionResolution::Denied { by, .. }) => {
                            ("denied", Some(by.to_string()), None)
                        }
                    };
                    ExceptionDto {
                        id: e.id.to_string(),
                        requested_by: e.requested_by.to_string(),
                        justification: e.justification.as_str().to_owned(),
                        kind,
                        requested_until,
                        outcome: outcome.to_owned(),
                        decided_by,
                        granted_until,
                    }
                })
                .collect(),
        })
    }
}

/// Change requests.
pub struct ChangeRequestsApi;

fn cr_id(raw: &str) -> Result<ChangeRequestId, super::problem::ErrorResponse> {
    common::id(raw, "change request")
}

#[OpenApi(tag = "ChangeRequestTags::ChangeRequests")]
impl ChangeRequestsApi {
    /// Reports a change to a temporary-mode managed section, opening a change request. Agent token only.
    /// Idempotent per `report_id`.
    #[oai(path = "/api/v1/change-requests", method = "post")]
    async fn report(&self, caller: Caller<'_>, body: Json<ReportDto>) -> Accepted {
        let report = ChangeReport {
            team: common::body_id::<TeamId>(&body.team_id, "team_id")?,
            rule: common::body_id::<RuleId>(&body.rule_id, "rule_id")?,
            file: FilePath::parse(&body.file).map_err(invalid)?,
            layer: body.layer.into(),
            original_hash: Sha256Hex::parse("original_hash", &body.original_hash)
                .map_err(invalid)?,
            new_hash: Sha256Hex::parse("new_hash", &body.new_hash).map_err(invalid)?,
            diff: Diff::parse(&body.diff).map_err(invalid)?,
            report_id: ReportId::parse(&body.report_id).map_err(invalid)?,
        };
        caller
            .run(async |e, p, ctx| e.report_change(p, report, ctx).await)
            .await
    }

    /// A change request. org_admin, auditor, a team_admin of its team, or its developer.
    #[oai(path = "/api/v1/change-requests/:id", method = "get")]
    async fn get(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<ChangeRequestDto>> {
        let change = caller.edict.change_request(&caller.principal, cr_id(&id)?);
        let change = ChangeRequestDto::from_change(&change.await?);
        common::found(
            change,
            "change request",
            |c| c.version,
            if_none_match.as_deref(),
        )
    }

    /// Amends a pending change request with a later report on the same file. Its agent only.
    #[oai(path = "/api/v1/change-requests/:id/amend", method = "post")]
    async fn amend(&self, caller: Caller<'_>, id: Path<String>, body: Json<AmendDto>) -> Accepted {
        let id = cr_id(&id)?;
        let new_hash = Sha256Hex::parse("new_hash", &body.new_hash).map_err(invalid)?;
        let diff = Diff::parse(&body.diff).map_err(invalid)?;
        let report_id = ReportId::parse(&body.report_id).map_err(invalid)?;
        caller
            .run(async |e, p, ctx| e.amend_change(p, id, new_hash, diff, report_id, ctx).await)
            .await
    }

    /// Approves a pending change: the developer keeps it. org_admin or team_admin, never the developer.
    #[oai(path = "/api/v1/change-requests/:id/approve", method = "post")]
    async fn approve(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = cr_id(&id)?;
        caller
            .run(async |e, p, ctx| e.approve_change(p, id, ctx).await)
            .await
    }

    /// Rejects a pending change: the agent reverts it. A reason is required. org_admin or team_admin.
    #[oai(path = "/api/v1/change-requests/:id/reject", method = "post")]
    async fn reject(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<ReasonDto>,
    ) -> Accepted {
        let (id, reason) = (cr_id(&id)?, body.parse()?);
        caller
            .run(async |e, p, ctx| e.reject_change(p, id, reason, ctx).await)
            .await
    }

    /// Withdraws a pending change request. Its developer only.
    #[oai(path = "/api/v1/change-requests/:id/withdraw", method = "post")]
    async fn withdraw(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = cr_id(&id)?;
        caller
            .run(async |e, p, ctx| e.withdraw_change(p, id, ctx).await)
            .await
    }

    /// Asks for an exception to a rejected or reverted change. Its developer only.
    #[oai(path = "/api/v1/change-requests/:id/exception", method = "post")]
    async fn request_exception(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<ExceptionRequestDto>,
    ) -> Accepted {
        let id = cr_id(&id)?;
        let justification =
            edict_domain::value::Reason::parse(&body.justification).map_err(invalid)?;
        let kind = match (body.kind, body.until) {
            (ExceptionKindDto::Permanent, None) => ExceptionKind::Permanent,
            (ExceptionKindDto::TimeLimited, Some(until)) => ExceptionKind::TimeLimited { until },
            (ExceptionKindDto::TimeLimited, None) => {
                return Err(invalid(edict_domain::value::ValueError::Required {
                    field: "until",
                    condition: "kind is time_limited",
                }));
            }
            (ExceptionKindDto::Permanent, Some(_)) => {
                return Err(invalid(edict_domain::value::ValueError::NotAllowed {
                    field: "until",
                    condition: "kind is time_limited",
                }));
            }
        };
        caller
            .run(async |e, p, ctx| e.request_exception(p, id, justification, kind, ctx).await)
            .await
    }

    /// Grants the pending exception, until a time or for good. org_admin or team_admin.
    #[oai(path = "/api/v1/change-requests/:id/exception/grant", method = "post")]
    async fn grant_exception(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<GrantDto>,
    ) -> Accepted {
        let (id, until) = (cr_id(&id)?, body.until);
        caller
            .run(async |e, p, ctx| e.grant_exception(p, id, until, ctx).await)
            .await
    }

    /// Denies the pending exception, with a reason. org_admin or team_admin.
    #[oai(path = "/api/v1/change-requests/:id/exception/deny", method = "post")]
    async fn deny_exception(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<ReasonDto>,
    ) -> Accepted {
        let (id, reason) = (cr_id(&id)?, body.parse()?);
        caller
            .run(async |e, p, ctx| e.deny_exception(p, id, reason, ctx).await)
            .await
    }

    /// Change requests, filtered by `team` and `status`, cursor-paginated. org_admins and auditors see all;
    /// a team_admin sees their team's (pass `team`); a developer sees their own.
    #[oai(path = "/api/v1/change-requests", method = "get")]
    async fn list(
        &self,
        caller: Caller<'_>,
        team: Query<Option<String>>,
        status: Query<Option<String>>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<Json<ChangeRequestPage>> {
        let page = q::page(after.0, limit.0, min_position.0);
        let changes = caller
            .edict
            .list_change_requests(&caller.principal, team.0, status.0, &page);
        Ok(Json(ChangeRequestPage::of(changes.await?)?))
    }
}
