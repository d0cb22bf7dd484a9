//! Use cases of change requests: agents report changes to temporary-mode managed sections (opening or
//! amending a change request), team admins decide them, developers ask for exceptions.
//!
//! A report carries an id the agent generated. The change request it opens gets an id derived from the
//! agent and the report id, so a report delivered twice opens one change request.

use crate::error::{AppError, DomainFailure};
use crate::principal::Principal;
use crate::service::{Edict, Outcome, RequestContext};
use chrono::{DateTime, Duration, Utc};
use edict_domain::change_request::{
    ChangeRequest, ChangeRequestCommand, ChangeRequestError, Diff, ExceptionKind, FilePath,
    ReportId,
};
use edict_domain::rule::Rule;
use edict_domain::team::Team;
use edict_domain::value::{EnforcementMode, Layer, Reason, Sha256Hex};
use edict_domain::{AgentId, ChangeRequestId, ExceptionId, RuleId, TeamId, UserId};
use uuid::Uuid;

impl DomainFailure for ChangeRequestError {
    fn is_not_found(&self) -> bool {
        matches!(self, ChangeRequestError::NotFound)
    }
}

/// The namespace of change-request ids derived from (agent, report id).
const REPORT_NAMESPACE: Uuid = Uuid::from_u128(0x6564_6963_742d_7265_706f_7274_2d69_6473);

/// An agent's report of a change to a managed section under a temporary-mode rule.
#[derive(Debug, Clone)]
pub struct ChangeReport {
    /// The team whose rule set the file carries (checked against the agent's user's teams).
    pub team: TeamId,
    /// The rule whose section changed.
    pub rule: RuleId,
    /// The changed file.
    pub file: FilePath,
    /// Its layer.
    pub layer: Layer,
    /// The hash of the managed section as Edict wrote it.
    pub original_hash: Sha256Hex,
    /// The hash after the change.
    pub new_hash: Sha256Hex,
    /// The change.
    pub diff: Diff,
    /// The agent's id of this report.
    pub report_id: ReportId,
}

/// The change-request id a report of `agent` with `report_id` opens.
pub fn change_request_id_for(agent: AgentId, report_id: &ReportId) -> ChangeRequestId {
    let name = format!("{agent}:{}", report_id.as_str());
    ChangeRequestId(Uuid::new_v5(&REPORT_NAMESPACE, name.as_bytes()))
}

impl Edict {
    /// Opens a change request from an agent's report (idempotent per report id).
    ///
    /// # Errors
    /// 403 unless an agent whose user is a member of the team; 404 (team, rule); 422 when the rule is not
    /// enforced in temporary mode for the team.
    pub async fn report_change(
        &self,
        principal: &Principal,
        report: ChangeReport,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        let Principal::Agent { id: agent, user } = principal else {
            return Err(AppError::Forbidden("only agents report changes".into()));
        };
        let team = Self::existing(self.teams.as_ref(), report.team, "team", Team::exists).await?;
        if !team.is_member(*user) {
            return Err(AppError::Forbidden(
                "the agent's user is not a member of this team".into(),
            ));
        }
        let timeout = self.temporary_timeout(&team, report.rule).await?;
        let id = change_request_id_for(*agent, &report.report_id);
        let now = self.clock.now();
        let command = ChangeRequestCommand::OpenChangeRequest {
            change_request_id: id,
            agent: *agent,
            user: *user,
            team: report.team,
            rule: report.rule,
            file: report.file,
            layer: report.layer,
            original_hash: report.original_hash,
            new_hash: report.new_hash,
            diff: report.diff,
            timeout_at: now + timeout,
            report_id: report.report_id,
            at: now,
        };
        match self
            .run_as(
                principal,
                &request.unversioned(),
                self.change_requests.as_ref(),
                id,
                command,
            )
            .await
        {
            Err(AppError::Rule { rule, .. }) if rule == "already_exists" => {
                // The same report again: answer with the change request it opened.
                let existing = self.change_requests.load(&id.to_string()).await?;
                let version = edict_domain::Versioned::version(&existing);
                let sequence =
                    i64::try_from(version).map_err(|e| AppError::Internal(e.to_string()))?;
                let position = self
                    .log
                    .position_of("ChangeRequest", &id.to_string(), sequence)
                    .await?;
                Ok(Outcome {
                    id: id.to_string(),
                    version,
                    position,
                })
            }
            other => other,
        }
    }

    /// How long a change under `rule` may stand in `team`: the team's temporary timeout for an attached
    /// rule, the organization's for an organization rule.
    async fn temporary_timeout(&self, team: &Team, rule_id: RuleId) -> Result<Duration, AppError> {
        let enforcement = match team.attachment(rule_id) {
            Some(attachment) => attachment.enforcement(),
            None => {
                let rule =
                    Self::existing(self.rules.as_ref(), rule_id, "rule", Rule::exists).await?;
                match (
                    rule.layer(),
                    rule.organization_enforcement(),
                    rule.approved(),
                ) {
                    (Some(Layer::Organization), Some(enforcement), Some(_)) if !rule.archived() => {
                        enforcement
                    }
                    _ => {
                        return Err(AppError::Rule {
                            rule: "rule_not_enforced".into(),
                            message: "the rule is not enforced for this team".into(),
                        });
                    }
                }
            }
        };
        match (enforcement.mode(), enforcement.temporary_timeout_secs()) {
            (EnforcementMode::Temporary, Some(secs)) => Ok(Duration::seconds(
                i64::try_from(secs).unwrap_or(i64::MAX / 1000),
            )),
            _ => Err(AppError::Rule {
                rule: "not_temporary_mode".into(),
                message: "only changes under a temporary-mode rule open change requests".into(),
            }),
        }
    }

    /// Amends a pending change request with a later report on the same file.
    ///
    /// # Errors
    /// 403 unless an agent; 404; 422 (`not_pending`, `not_reporting_agent`).
    pub async fn amend_change(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        new_hash: Sha256Hex,
        diff: Diff,
        report_id: ReportId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        let Principal::Agent { id: agent, .. } = principal else {
            return Err(AppError::Forbidden(
                "only agents amend change requests".into(),
            ));
        };
        let command = ChangeRequestCommand::AmendChangeRequest {
            by: *agent,
            new_hash,
            diff,
            report_id,
            at: self.clock.now(),
        };
        self.run_as(
            principal,
            request,
            self.change_requests.as_ref(),
            id,
            command,
        )
        .await
    }

    /// The change request `id`; 404 when there is none.
    async fn existing_change_request(
        &self,
        id: ChangeRequestId,
    ) -> Result<ChangeRequest, AppError> {
        Self::existing(
            self.change_requests.as_ref(),
            id,
            "change request",
            ChangeRequest::exists,
        )
        .await
    }

    /// Whether `principal` is a signed-in team_admin of the change's team.
    async fn is_team_admin_of(
        &self,
        principal: &Principal,
        change: &ChangeRequest,
    ) -> Result<bool, AppError> {
        if let (true, Some(team)) = (principal.is_user(), change.team()) {
            let team = self.teams.load(&team.to_string()).await?;
            return Ok(team.is_team_admin(principal.user()));
        }
        Ok(false)
    }

    /// Loads a change request and checks that `principal` is an org_admin or a team_admin of its team.
    async fn authorize_decision(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
    ) -> Result<(), AppError> {
        let change = self.existing_change_request(id).await?;
        if principal.is_org_admin() {
            return Ok(());
        }
        if self.is_team_admin_of(principal, &change).await? {
            return Ok(());
        }
        Err(AppError::Forbidden(
            "only an org_admin or a team_admin of the change's team may decide it".into(),
        ))
    }

    /// Loads a change request and checks that `principal` is the user who made the change.
    async fn authorize_requester(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
    ) -> Result<(), AppError> {
        let change = self.existing_change_request(id).await?;
        // The developer, signed in, or through the agent of the machine the change was made on.
        let allowed = match principal {
            Principal::User { id, .. } => change.user() == Some(*id),
            Principal::Agent { id, user } => {
                change.user() == Some(*user) && change.agent() == Some(*id)
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "only the developer who made the change may do this".into(),
            ))
        }
    }

    async fn change_command(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        request: &RequestContext,
        build: impl FnOnce(UserId, DateTime<Utc>) -> ChangeRequestCommand,
    ) -> Result<Outcome, AppError> {
        let command = build(principal.user(), self.clock.now());
        self.run_as(
            principal,
            request,
            self.change_requests.as_ref(),
            id,
            command,
        )
        .await
    }

    /// Approves a pending change: the agent keeps it.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_pending`, `self_decision`).
    pub async fn approve_change(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.authorize_decision(principal, id).await?;
        self.change_command(principal, id, request, |by, at| {
            ChangeRequestCommand::ApproveChange { by, at }
        })
        .await
    }

    /// Rejects a pending change: the agent reverts it.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_pending`, `self_decision`).
    pub async fn reject_change(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        reason: Reason,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.authorize_decision(principal, id).await?;
        self.change_command(principal, id, request, |by, at| {
            ChangeRequestCommand::RejectChange { by, reason, at }
        })
        .await
    }

    /// Withdraws a pending change request (its developer).
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_pending`).
    pub async fn withdraw_change(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden(
                "agents report and appeal; the developer withdraws, signed in".into(),
            ));
        }
        self.authorize_requester(principal, id).await?;
        self.change_command(principal, id, request, |by, at| {
            ChangeRequestCommand::Withdraw { by, at }
        })
        .await
    }

    /// Asks for an exception to a rejected or reverted change (its developer).
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`exception_not_allowed`, `exception_already_requested`).
    pub async fn request_exception(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        justification: Reason,
        kind: ExceptionKind,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.authorize_requester(principal, id).await?;
        let exception_id = ExceptionId::new();
        self.change_command(principal, id, request, |by, at| {
            ChangeRequestCommand::RequestException {
                exception_id,
                by,
                justification,
                kind,
                at,
            }
        })
        .await
    }

    /// Grants the pending exception, until a time or for good.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`no_pending_exception`, `expiry_in_past`, `self_decision`).
    pub async fn grant_exception(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        until: Option<DateTime<Utc>>,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.authorize_decision(principal, id).await?;
        self.change_command(principal, id, request, |by, at| {
            ChangeRequestCommand::GrantException { by, until, at }
        })
        .await
    }

    /// Denies the pending exception.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`no_pending_exception`).
    pub async fn deny_exception(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        reason: Reason,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.authorize_decision(principal, id).await?;
        self.change_command(principal, id, request, |by, at| {
            ChangeRequestCommand::DenyException { by, reason, at }
        })
        .await
    }

    /// A change request, rebuilt from its events.
    ///
    /// # Errors
    /// 403 unless org_admin, auditor, a team_admin of its team or its developer (signed in: agents
    /// report and appeal, they do not read); 404.
    pub async fn change_request(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
    ) -> Result<ChangeRequest, AppError> {
        let change = self.existing_change_request(id).await?;
        // Agent tokens report and appeal; reading change requests is their users' business.
        if !principal.is_user() {
            return Err(AppError::Forbidden(
                "agents cannot read change requests over HTTP".into(),
            ));
        }
        if principal.can_read_all() || change.user() == Some(principal.user()) {
            return Ok(change);
        }
        if self.is_team_admin_of(principal, &change).await? {
            return Ok(change);
        }
        Err(AppError::Forbidden("not your change request".into()))
    }
}

impl Edict {
    /// Reverts every pending change request whose timeout has passed (the scheduler calls this), each
    /// through an `AutoRevert` command so the revert is an event. Answers how many it reverted.
    ///
    /// A change request decided meanwhile (or reverted by another scheduler) is skipped.
    ///
    /// # Errors
    /// 503 when the read model or the store is unavailable.
    pub async fn auto_revert_due(&self) -> Result<usize, AppError> {
        let now = self.clock.now();
        let filter = crate::read_models::DocFilter {
            status: Some("pending".into()),
            ..crate::read_models::DocFilter::default()
        };
        let metadata = crate::metadata::Metadata::system("timeout-scheduler");
        let mut reverted = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .read_models
                .list(
                    crate::queries::names::CHANGE_INBOX,
                    "change_request",
                    &filter,
                    after.as_deref(),
                    200,
                )
                .await?;
            for listed in &page.docs {
                let due = listed.doc["timeout_at"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t <= now);
                let Some(id) = listed.doc["id"].as_str() else {
                    continue;
                };
                if !due {
                    continue;
                }
                let command = ChangeRequestCommand::AutoRevert { at: now };
                match self
                    .run(
                        self.change_requests.as_ref(),
                        id.to_owned(),
                        command,
                        None,
                        &metadata,
                    )
                    .await
                {
                    Ok(_) => reverted += 1,
                    Err(AppError::Rule { rule, .. })
                        if rule == "not_pending" || rule == "not_timed_out" => {}
                    Err(error) => return Err(error),
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if reverted > 0 {
            tracing::info!(reverted, "auto-reverted change requests past their timeout");
        }
        Ok(reverted)
    }
}
